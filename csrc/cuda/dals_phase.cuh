// The DALS phase detector's one-thread device step, shared by dals_phase.cu and dals_advance.cu.
#pragma once

#include <c10/util/ArrayRef.h>

#include "../engine/dals_math.h"
#include "device_values.cuh"

namespace layerlr::cuda {

struct PhaseTable {
  double alpha[3], gate[3];
};

inline PhaseTable make_phase_table(at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  PhaseTable table;
  for (int k = 0; k < 3; ++k) {
    table.alpha[k] = phase_alpha[k];
    table.gate[k] = phase_gate[k];
  }
  return table;
}

// Feeds one loss to detector = [loss EMA, calls seen, phase] and writes the phase's [alpha, gate]
// (engine/dals_math.h); filter_coef is read by fused_step_.
__device__ __forceinline__ void phase_step(const DeviceValues& detector, const DeviceValues& filter_coef,
                                           double loss, double tau1, double tau2, const PhaseTable& table) {
  double d[3] = {detector[0], detector[1], detector[2]};
  dals_phase_update(d, loss, tau1, tau2);
  for (int k = 0; k < 3; ++k) detector.store(k, d[k]);
  const int phase = dals_phase_index(d[2]);
  filter_coef.store(0, table.alpha[phase]);
  filter_coef.store(1, table.gate[phase]);
}

}  // namespace layerlr::cuda
