// layerlr::dals_advance_ on CUDA (dals_advance.cpp): DALS's phase detector and schedule as one one-thread
// kernel, reading the loss and GradScaler's found_inf where they are (NOTE: [no host sync] in
// device_values.cuh), so a DALS step never waits for the device and can be captured in a CUDA graph.
#include <torch/library.h>

#include <vector>

#include "c10_cuda.cuh"
#include "../engine/dals_advance.h"
#include "dals_phase.cuh"
#include "device_values.cuh"

namespace layerlr::cuda {
namespace {

__global__ void dals_advance_kernel(const DeviceValues clock, const DeviceValues scale, const DeviceValues detector,
                                    const DeviceValues filter_coef, const DeviceValues loss,
                                    const DeviceValues found_inf, const DalsSchedule schedule, const double tau1,
                                    const double tau2, const PhaseTable table) {
  if (found_inf.defined() && found_inf[0] != 0.0) return;  // GradScaler skips the step: nothing moves
  if (loss.defined()) phase_step(detector, filter_coef, loss[0], tau1, tau2, table);
  double c[3] = {clock[0], clock[1], clock[2]};
  const double factor = dals_schedule_advance(c, schedule);
  for (int k = 0; k < 3; ++k) clock.store(k, c[k]);
  scale.store(0, factor);
}

void dals_advance(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                  const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                  const std::optional<at::Tensor>& found_inf, c10::string_view variant, bool schedule,
                  int64_t total_steps, double warmup_frac, int64_t restart_mult, double tau1, double tau2,
                  at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  check_dals_advance_args(clock, scale, detector, filter_coef, loss, found_inf, phase_alpha, phase_gate);
  const DalsSchedule s = make_dals_schedule(variant, schedule, total_steps, warmup_frac, restart_mult);
  const at::Device device = detector.device();
  TORCH_CHECK_VALUE(device.is_cuda(), "dals_advance_ (CUDA): detector is on ", device);
  const c10::cuda::CUDAGuard guard(device);
  std::vector<at::Tensor> keep;  // device copies the kernel reads
  auto here = [&](const std::optional<at::Tensor>& t) -> std::optional<at::Tensor> {
    if (!t || t->device() == device) return t;
    return t->to(device, /*non_blocking=*/true);
  };
  const std::optional<at::Tensor> loss_here = here(loss), found_inf_here = here(found_inf);
  dals_advance_kernel<<<1, 1, 0, c10::cuda::getCurrentCUDAStream()>>>(
      writable_device_values(clock, "clock"), writable_device_values(scale, "scale"),
      writable_device_values(detector, "detector"), writable_device_values(filter_coef, "filter_coef"),
      device_values(loss_here, keep), device_values(found_inf_here, keep), s, tau1, tau2,
      make_phase_table(phase_alpha, phase_gate));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace layerlr::cuda

TORCH_LIBRARY_IMPL(layerlr, CUDA, m) {
  m.impl("dals_advance_", &layerlr::cuda::dals_advance);
}
