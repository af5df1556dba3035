// The C++ calls of the engine's ops through the dispatcher: the kernels registered by csrc/ops.cpp (and
// csrc/cuda/*.cu), the same ones torch.ops.layerlr reaches from Python. No update rule lives here.
#include <ATen/core/dispatch/Dispatcher.h>

#include "torch_layerlr/optim/recipe.h"

namespace torch_layerlr::optim {

namespace {

using OptTensor = std::optional<at::Tensor>;
// The C++ signature of the schema `layerlr::fused_step_` (csrc/ops.cpp); typed() checks it against the schema.
using FusedStepFn = void(at::TensorList, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                         at::TensorList, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, c10::string_view, c10::string_view, c10::string_view, c10::string_view,
                         const OptTensor&, double, double, double, bool, double, double, double, bool, double,
                         double, double, double, double, bool, const OptTensor&, const OptTensor&,
                         const OptTensor&);
// The `state` overload (low-precision state): FusedStepFn's arguments, then sq_norms, trust_pass, state_precision,
// the absmax lists of filters, exp_avgs and exp_avg_sqs, and the seed of the stochastic rounding.
using FusedStepStateFn = void(at::TensorList, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                              at::TensorList, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, c10::string_view, c10::string_view,
                              c10::string_view, c10::string_view, const OptTensor&, double, double, double, bool,
                              double, double, double, bool, double, double, double, double, double, bool,
                              const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                              c10::string_view, c10::string_view, at::TensorList, at::TensorList, at::TensorList,
                              int64_t);
using DalsPhaseFn = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                         at::ArrayRef<double>, at::ArrayRef<double>);

const c10::TypedOperatorHandle<FusedStepFn>& fused_step_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::fused_step_", "").typed<FusedStepFn>();
  return op;
}

// The same checks on metadata only; the schema has the arguments of fused_step_ without the mutation annotations.
const c10::TypedOperatorHandle<FusedStepFn>& fused_step_check_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::fused_step_check", "").typed<FusedStepFn>();
  return op;
}

const c10::TypedOperatorHandle<FusedStepStateFn>& fused_step_state_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::fused_step_", "state").typed<FusedStepStateFn>();
  return op;
}

const c10::TypedOperatorHandle<FusedStepStateFn>& fused_step_check_state_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::fused_step_check", "state").typed<FusedStepStateFn>();
  return op;
}

// The seed of the stochastic rounding of bf16 state: the Python classes' (the op's default).
constexpr int64_t kRoundingSeed = 0;

// One call of `op` (fused_step_.state or fused_step_check.state) on low-precision state.
void call_state_op(const c10::TypedOperatorHandle<FusedStepStateFn>& op, const StepTensors& t, const Recipe& r,
                   const StepInputs& in) {
  op.call(t.params, t.grads, t.filters, t.exp_avgs, t.exp_avg_sqs, t.steps, in.lr, in.lr_mult, in.weight_decay,
          in.blend, in.trust_mask, r.filter, r.decay, r.moment, r.trust, in.filter_coef, r.filter_lambda, r.momentum,
          r.dampening, r.nesterov, r.beta1, r.beta2, r.eps, r.bias_correction, r.trust_coefficient, r.trust_eps,
          r.ratio_min, r.ratio_max, r.norm_max, r.maximize, std::nullopt, std::nullopt, in.trust_ratios,
          std::nullopt, "all", t.state_precision, t.filter_scales, t.exp_avg_scales, t.exp_avg_sq_scales,
          kRoundingSeed);
}

using QuantizeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, bool);
using DequantizeFn = at::Tensor(const at::Tensor&, const at::Tensor&, bool);

const c10::TypedOperatorHandle<QuantizeFn>& quantize_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::quantize_blockwise", "").typed<QuantizeFn>();
  return op;
}

const c10::TypedOperatorHandle<DequantizeFn>& dequantize_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::dequantize_blockwise", "").typed<DequantizeFn>();
  return op;
}

using DalsAdvanceFn = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                           const OptTensor&, c10::string_view, bool, int64_t, double, int64_t, double, double,
                           at::ArrayRef<double>, at::ArrayRef<double>);

const c10::TypedOperatorHandle<DalsAdvanceFn>& dals_advance_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::dals_advance_", "").typed<DalsAdvanceFn>();
  return op;
}

const c10::TypedOperatorHandle<DalsPhaseFn>& dals_phase_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("layerlr::dals_phase_", "").typed<DalsPhaseFn>();
  return op;
}

}  // namespace

std::vector<std::string> Recipe::state_names() const {
  std::vector<std::string> names;
  if (filter != "none") names.emplace_back("filter");
  if (moment == "adam") {
    names.emplace_back("exp_avg");
    names.emplace_back("exp_avg_sq");
  } else if (momentum != 0.0) {
    names.emplace_back("momentum_buffer");
  }
  return names;
}

void fused_step_(const StepTensors& t, const Recipe& r, const StepInputs& in) {
  // fp32 state takes the default overload, as torch_layerlr._ops does (low-precision state the `state` one).
  if (t.state_precision != "fp32") return call_state_op(fused_step_state_op(), t, r, in);
  // The op's exp_avgs list carries Adam's first moment or SGD's momentum buffer (as torch_layerlr._ops).
  fused_step_op().call(t.params, t.grads, t.filters, t.exp_avgs, t.exp_avg_sqs, t.steps, in.lr, in.lr_mult,
                       in.weight_decay, in.blend, in.trust_mask, r.filter, r.decay, r.moment, r.trust,
                       in.filter_coef, r.filter_lambda, r.momentum, r.dampening, r.nesterov, r.beta1, r.beta2, r.eps,
                       r.bias_correction, r.trust_coefficient, r.trust_eps, r.ratio_min, r.ratio_max, r.norm_max,
                       r.maximize, std::nullopt, std::nullopt, in.trust_ratios);
}

void fused_step_check(const StepTensors& t, const Recipe& r, const StepInputs& in) {
  if (t.state_precision != "fp32") return call_state_op(fused_step_check_state_op(), t, r, in);
  fused_step_check_op().call(t.params, t.grads, t.filters, t.exp_avgs, t.exp_avg_sqs, t.steps, in.lr, in.lr_mult,
                             in.weight_decay, in.blend, in.trust_mask, r.filter, r.decay, r.moment, r.trust,
                             in.filter_coef, r.filter_lambda, r.momentum, r.dampening, r.nesterov, r.beta1, r.beta2,
                             r.eps, r.bias_correction, r.trust_coefficient, r.trust_eps, r.ratio_min, r.ratio_max,
                             r.norm_max, r.maximize, std::nullopt, std::nullopt, in.trust_ratios);
}

std::tuple<at::Tensor, at::Tensor> quantize_blockwise(const at::Tensor& values, bool signed_map) {
  return quantize_op().call(values, signed_map);
}

at::Tensor dequantize_blockwise(const at::Tensor& codes, const at::Tensor& absmax, bool signed_map) {
  return dequantize_op().call(codes, absmax, signed_map);
}

void dals_phase_(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss, double tau1,
                 double tau2, const std::vector<double>& phase_alpha, const std::vector<double>& phase_gate) {
  dals_phase_op().call(detector, filter_coef, loss, tau1, tau2, phase_alpha, phase_gate);
}

void dals_advance_(const at::Tensor& clock, const at::Tensor& scale, const at::Tensor& detector,
                   const at::Tensor& filter_coef, const std::optional<at::Tensor>& loss,
                   const std::optional<at::Tensor>& found_inf, const std::string& variant, bool schedule,
                   int64_t total_steps, double warmup_frac, int64_t restart_mult, double tau1, double tau2,
                   const std::vector<double>& phase_alpha, const std::vector<double>& phase_gate) {
  dals_advance_op().call(clock, scale, detector, filter_coef, loss, found_inf, variant, schedule, total_steps,
                         warmup_frac, restart_mult, tau1, tau2, phase_alpha, phase_gate);
}

}  // namespace torch_layerlr::optim
