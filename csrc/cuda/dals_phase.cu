// The DALS loss-phase detector on CUDA: cpu/dals_phase.cpp as a one-thread kernel, so that a loss on the
// device feeds a detector on the device without an .item() (NOTE: [no host sync] in device_values.cuh).
#include <torch/library.h>

#include <vector>

#include "c10_cuda.cuh"
#include "../cpu/cpu_backend.h"
#include "../engine/op_entry.h"
#include "dals_phase.cuh"
#include "device_values.cuh"

namespace layerlr::cuda {

__global__ void dals_phase_kernel(const DeviceValues detector, const DeviceValues filter_coef,
                                  const DeviceValues loss, const double tau1, const double tau2,
                                  const PhaseTable table) {
  phase_step(detector, filter_coef, loss[0], tau1, tau2, table);
}

void dals_phase(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                double tau2, at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  check_dals_phase_args(detector, filter_coef, loss, phase_alpha, phase_gate);
  if (detector.is_cpu() && filter_coef.is_cpu()) {
    // A detector on the host (where the DALS optimizer keeps it) with a loss on the device: the loss comes
    // over, which waits for the kernels that computed it, as in the CPU op.
    cpu::dals_phase(detector, filter_coef, loss.cpu(), tau1, tau2, phase_alpha, phase_gate);
    return;
  }
  const at::Device device = detector.device();
  TORCH_CHECK_VALUE(device.is_cuda() && filter_coef.device() == device, "dals_phase_: detector is on ", device,
                    " and filter_coef on ", filter_coef.device(), ": they must be on one device");
  const c10::cuda::CUDAGuard guard(device);
  std::vector<at::Tensor> keep;
  const at::Tensor loss_here = loss.device() == device ? loss : loss.to(device);
  const PhaseTable table = make_phase_table(phase_alpha, phase_gate);
  dals_phase_kernel<<<1, 1, 0, c10::cuda::getCurrentCUDAStream()>>>(
      writable_device_values(detector, "detector"), writable_device_values(filter_coef, "filter_coef"),
      device_values(loss_here, keep), tau1, tau2, table);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace layerlr::cuda

TORCH_LIBRARY_IMPL(layerlr, CUDA, m) {
  m.impl("dals_phase_", &layerlr::cuda::dals_phase);
}
