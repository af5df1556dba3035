// The layerlr op family: schemas, argument parsing shared by every backend (declared in engine/op_entry.h;
// the checks are in checks/op_args.cpp), and the CPU registrations. The CUDA registrations are in
// csrc/cuda/*.cu.
//
// NOTE: [schema conventions]
// As ATen's _fused_adamw_: mutated lists are annotated Tensor(a!)[], mutated tensors are never returned,
// hyperparameters are keyword arguments, lr is a Tensor (so a CUDA graph or a compiled step need no
// recapture when a scheduler changes it), grad_scale/found_inf are GradScaler's. The per-tensor numbers
// (lr_mult, weight_decay, blend, trust) are 1-D tensors indexed by the tensor's position in the list; lr is one
// element, or such a 1-D tensor when one call runs tensors of several param groups.
// grads are mutable: see NOTE: [adam direction in the grad buffer] in recipe.h.
#include <torch/library.h>

#include <string>

#include "cpu/cpu_backend.h"
#include "cpu/quantize.h"
#include "engine/op_entry.h"
#include "engine/step_args.h"

namespace layerlr {

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
                        const std::optional<at::Tensor>& sq_norms, c10::string_view trust_pass,
                        c10::string_view state_precision, at::TensorList filter_scales,
                        at::TensorList exp_avg_scales, at::TensorList exp_avg_sq_scales, int64_t seed) {
  StepArgs a{params, grads, filters, exp_avgs, exp_avg_sqs, steps, lr, lr_mult, weight_decay, blend, trust_mask,
             filter_coef, grad_scale, found_inf, trust_ratios, Recipe{}, sq_norms, parse_trust_pass(trust_pass),
             parse_state_precision(state_precision), filter_scales, exp_avg_scales, exp_avg_sq_scales, seed};
  Recipe& r = a.recipe;
  r.filter = parse_filter(filter);
  r.decay = parse_decay(decay);
  r.moment = parse_moment(moment);
  r.trust = parse_trust(trust);
  r.filter_lambda = filter_lambda;
  r.momentum = momentum;
  r.dampening = dampening;
  r.nesterov = nesterov;
  r.beta1 = beta1;
  r.beta2 = beta2;
  r.eps = eps;
  r.bias_correction = bias_correction;
  r.trust_coefficient = trust_coefficient;
  r.trust_eps = trust_eps;
  r.ratio_min = ratio_min;
  r.ratio_max = ratio_max;
  r.norm_max = norm_max;
  r.maximize = maximize;
  check_step_args(a);
  return a;
}

void bump_versions(const StepArgs& a) {
  auto bump = [](const at::Tensor& t) {
    if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
  };
  for (at::TensorList list : {a.params, a.filters, a.exp_avgs, a.exp_avg_sqs, a.steps, a.filter_scales,
                              a.exp_avg_scales, a.exp_avg_sq_scales})
    for (const at::Tensor& t : list) bump(t);
  if (a.recipe.writes_grads() && a.pass != TrustPass::kUpdate)
    for (const at::Tensor& g : a.grads) bump(g);
  if (a.trust_ratios && a.pass != TrustPass::kNorms) bump(*a.trust_ratios);
  if (a.sq_norms && a.pass == TrustPass::kNorms) bump(*a.sq_norms);
}

namespace {

at::Tensor tensor_norms_cpu(at::TensorList tensors) {
  check_tensor_norms_args(tensors);
  return cpu::tensor_norms(tensors);
}

void dals_phase_cpu(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                    double tau2, at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  check_dals_phase_args(detector, filter_coef, loss, phase_alpha, phase_gate);
  const at::Tensor loss_cpu = loss.device().is_cpu() ? loss : loss.cpu();
  cpu::dals_phase(detector, filter_coef, loss_cpu, tau1, tau2, phase_alpha, phase_gate);
}

// Sparse tensors reach these entries only to be refused by the checks, which name the argument.
void refuse_sparse(const StepArgs&) { TORCH_CHECK(false, "fused_step_: sparse tensors are not supported"); }

at::Tensor tensor_norms_sparse(at::TensorList tensors) {
  check_tensor_norms_args(tensors);
  TORCH_CHECK(false, "tensor_norms: sparse tensors are not supported");
}

}  // namespace
}  // namespace layerlr

TORCH_LIBRARY(layerlr, m) {
  m.def(
      "fused_step_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] filters, Tensor(d!)[] exp_avgs, "
      "Tensor(e!)[] exp_avg_sqs, Tensor(f!)[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor(g!)? trust_ratios=None) -> ()");
  // The step split around a reduction of the norms (NOTE: [split trust step] in engine/step_args.h). An overload,
  // so the default schema (and the C++ API's typed handle on it) stays as it is.
  m.def(
      "fused_step_.split(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] filters, Tensor(d!)[] exp_avgs, "
      "Tensor(e!)[] exp_avg_sqs, Tensor(f!)[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor(g!)? trust_ratios=None, Tensor(h!)? sq_norms, str trust_pass) -> ()");
  // The step on low-precision state (NOTE: [state precision] in engine/state_precision.h): the split overload's
  // arguments, the precision, the int8 absmax of each state list (empty lists otherwise) and the seed of the
  // stochastic rounding of bf16 state.
  m.def(
      "fused_step_.state(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] filters, Tensor(d!)[] exp_avgs, "
      "Tensor(e!)[] exp_avg_sqs, Tensor(f!)[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor(g!)? trust_ratios=None, Tensor(h!)? sq_norms=None, str trust_pass='all', str state_precision, "
      "Tensor(i!)[] filter_scales, Tensor(j!)[] exp_avg_scales, Tensor(k!)[] exp_avg_sq_scales, int seed=0) -> ()");
  // The checks of fused_step_ alone, on metadata only: see fused_step_ in engine/op_entry.h.
  m.def(
      "fused_step_check(Tensor[] params, Tensor[] grads, Tensor[] filters, Tensor[] exp_avgs, "
      "Tensor[] exp_avg_sqs, Tensor[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor? trust_ratios=None) -> ()");
  m.def(
      "fused_step_check.split(Tensor[] params, Tensor[] grads, Tensor[] filters, Tensor[] exp_avgs, "
      "Tensor[] exp_avg_sqs, Tensor[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor? trust_ratios=None, Tensor? sq_norms, str trust_pass) -> ()");
  m.def(
      "fused_step_check.state(Tensor[] params, Tensor[] grads, Tensor[] filters, Tensor[] exp_avgs, "
      "Tensor[] exp_avg_sqs, Tensor[] steps, *, Tensor lr, Tensor lr_mult, Tensor weight_decay, "
      "Tensor blend, Tensor trust_mask, str filter, str decay, str moment, str trust, Tensor? filter_coef, "
      "float filter_lambda, float momentum, float dampening, bool nesterov, float beta1, float beta2, float eps, "
      "bool bias_correction, float trust_coefficient, float trust_eps, float ratio_min, float ratio_max, "
      "float norm_max, bool maximize, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "Tensor? trust_ratios=None, Tensor? sq_norms=None, str trust_pass='all', str state_precision, "
      "Tensor[] filter_scales, Tensor[] exp_avg_scales, Tensor[] exp_avg_sq_scales, int seed=0) -> ()");
  m.def("tensor_norms(Tensor[] tensors) -> Tensor");
  // int8 state as the fused step keeps it (NOTE: [dynamic quantization map] in engine/quant_map.h), for
  // converting state between precisions: signed_map = the map of first moments, buffers and filters.
  m.def("quantize_blockwise(Tensor values, bool signed_map) -> (Tensor codes, Tensor absmax)");
  m.def("dequantize_blockwise(Tensor codes, Tensor absmax, bool signed_map) -> Tensor");
  m.def(
      "dals_phase_(Tensor(a!) detector, Tensor(b!) filter_coef, Tensor loss, *, float tau1, float tau2, "
      "float[] phase_alpha, float[] phase_gate) -> ()");
}

TORCH_LIBRARY_IMPL(layerlr, CompositeExplicitAutograd, m) {
  m.impl("fused_step_check", &layerlr::fused_step_<layerlr::no_backend, false>);
  m.impl("fused_step_check.split", &layerlr::fused_step_split_<layerlr::no_backend, false>);
  m.impl("fused_step_check.state", &layerlr::fused_step_state_<layerlr::no_backend, false>);
}

TORCH_LIBRARY_IMPL(layerlr, CPU, m) {
  m.impl("fused_step_", &layerlr::fused_step_<layerlr::cpu::fused_step>);
  m.impl("fused_step_.split", &layerlr::fused_step_split_<layerlr::cpu::fused_step>);
  m.impl("fused_step_.state", &layerlr::fused_step_state_<layerlr::cpu::fused_step>);
  m.impl("tensor_norms", &layerlr::tensor_norms_cpu);
  m.impl("quantize_blockwise", &layerlr::cpu::quantize_blockwise);
  m.impl("dequantize_blockwise", &layerlr::cpu::dequantize_blockwise);
  m.impl("dals_phase_", &layerlr::dals_phase_cpu);
}

TORCH_LIBRARY_IMPL(layerlr, SparseCPU, m) {
  m.impl("fused_step_", &layerlr::fused_step_<layerlr::refuse_sparse>);
  m.impl("fused_step_.split", &layerlr::fused_step_split_<layerlr::refuse_sparse>);
  m.impl("fused_step_.state", &layerlr::fused_step_state_<layerlr::refuse_sparse>);
  m.impl("tensor_norms", &layerlr::tensor_norms_sparse);
}

TORCH_LIBRARY_IMPL(layerlr, SparseCUDA, m) {
  m.impl("fused_step_", &layerlr::fused_step_<layerlr::refuse_sparse>);
  m.impl("fused_step_.split", &layerlr::fused_step_split_<layerlr::refuse_sparse>);
  m.impl("fused_step_.state", &layerlr::fused_step_state_<layerlr::refuse_sparse>);
  m.impl("tensor_norms", &layerlr::tensor_norms_sparse);
}
