// The CPU implementations of the layerlr ops (registered in ops.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "../engine/step_args.h"

namespace layerlr::cpu {

void fused_step(const StepArgs& a);

// Per-tensor L2 norms in the math type of the list (float for fp32/bf16/fp16, double for fp64).
at::Tensor tensor_norms(at::TensorList tensors);

// DALS loss-phase detector; see torch_layerlr/optim/dals.py.
void dals_phase(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                double tau2, at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate);

}  // namespace layerlr::cpu
