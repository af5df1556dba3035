// The entry points every backend registers: the fused_step_ wrapper with the op's full signature, and the
// argument checks of the other ops (defined in checks/op_args.cpp; the parsing and the version bumps in
// ops.cpp, next to the schemas), so that a CPU and a CUDA call of an op parse and check their arguments the
// same way.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>

#include "step_args.h"

namespace layerlr {

// Parses the recipe from the op's arguments and runs check_step_args on the result.
StepArgs make_step_args(at::TensorList params, at::TensorList grads, at::TensorList filters, at::TensorList exp_avgs,
                        at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& lr,
                        const at::Tensor& lr_mult, const at::Tensor& weight_decay, const at::Tensor& blend,
                        const at::Tensor& trust_mask, c10::string_view filter, c10::string_view decay,
                        c10::string_view moment, c10::string_view trust,
                        const std::optional<at::Tensor>& filter_coef, double filter_lambda, double momentum,
                        double dampening, bool nesterov, double beta1, double beta2, double eps,
                        bool bias_correction, double trust_coefficient, double trust_eps, double ratio_min,
                        double ratio_max, double norm_max, bool maximize,
                        const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                        const std::optional<at::Tensor>& trust_ratios,
                        const std::optional<at::Tensor>& sq_norms = std::nullopt,
                        c10::string_view trust_pass = "all", c10::string_view state_precision = "fp32",
                        at::TensorList filter_scales = {}, at::TensorList exp_avg_scales = {},
                        at::TensorList exp_avg_sq_scales = {}, int64_t seed = 0);

// Bumps the autograd version counter of every tensor the step wrote (params, states, steps, the grads of
// recipes that write them), as torch.optim's in-place updates do: a graph saved before the step then raises
// on backward instead of silently using the updated values.
void bump_versions(const StepArgs& a);

// One entry point per backend and overload, with the op's full signature: m.impl("fused_step_",
// &fused_step_<backend>). fused_step_.state has every argument: the split overload's and the state's precision,
// the int8 scales of each state list and the seed of stochastic rounding (NOTE: [state precision] in
// state_precision.h); fused_step_.split (sq_norms and trust_pass, NOTE: [split trust step] in step_args.h) is it
// with fp32 state, and fused_step_ is the split one with the whole trust step. With kRun = false it only checks
// (the fused_step_check op: an optimizer with several calls per step checks all of them before it runs any, so a
// step is atomic).
template <void (*Backend)(const StepArgs&), bool kRun = true>
void fused_step_state_(at::TensorList params, at::TensorList grads, at::TensorList filters, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& lr,
                       const at::Tensor& lr_mult, const at::Tensor& weight_decay, const at::Tensor& blend,
                       const at::Tensor& trust_mask, c10::string_view filter, c10::string_view decay,
                       c10::string_view moment, c10::string_view trust,
                       const std::optional<at::Tensor>& filter_coef, double filter_lambda, double momentum,
                       double dampening, bool nesterov, double beta1, double beta2, double eps,
                       bool bias_correction, double trust_coefficient, double trust_eps, double ratio_min,
                       double ratio_max, double norm_max, bool maximize,
                       const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                       const std::optional<at::Tensor>& trust_ratios, const std::optional<at::Tensor>& sq_norms,
                       c10::string_view trust_pass, c10::string_view state_precision, at::TensorList filter_scales,
                       at::TensorList exp_avg_scales, at::TensorList exp_avg_sq_scales, int64_t seed) {
  const StepArgs args = make_step_args(params, grads, filters, exp_avgs, exp_avg_sqs, steps, lr, lr_mult,
                                       weight_decay, blend, trust_mask, filter, decay, moment, trust, filter_coef,
                                       filter_lambda, momentum, dampening, nesterov, beta1, beta2, eps,
                                       bias_correction, trust_coefficient, trust_eps, ratio_min, ratio_max,
                                       norm_max, maximize, grad_scale, found_inf, trust_ratios, sq_norms,
                                       trust_pass, state_precision, filter_scales, exp_avg_scales,
                                       exp_avg_sq_scales, seed);
  if constexpr (kRun) {
    Backend(args);
    bump_versions(args);
  }
}

template <void (*Backend)(const StepArgs&), bool kRun = true>
void fused_step_split_(at::TensorList params, at::TensorList grads, at::TensorList filters, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& lr,
                       const at::Tensor& lr_mult, const at::Tensor& weight_decay, const at::Tensor& blend,
                       const at::Tensor& trust_mask, c10::string_view filter, c10::string_view decay,
                       c10::string_view moment, c10::string_view trust,
                       const std::optional<at::Tensor>& filter_coef, double filter_lambda, double momentum,
                       double dampening, bool nesterov, double beta1, double beta2, double eps,
                       bool bias_correction, double trust_coefficient, double trust_eps, double ratio_min,
                       double ratio_max, double norm_max, bool maximize,
                       const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                       const std::optional<at::Tensor>& trust_ratios, const std::optional<at::Tensor>& sq_norms,
                       c10::string_view trust_pass) {
  fused_step_state_<Backend, kRun>(params, grads, filters, exp_avgs, exp_avg_sqs, steps, lr, lr_mult, weight_decay,
                                   blend, trust_mask, filter, decay, moment, trust, filter_coef, filter_lambda,
                                   momentum, dampening, nesterov, beta1, beta2, eps, bias_correction,
                                   trust_coefficient, trust_eps, ratio_min, ratio_max, norm_max, maximize,
                                   grad_scale, found_inf, trust_ratios, sq_norms, trust_pass, "fp32", {}, {}, {}, 0);
}

template <void (*Backend)(const StepArgs&), bool kRun = true>
void fused_step_(at::TensorList params, at::TensorList grads, at::TensorList filters, at::TensorList exp_avgs,
                 at::TensorList exp_avg_sqs, at::TensorList steps, const at::Tensor& lr, const at::Tensor& lr_mult,
                 const at::Tensor& weight_decay, const at::Tensor& blend, const at::Tensor& trust_mask,
                 c10::string_view filter, c10::string_view decay, c10::string_view moment, c10::string_view trust,
                 const std::optional<at::Tensor>& filter_coef, double filter_lambda, double momentum,
                 double dampening, bool nesterov, double beta1, double beta2, double eps, bool bias_correction,
                 double trust_coefficient, double trust_eps, double ratio_min, double ratio_max, double norm_max,
                 bool maximize, const std::optional<at::Tensor>& grad_scale,
                 const std::optional<at::Tensor>& found_inf, const std::optional<at::Tensor>& trust_ratios) {
  fused_step_split_<Backend, kRun>(params, grads, filters, exp_avgs, exp_avg_sqs, steps, lr, lr_mult, weight_decay,
                                   blend, trust_mask, filter, decay, moment, trust, filter_coef, filter_lambda,
                                   momentum, dampening, nesterov, beta1, beta2, eps, bias_correction,
                                   trust_coefficient, trust_eps, ratio_min, ratio_max, norm_max, maximize,
                                   grad_scale, found_inf, trust_ratios, std::nullopt, "all");
}

// The backend of fused_step_check: nothing to run.
inline void no_backend(const StepArgs&) {}

// tensor_norms: one float dtype (float32, float64, bfloat16 or float16), strided tensors.
void check_tensor_norms_args(at::TensorList tensors);

// dals_phase_: detector is a float64 [ema, seen, phase], filter_coef holds [alpha, gate], loss one element,
// one alpha and one gate per phase.
void check_dals_phase_args(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss,
                           at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate);

}  // namespace layerlr
