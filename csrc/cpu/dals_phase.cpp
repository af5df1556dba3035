// The DALS loss-phase detector (arXiv 2604.27295, A.4 of our notes), in float64 like the authors' Python.
#include <algorithm>
#include <cmath>

#include "cpu_backend.h"
#include "loops.h"

namespace layerlr::cpu {

// detector = [loss EMA, calls seen, phase]; filter_coef = [alpha, gate] of the phase, read by fused_step_.
void dals_phase(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                double tau2, at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  const double value = read_scalar(loss);
  double ema = read_scalar(detector, 0), phase = read_scalar(detector, 2);
  // The stored phase indexes the phase tables when this call keeps it: refuse anything but 0, 1, 2.
  TORCH_CHECK_VALUE(phase == 0.0 || phase == 1.0 || phase == 2.0, "detector[2] (the loss phase) is ", phase,
                    ": expected 0, 1 or 2");
  if (read_scalar(detector, 1) == 0.0) {
    ema = value;  // the first loss seeds the EMA; the phase stays where it is (0)
  } else {
    const double prev = ema;
    ema = 0.95 * ema + 0.05 * value;
    const double delta = (prev - ema) / std::max(std::abs(prev), 1e-8);
    phase = delta > tau1 ? 0.0 : (delta > tau2 ? 1.0 : 2.0);
  }
  write_scalar(detector, 0, ema);
  write_scalar(detector, 1, read_scalar(detector, 1) + 1.0);
  write_scalar(detector, 2, phase);
  write_scalar(filter_coef, 0, phase_alpha[static_cast<size_t>(phase)]);
  write_scalar(filter_coef, 1, phase_gate[static_cast<size_t>(phase)]);
}

}  // namespace layerlr::cpu
