// The DALS loss-phase detector (arXiv 2604.27295, A.4 of our notes), in float64 like the authors' Python; the
// arithmetic is engine/dals_math.h's.
#include "../engine/dals_math.h"
#include "cpu_backend.h"
#include "loops.h"

namespace layerlr::cpu {

// detector = [loss EMA, calls seen, phase]; filter_coef = [alpha, gate] of the phase, read by fused_step_.
void dals_phase(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                double tau2, at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  double d[3] = {read_scalar(detector, 0), read_scalar(detector, 1), read_scalar(detector, 2)};
  // The stored phase indexes the phase tables when this call keeps it: refuse anything but 0, 1, 2.
  TORCH_CHECK_VALUE(d[2] == 0.0 || d[2] == 1.0 || d[2] == 2.0, "detector[2] (the loss phase) is ", d[2],
                    ": expected 0, 1 or 2");
  dals_phase_update(d, read_scalar(loss), tau1, tau2);
  for (int k = 0; k < 3; ++k) write_scalar(detector, k, d[k]);
  const int phase = dals_phase_index(d[2]);
  write_scalar(filter_coef, 0, phase_alpha[phase]);
  write_scalar(filter_coef, 1, phase_gate[phase]);
}

}  // namespace layerlr::cpu
