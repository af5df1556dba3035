// layerlr::dals_advance_: DALS's global state for one step, on the device of its tensors (no host sync):
// unless GradScaler found an inf, feed the loss to the phase detector (if a loss is given), write the phase's
// filter coefficients, advance the schedule clock and write the step's lr factor. The CPU registration is here;
// the CUDA one in cuda/dals_advance.cu. NOTE: [trust nothing at the op boundary] (checks/op_args.cpp).
#include <torch/library.h>

#include <tuple>

#include "checks/memory.h"
#include "cpu/cpu_backend.h"
#include "cpu/loops.h"
#include "engine/dals_advance.h"
#include "engine/dals_math.h"
#include "engine/op_entry.h"

namespace layerlr {

DalsSchedule make_dals_schedule(c10::string_view variant, bool schedule, int64_t total_steps, double warmup_frac,
                                int64_t restart_mult) {
  TORCH_CHECK_VALUE(variant == "dals" || variant == "fast" || variant == "acc",
                    "variant must be 'dals', 'fast' or 'acc', got '", variant, "'");
  TORCH_CHECK_VALUE(total_steps >= 1, "total_steps must be >= 1, got ", total_steps);
  TORCH_CHECK_VALUE(warmup_frac >= 0.0 && warmup_frac < 1.0, "warmup_frac must be in [0, 1), got ", warmup_frac);
  TORCH_CHECK_VALUE(restart_mult >= 1, "restart_mult must be >= 1, got ", restart_mult);
  return {variant == "acc", schedule, static_cast<double>(total_steps), warmup_frac,
          static_cast<double>(restart_mult)};
}

void check_dals_advance_args(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                             const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                             const std::optional<at::Tensor>& found_inf, at::ArrayRef<double> phase_alpha,
                             at::ArrayRef<double> phase_gate) {
  check_dals_phase_args(detector, filter_coef, loss ? *loss : detector.new_zeros({}), phase_alpha, phase_gate);
  const at::Device device = detector.device();
  for (const auto& [t, name, length] : {std::tuple{&clock, "clock", 3}, std::tuple{&scale, "scale", 1}}) {
    TORCH_CHECK_VALUE(t->defined() && t->layout() == at::kStrided && t->dim() == 1 && t->size(0) == length &&
                          t->scalar_type() == at::kDouble,
                      name, " must be a float64 tensor of shape [", length, "], got ",
                      t->defined() ? t->sizes() : at::IntArrayRef{});
    TORCH_CHECK_VALUE(t->device() == device, name, " is on ", t->device(), " but detector is on ", device);
  }
  if (found_inf) {
    TORCH_CHECK_VALUE(found_inf->defined() && found_inf->numel() == 1 && !found_inf->is_complex() &&
                          found_inf->layout() == at::kStrided,
                      "found_inf must hold one real element, got shape ", found_inf->sizes());
    TORCH_CHECK_VALUE(found_inf->is_meta() == device.is_meta(), "found_inf is on ", found_inf->device(),
                      " and detector on ", device, ": meta tensors cannot be mixed with real ones");
  }
  std::vector<NamedTensor> all{{&clock, "clock", true}, {&scale, "scale", true}, {&detector, "detector", true},
                               {&filter_coef, "filter_coef", true}};
  if (loss) all.push_back({&*loss, "loss", false});
  if (found_inf) all.push_back({&*found_inf, "found_inf", false});
  check_memory(all);
}

namespace {

void dals_advance_cpu(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                      const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                      const std::optional<at::Tensor>& found_inf, c10::string_view variant, bool schedule,
                      int64_t total_steps, double warmup_frac, int64_t restart_mult, double tau1, double tau2,
                      at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  check_dals_advance_args(clock, scale, detector, filter_coef, loss, found_inf, phase_alpha, phase_gate);
  const DalsSchedule s = make_dals_schedule(variant, schedule, total_steps, warmup_frac, restart_mult);
  if (found_inf && cpu::read_scalar(found_inf->device().is_cpu() ? *found_inf : found_inf->cpu()) != 0.0) return;
  if (loss) cpu::dals_phase(detector, filter_coef, loss->device().is_cpu() ? *loss : loss->cpu(), tau1, tau2,
                            phase_alpha, phase_gate);
  double c[3] = {cpu::read_scalar(clock, 0), cpu::read_scalar(clock, 1), cpu::read_scalar(clock, 2)};
  const double factor = dals_schedule_advance(c, s);
  for (int k = 0; k < 3; ++k) cpu::write_scalar(clock, k, c[k]);
  cpu::write_scalar(scale, 0, factor);
}

}  // namespace
}  // namespace layerlr

TORCH_LIBRARY_FRAGMENT(layerlr, m) {
  m.def(
      "dals_advance_(Tensor(a!) clock, Tensor(b!) scale, Tensor(c!) detector, Tensor(d!) filter_coef, "
      "Tensor? loss, Tensor? found_inf, *, str variant, bool schedule, int total_steps, float warmup_frac, "
      "int restart_mult, float tau1, float tau2, float[] phase_alpha, float[] phase_gate) -> ()");
}

TORCH_LIBRARY_IMPL(layerlr, CPU, m) {
  m.impl("dals_advance_", &layerlr::dals_advance_cpu);
}
