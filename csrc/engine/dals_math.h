// The host-state arithmetic of DALS (arXiv 2604.27295, A.4-A.6 of our notes), written once for the CPU ops and
// the one-thread CUDA kernels: the loss-phase detector and the warmup+cosine / SGDR schedule, in float64 like
// the authors' Python (and bit for bit like the Python these ops replaced, on the CPU: the same libm cos).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace layerlr {

// detector = [loss EMA, losses seen, phase]: feeds one loss. The first loss seeds the EMA and keeps the phase.
C10_HOST_DEVICE inline void dals_phase_update(double* detector, double loss, double tau1, double tau2) {
  double ema = detector[0], phase = detector[2];
  if (detector[1] == 0.0) {
    ema = loss;
  } else {
    const double prev = ema;
    ema = 0.95 * ema + 0.05 * loss;
    const double scale = ::fabs(prev) < 1e-8 ? 1e-8 : ::fabs(prev);  // std::max(|prev|, 1e-8), NaN included
    const double delta = (prev - ema) / scale;
    phase = delta > tau1 ? 0.0 : (delta > tau2 ? 1.0 : 2.0);
  }
  detector[0] = ema;
  detector[1] += 1.0;
  detector[2] = phase;
}

// The index of a phase value (0, 1 or 2) into the phase tables.
C10_HOST_DEVICE inline int dals_phase_index(double phase) { return phase == 0.0 ? 0 : (phase == 1.0 ? 1 : 2); }

struct DalsSchedule {
  bool sgdr;             // variant "acc": SGDR without warmup; else warmup + cosine
  bool on;               // false: the factor is 1 (an external scheduler owns the lr); the clock still runs
  double total_steps;    // T of warmup + cosine
  double warmup_frac;    // the warmup is floor(warmup_frac * T) steps
  double restart_mult;   // SGDR: each cycle is this many times longer than the last
};

// clock = [step, cycle, cycle length]: advances to the step about to be taken and returns its factor s.
C10_HOST_DEVICE inline double dals_schedule_advance(double* clock, const DalsSchedule& s) {
  clock[0] += 1.0;
  if (!s.on) return 1.0;
  if (s.sgdr) {
    clock[1] += 1.0;
    if (clock[1] >= clock[2]) {
      clock[1] = 0.0;
      clock[2] *= s.restart_mult;
    }
    return 0.5 * (1.0 + ::cos(M_PI * clock[1] / clock[2]));
  }
  const double t = clock[0] - 1.0;
  const double warmup = ::floor(s.warmup_frac * s.total_steps);
  if (t < warmup) return t / warmup;
  const double progress = ::fmin(1.0, (t - warmup) / (s.total_steps - warmup));
  return 0.5 * (1.0 + ::cos(M_PI * progress));
}

}  // namespace layerlr
