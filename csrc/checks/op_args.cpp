// The argument checks of the layerlr ops, shared by every backend (declared in engine/op_entry.h and
// engine/step_args.h). NOTE: [trust nothing at the op boundary]
// Every op validates all of its arguments before it touches memory: list lengths, exact shapes (a per-tensor
// input is 1-D with one entry per tensor; a scalar holds one element), dtypes, layouts, devices (a meta
// tensor among real ones is an error, not a silent no-op), the memory each written tensor may use (checks/
// memory.h), and, on the host, the values later used as indices or counts. An error therefore leaves every
// tensor as it was. Inputs the recipe does not use are checked for shape but never read.
#include <c10/util/Exception.h>

#include <vector>

#include "../engine/op_entry.h"
#include "../engine/step_args.h"
#include "memory.h"

namespace layerlr {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

ArgName item(const char* list, size_t i) { return {list, static_cast<int64_t>(i)}; }

void check_defined_strided(const at::Tensor& x, const ArgName& name) {
  TORCH_CHECK_VALUE(x.defined(), name, " is undefined");
  TORCH_CHECK_TYPE(x.layout() == at::kStrided, name, " has layout ", x.layout(),
                   ": the fused step takes strided (dense) tensors only (no sparse gradients)");
}

// A tensor whose values the engine reads as numbers (per-tensor inputs, lr, grad_scale, ...): any real dtype.
void check_real(const at::Tensor& x, const ArgName& name) {
  TORCH_CHECK_TYPE(!x.is_complex(), name, " has dtype ", x.scalar_type(), ": expected a real tensor");
}

void check_device(const at::Tensor& x, const ArgName& name, const at::Device& device) {
  TORCH_CHECK_VALUE(x.device() == device, name, " is on ", x.device(), " but the params are on ", device,
                    ": a fused call takes tensors on one device",
                    x.is_meta() || device.is_meta() ? " (meta tensors cannot be mixed with real ones)" : "");
}

void check_companion(const at::Tensor& p, const at::Tensor& x, const char* list, size_t i) {
  const ArgName name = item(list, i);
  check_defined_strided(x, name);
  check_device(x, name, p.device());
  TORCH_CHECK_TYPE(x.scalar_type() == p.scalar_type(), name, " has dtype ", x.scalar_type(), " but params[", i,
                   "] has ", p.scalar_type());
  TORCH_CHECK_VALUE(x.sizes() == p.sizes(), name, " has shape ", x.sizes(), " but params[", i, "] has ",
                    p.sizes());
}

void check_list_length(at::TensorList list, const char* name, size_t expected, const char* why);

const char* precision_name(StatePrecision p) {
  return p == StatePrecision::kFull ? "fp32" : p == StatePrecision::kBf16 ? "bf16" : "int8";
}

// A state tensor of a low-precision call: bfloat16 values or uint8 codes, shaped like its param, contiguous
// (its blocks are runs of the row-major order: NOTE: [state precision]).
void check_low_state(const at::Tensor& p, const at::Tensor& x, const char* list, size_t i, StatePrecision prec) {
  const ArgName name = item(list, i);
  check_defined_strided(x, name);
  check_device(x, name, p.device());
  const at::ScalarType want = prec == StatePrecision::kBf16 ? at::kBFloat16 : at::kByte;
  TORCH_CHECK_TYPE(x.scalar_type() == want, name, " has dtype ", x.scalar_type(), ": state_precision='",
                   precision_name(prec), "' keeps state as ", want);
  TORCH_CHECK_VALUE(x.sizes() == p.sizes(), name, " has shape ", x.sizes(), " but params[", i, "] has ",
                    p.sizes());
  TORCH_CHECK_VALUE(x.is_contiguous(), name, " is not contiguous: low-precision state must be");
}

// The int8 absmax of one state list: one float32 [ceil(numel / kQuantBlock)] tensor per state tensor, none for
// the other precisions.
void check_scales(const StepArgs& a, at::TensorList scales, at::TensorList states, const char* list,
                  const at::Device& device) {
  if (a.precision != StatePrecision::kInt8) {
    TORCH_CHECK_VALUE(scales.empty(), list, " has ", scales.size(), " tensors, expected none (state_precision='",
                      precision_name(a.precision), "' keeps no scales)");
    return;
  }
  check_list_length(scales, list, states.size(), "one per state tensor of the list it scales");
  for (size_t i = 0; i < scales.size(); ++i) {
    const ArgName name = item(list, i);
    const at::Tensor& x = scales[i];
    check_defined_strided(x, name);
    check_device(x, name, device);
    TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, name, " has dtype ", x.scalar_type(),
                     ": int8 state keeps float32 absmax values");
    const int64_t blocks = quant_blocks(a.params[i].numel());
    TORCH_CHECK_VALUE(x.dim() == 1 && x.size(0) == blocks && x.is_contiguous(), name,
                      " must be a contiguous 1-D tensor of shape [", blocks, "] (one absmax per ", kQuantBlock,
                      " elements of params[", i, "]), got shape ", x.sizes());
  }
}

void check_list_length(at::TensorList list, const char* name, size_t expected, const char* why) {
  TORCH_CHECK_VALUE(list.size() == expected, name, " has ", list.size(), " tensors, expected ", expected, " (",
                    why, ")");
}

void check_per_tensor(const at::Tensor& x, const char* name, size_t n, const at::Device& device) {
  check_defined_strided(x, name);
  TORCH_CHECK_VALUE(x.dim() == 1 && static_cast<size_t>(x.size(0)) == n, name,
                    " must be a 1-D tensor with one entry per parameter (shape [", n, "]), got shape ", x.sizes());
  check_real(x, name);
  check_device(x, name, device);
}

void check_scalar(const at::Tensor& x, const char* name, const at::Device& device) {
  check_defined_strided(x, name);
  TORCH_CHECK_VALUE(x.numel() == 1, name, " must hold one element, got shape ", x.sizes());
  check_real(x, name);
  check_device(x, name, device);
}

void check_vector(const at::Tensor& x, const char* name, int64_t length, const at::Device& device,
                  const char* what) {
  check_defined_strided(x, name);
  TORCH_CHECK_VALUE(x.dim() == 1 && x.size(0) == length, name, " must have shape [", length, "] (", what,
                    "), got shape ", x.sizes());
  TORCH_CHECK_TYPE(x.is_floating_point(), name, " has dtype ", x.scalar_type(), ": expected a float tensor");
  check_device(x, name, device);
}

void add_list(std::vector<NamedTensor>& out, at::TensorList list, const char* name, bool written,
              bool copied_if_overlapping = false) {
  for (size_t i = 0; i < list.size(); ++i) out.push_back({&list[i], item(name, i), written, copied_if_overlapping});
}

// NOTE: [split trust step] in engine/step_args.h: the norms and update calls take sq_norms, float64 [n, 2] on the
// params' device; the one-call step takes none.
void check_split_args(const StepArgs& a, size_t n, const at::Device& device) {
  if (a.pass == TrustPass::kAll) {
    TORCH_CHECK_VALUE(!a.sq_norms, "sq_norms is given but trust_pass is 'all': only the 'norms' and 'update' calls of "
                      "a split step take it");
    return;
  }
  const char* pass = a.pass == TrustPass::kNorms ? "norms" : "update";
  TORCH_CHECK_VALUE(a.recipe.two_pass(), "trust_pass='", pass, "' splits a step with a trust ratio, but trust is "
                    "'none': an element-wise recipe runs in one call (trust_pass='all')");
  TORCH_CHECK_VALUE(a.sq_norms.has_value(), "trust_pass='", pass, "' needs sq_norms ([n, 2] float64)");
  const at::Tensor& sq = *a.sq_norms;
  check_defined_strided(sq, "sq_norms");
  TORCH_CHECK_VALUE(sq.dim() == 2 && static_cast<size_t>(sq.size(0)) == n && sq.size(1) == 2,
                    "sq_norms must have shape [", n, ", 2] (per parameter: squared norms of the param and of its "
                    "direction), got shape ", sq.sizes());
  TORCH_CHECK_TYPE(sq.scalar_type() == at::kDouble, "sq_norms has dtype ", sq.scalar_type(),
                   ": it must be float64");
  check_device(sq, "sq_norms", device);
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

  // The device of the call: the params', or the lr's for an empty list (whose inputs must still be right).
  const at::Device device = n ? a.params[0].device() : a.lr.device();
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = a.params[i];
    const ArgName name = item("params", i);
    check_defined_strided(p, name);
    TORCH_CHECK_TYPE(is_supported_float(p.scalar_type()), name, " has dtype ", p.scalar_type(),
                     ": the fused step supports float32, float64, bfloat16 and float16 params (complex params "
                     "go in as their real view)");
    check_device(p, name, device);
    TORCH_CHECK_TYPE(p.scalar_type() == a.params[0].scalar_type(), name, " has dtype ", p.scalar_type(),
                     " but params[0] has ", a.params[0].scalar_type(), ": a fused call takes one dtype");
    check_companion(p, a.grads[i], "grads", i);
    const bool low = a.precision != StatePrecision::kFull;
    auto check_state = [&](at::TensorList list, const char* name) {
      if (list.empty()) return;
      if (low) {
        check_low_state(p, list[i], name, i, a.precision);
      } else {
        check_companion(p, list[i], name, i);
      }
    };
    check_state(a.filters, "filters");
    check_state(a.exp_avgs, "exp_avgs");
    check_state(a.exp_avg_sqs, "exp_avg_sqs");
    const at::Tensor& s = a.steps[i];
    const ArgName step = item("steps", i);
    check_defined_strided(s, step);
    TORCH_CHECK_VALUE(s.numel() == 1, step, " must hold one element, got shape ", s.sizes());
    TORCH_CHECK_TYPE(s.is_floating_point(), step, " has dtype ", s.scalar_type(),
                     ": step counts are float tensors (float32 as in torch.optim)");
    TORCH_CHECK_VALUE(s.device() == device || (s.is_cpu() && !device.is_meta()), step, " is on ", s.device(),
                      " but params[", i, "] is on ", device);
  }
  // lr: one value for the call, or one per tensor (the groups of one recipe batched into one call).
  if (a.lr.dim() == 1 && a.lr.numel() != 1) {
    check_per_tensor(a.lr, "lr", n, device);
  } else {
    check_scalar(a.lr, "lr", device);
  }
  check_per_tensor(a.lr_mult, "lr_mult", n, device);
  check_per_tensor(a.weight_decay, "weight_decay", n, device);
  check_per_tensor(a.blend, "blend", n, device);
  check_per_tensor(a.trust, "trust_mask", n, device);
  if (a.grad_scale) check_scalar(*a.grad_scale, "grad_scale", device);
  if (a.found_inf) check_scalar(*a.found_inf, "found_inf", device);
  TORCH_CHECK_VALUE(r.filter == Filter::kNone || a.filter_coef.has_value(),
                    "filter_coef [alpha, gate] is required by filter='", r.filter == Filter::kBlend ? "blend" : "grokfast",
                    "'");
  if (a.filter_coef) check_vector(*a.filter_coef, "filter_coef", 2, device, "[alpha, gate]");
  if (a.trust_ratios) {
    check_per_tensor(*a.trust_ratios, "trust_ratios", n, device);
    TORCH_CHECK_TYPE(a.trust_ratios->is_floating_point(), "trust_ratios has dtype ", a.trust_ratios->scalar_type(),
                     ": it must be a float tensor");
  }

  check_split_args(a, n, device);
  check_scales(a, a.filter_scales, a.filters, "filter_scales", device);
  check_scales(a, a.exp_avg_scales, a.exp_avgs, "exp_avg_scales", device);
  check_scales(a, a.exp_avg_sq_scales, a.exp_avg_sqs, "exp_avg_sq_scales", device);

  // Memory: what the step writes must be its own (NOTE: [conservative overlap] in checks/memory.h).
  std::vector<NamedTensor> all;
  all.reserve(9 * n + 8);
  add_list(all, a.params, "params", true);
  add_list(all, a.grads, "grads", r.writes_grads(), /*copied_if_overlapping=*/true);
  add_list(all, a.filters, "filters", true);
  add_list(all, a.exp_avgs, "exp_avgs", true);
  add_list(all, a.exp_avg_sqs, "exp_avg_sqs", true);
  add_list(all, a.steps, "steps", true);
  add_list(all, a.filter_scales, "filter_scales", true);
  add_list(all, a.exp_avg_scales, "exp_avg_scales", true);
  add_list(all, a.exp_avg_sq_scales, "exp_avg_sq_scales", true);
  all.push_back({&a.lr, "lr", false});
  all.push_back({&a.lr_mult, "lr_mult", false});
  all.push_back({&a.weight_decay, "weight_decay", false});
  all.push_back({&a.blend, "blend", false});
  all.push_back({&a.trust, "trust_mask", false});
  if (a.filter_coef) all.push_back({&*a.filter_coef, "filter_coef", false});
  if (a.grad_scale) all.push_back({&*a.grad_scale, "grad_scale", false});
  if (a.found_inf) all.push_back({&*a.found_inf, "found_inf", false});
  if (a.trust_ratios) all.push_back({&*a.trust_ratios, "trust_ratios", a.pass != TrustPass::kNorms});
  if (a.sq_norms) all.push_back({&*a.sq_norms, "sq_norms", a.pass == TrustPass::kNorms});
  check_memory(all);
}

void check_tensor_norms_args(at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ArgName name = item("tensors", i);
    check_defined_strided(tensors[i], name);
    TORCH_CHECK_TYPE(is_supported_float(tensors[i].scalar_type()), name, " has dtype ", tensors[i].scalar_type(),
                     ": norms take float32, float64, bfloat16 or float16");
    TORCH_CHECK_TYPE(tensors[i].scalar_type() == tensors[0].scalar_type(), name, " has dtype ",
                     tensors[i].scalar_type(), " but tensors[0] has ", tensors[0].scalar_type());
    check_device(tensors[i], name, tensors[0].device());
  }
}

void check_dals_phase_args(const at::Tensor& detector, const at::Tensor& filter_coef, const at::Tensor& loss,
                           at::ArrayRef<double> phase_alpha, at::ArrayRef<double> phase_gate) {
  check_defined_strided(detector, "detector");
  TORCH_CHECK_VALUE(detector.dim() == 1 && detector.size(0) == 3 && detector.scalar_type() == at::kDouble,
                    "detector must be a float64 tensor of shape [3] ([loss EMA, losses seen, phase]), got ",
                    detector.scalar_type(), " of shape ", detector.sizes());
  check_vector(filter_coef, "filter_coef", 2, filter_coef.device(), "[alpha, gate]");
  TORCH_CHECK_VALUE(filter_coef.device() == detector.device(), "filter_coef is on ", filter_coef.device(),
                    " but detector is on ", detector.device());
  check_defined_strided(loss, "loss");
  TORCH_CHECK_VALUE(loss.numel() == 1, "loss must be a scalar, got shape ", loss.sizes());
  check_real(loss, "loss");
  TORCH_CHECK_VALUE(loss.is_meta() == detector.is_meta(), "loss is on ", loss.device(), " and detector on ",
                    detector.device(), ": meta tensors cannot be mixed with real ones");
  TORCH_CHECK_VALUE(phase_alpha.size() == 3 && phase_gate.size() == 3,
                    "phase_alpha and phase_gate must have one entry per phase (3)");
  check_memory({{&detector, "detector", true}, {&filter_coef, "filter_coef", true}, {&loss, "loss", false}});
}

}  // namespace layerlr
