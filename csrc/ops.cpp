// The layerlr op family: schemas, argument checks shared by every backend (declared in engine/op_entry.h),
// and the CPU registrations. The CUDA registrations are in csrc/cuda/*.cu.
//
// NOTE: [schema conventions]
// As ATen's _fused_adamw_: mutated lists are annotated Tensor(a!)[], mutated tensors are never returned,
// hyperparameters are keyword arguments, lr is a Tensor (so a CUDA graph or a compiled step need no
// recapture when a scheduler changes it), grad_scale/found_inf are GradScaler's. The per-tensor numbers
// (lr_mult, weight_decay, blend, trust) are 1-D tensors indexed by the tensor's position in the list.
// grads are mutable: see NOTE: [adam direction in the grad buffer] in recipe.h.
#include <torch/library.h>

#include <string>

#include "cpu/cpu_backend.h"
#include "engine/op_entry.h"
#include "engine/step_args.h"

namespace layerlr {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

void check_companion(const at::Tensor& p, const at::Tensor& x, const char* list, size_t i) {
  TORCH_CHECK_VALUE(x.defined(), list, "[", i, "] is undefined");
  TORCH_CHECK_TYPE(x.layout() == at::kStrided, list, "[", i, "] is sparse (", x.layout(),
                   "): the fused step does not support sparse gradients");
  TORCH_CHECK_VALUE(x.device() == p.device(), list, "[", i, "] is on ", x.device(), " but params[", i, "] is on ",
                    p.device(), ": a fused call takes tensors on one device");
  TORCH_CHECK_TYPE(x.scalar_type() == p.scalar_type(), list, "[", i, "] has dtype ", x.scalar_type(),
                   " but params[", i, "] has ", p.scalar_type());
  TORCH_CHECK_VALUE(x.sizes() == p.sizes(), list, "[", i, "] has shape ", x.sizes(), " but params[", i,
                    "] has ", p.sizes());
}

void check_list_length(at::TensorList list, const char* name, size_t expected, const char* why) {
  TORCH_CHECK_VALUE(list.size() == expected, name, " has ", list.size(), " tensors, expected ", expected, " (",
                    why, ")");
}

void check_per_tensor(const at::Tensor& x, const char* name, size_t n, const at::Device& device) {
  TORCH_CHECK_VALUE(x.dim() == 1 && static_cast<size_t>(x.numel()) == n, name,
                    " must be a 1-D tensor with one entry per parameter (", n, "), got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.device() == device, name, " is on ", x.device(), " but the params are on ", device);
}

void check_scalar(const std::optional<at::Tensor>& x, const char* name, const at::Device& device) {
  if (!x) return;
  TORCH_CHECK_VALUE(x->numel() == 1, name, " must hold one element, got shape ", x->sizes());
  TORCH_CHECK_VALUE(x->device() == device, name, " is on ", x->device(), " but the params are on ", device);
}

}  // namespace

void check_step_args(const StepArgs& a) {
  const size_t n = a.params.size();
  const Recipe& r = a.recipe;
  check_list_length(a.grads, "grads", n, "one per param");
  check_list_length(a.steps, "steps", n, "one per param");
  check_list_length(a.filters, "filters", r.filter == Filter::kNone ? 0 : n, "one per param with a filter, else none");
  const bool first_moment = r.moment == Moment::kAdam || r.has_momentum_buffer();
  check_list_length(a.exp_avgs, "exp_avgs", first_moment ? n : 0,
                    "one per param for adam or sgd with momentum, else none");
  check_list_length(a.exp_avg_sqs, "exp_avg_sqs", r.moment == Moment::kAdam ? n : 0, "one per param for adam");
  TORCH_CHECK_VALUE(r.trust != Trust::kLars || r.moment == Moment::kSgd,
                    "trust='lars' scales the direction before a momentum buffer: it needs moment='sgd'");
  TORCH_CHECK_VALUE(r.trust != Trust::kLars || r.dampening == 0.0, "trust='lars' does not take dampening");
  if (n == 0) return;

  const at::Tensor& p0 = a.params[0];
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = a.params[i];
    TORCH_CHECK_TYPE(!p.is_complex(), "params[", i, "] is complex (", p.scalar_type(),
                     "): the fused step supports float32, float64, bfloat16 and float16 params");
    TORCH_CHECK_TYPE(is_supported_float(p.scalar_type()), "params[", i, "] has dtype ", p.scalar_type(),
                     ": the fused step supports float32, float64, bfloat16 and float16 params");
    TORCH_CHECK_TYPE(p.layout() == at::kStrided, "params[", i, "] is not a strided (dense) tensor");
    TORCH_CHECK_VALUE(p.device() == p0.device(), "params[", i, "] is on ", p.device(), " but params[0] is on ",
                      p0.device(), ": a fused call takes tensors on one device");
    TORCH_CHECK_TYPE(p.scalar_type() == p0.scalar_type(), "params[", i, "] has dtype ", p.scalar_type(),
                     " but params[0] has ", p0.scalar_type(), ": a fused call takes one dtype");
    TORCH_CHECK_TYPE(!a.grads[i].is_complex(), "grads[", i, "] is complex: complex gradients are not supported");
    check_companion(p, a.grads[i], "grads", i);
    if (!a.filters.empty()) check_companion(p, a.filters[i], "filters", i);
    if (!a.exp_avgs.empty()) check_companion(p, a.exp_avgs[i], "exp_avgs", i);
    if (!a.exp_avg_sqs.empty()) check_companion(p, a.exp_avg_sqs[i], "exp_avg_sqs", i);
    TORCH_CHECK_VALUE(a.steps[i].numel() == 1, "steps[", i, "] must hold one element");
    TORCH_CHECK_TYPE(a.steps[i].is_floating_point(), "steps[", i, "] has dtype ", a.steps[i].scalar_type(),
                     ": step counts are float tensors (float32 as in torch.optim)");
    TORCH_CHECK_VALUE(a.steps[i].device() == p.device() || a.steps[i].is_cpu(), "steps[", i, "] is on ",
                      a.steps[i].device(), " but params[", i, "] is on ", p.device());
  }
  const at::Device device = p0.device();
  check_scalar(a.lr, "lr", device);
  check_per_tensor(a.lr_mult, "lr_mult", n, device);
  check_per_tensor(a.weight_decay, "weight_decay", n, device);
  check_per_tensor(a.blend, "blend", n, device);
  check_per_tensor(a.trust, "trust_mask", n, device);
  check_scalar(a.grad_scale, "grad_scale", device);
  check_scalar(a.found_inf, "found_inf", device);
  if (r.filter != Filter::kNone) {
    TORCH_CHECK_VALUE(a.filter_coef && a.filter_coef->numel() == 2 && a.filter_coef->device() == device,
                      "filter_coef must be a 2-element tensor [alpha, gate] on the params' device");
  }
  if (a.trust_ratios) {
    check_per_tensor(*a.trust_ratios, "trust_ratios", n, device);
    TORCH_CHECK_TYPE(a.trust_ratios->is_floating_point(), "trust_ratios has dtype ", a.trust_ratios->scalar_type(),
                     ": it must be a float tensor");
  }
}

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
                        const std::optional<at::Tensor>& trust_ratios) {
  StepArgs a{params, grads, filters, exp_avgs, exp_avg_sqs, steps, lr, lr_mult, weight_decay, blend, trust_mask,
             filter_coef, grad_scale, found_inf, trust_ratios, Recipe{}};
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

void check_tensor_norms_args(at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK_TYPE(is_supported_float(tensors[i].scalar_type()), "tensors[", i, "] has dtype ",
                     tensors[i].scalar_type(), ": norms take float32, float64, bfloat16 or float16");
    TORCH_CHECK_TYPE(tensors[i].scalar_type() == tensors[0].scalar_type(), "tensors[", i, "] has dtype ",
                     tensors[i].scalar_type(), " but tensors[0] has ", tensors[0].scalar_type());
    TORCH_CHECK_TYPE(tensors[i].layout() == at::kStrided, "tensors[", i, "] is not a strided (dense) tensor");
  }
}

void check_dals_phase_args(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss,
                           at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  TORCH_CHECK_VALUE(detector.numel() == 3 && detector.scalar_type() == at::kDouble,
                    "detector must be a float64 tensor [ema, seen, phase]");
  TORCH_CHECK_VALUE(filter_coef.numel() == 2, "filter_coef must hold [alpha, gate]");
  TORCH_CHECK_VALUE(loss.numel() == 1, "loss must be a scalar, got shape ", loss.sizes());
  TORCH_CHECK_VALUE(phase_alpha.size() == 3 && phase_gate.size() == 3,
                    "phase_alpha and phase_gate must have one entry per phase (3)");
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
  m.def("tensor_norms(Tensor[] tensors) -> Tensor");
  m.def(
      "dals_phase_(Tensor(a!) detector, Tensor(b!) filter_coef, Tensor loss, *, float tau1, float tau2, "
      "float[] phase_alpha, float[] phase_gate) -> ()");
}

TORCH_LIBRARY_IMPL(layerlr, CPU, m) {
  m.impl("fused_step_", &layerlr::fused_step_<layerlr::cpu::fused_step>);
  m.impl("tensor_norms", &layerlr::tensor_norms_cpu);
  m.impl("dals_phase_", &layerlr::dals_phase_cpu);
}
