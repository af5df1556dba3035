// The shared base (torch_layerlr/optim/_base.py in C++): state, per-tensor engine inputs, buckets, save/load.
#include "torch_layerlr/optim/fused_optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <tuple>

#include "torch_layerlr/optim/state_precision.h"

namespace torch_layerlr::optim {

// ---- checks ----------------------------------------------------------------------------------------------
double check_float(const std::string& name, double value, double low, double high, bool low_open, bool high_open) {
  const bool below = low_open ? value <= low : value < low;
  const bool above = high_open ? value >= high : value > high;
  TORCH_CHECK_VALUE(!std::isnan(value) && !below && !above, "Invalid ", name, ": ", value, " (expected a value in ",
                    low_open ? "(" : "[", low, ", ", high, high_open ? ")" : "]", ")");
  return value;
}

void check_per_param(const std::string& name, const std::vector<double>& values, size_t num_params, double low,
                     double high) {
  TORCH_CHECK_VALUE(!values.empty(), name, " is empty (give one value, or one per parameter)");
  TORCH_CHECK_VALUE(values.size() == 1 || num_params == kAnyNumParams || values.size() == num_params, name, " has ",
                    values.size(),
                    " entries but its param group has ", num_params,
                    " parameters (give one value, or one per parameter)");
  for (size_t i = 0; i < values.size(); ++i) check_float(name + "[" + std::to_string(i) + "]", values[i], low, high);
}

// ---- per-parameter state ---------------------------------------------------------------------------------
torch::Tensor& FusedParamState::buffer(const std::string& name) {
  if (name == "filter") return filter_;
  if (name == "exp_avg") return exp_avg_;
  if (name == "exp_avg_sq") return exp_avg_sq_;
  if (name == "momentum_buffer") return momentum_buffer_;
  TORCH_CHECK_VALUE(false, "no state buffer named ", name);
}

torch::Tensor& FusedParamState::absmax(const std::string& name) {
  if (name == "filter") return filter_absmax_;
  if (name == "exp_avg") return exp_avg_absmax_;
  if (name == "exp_avg_sq") return exp_avg_sq_absmax_;
  if (name == "momentum_buffer") return momentum_buffer_absmax_;
  TORCH_CHECK_VALUE(false, "no state buffer named ", name);
}

static const char* const kBufferNames[] = {"filter", "exp_avg", "exp_avg_sq", "momentum_buffer"};

// The state as kept: int8 buffers as their codes and "<name>_absmax" (the keys of the Python state_dict).
void FusedParamState::serialize(torch::serialize::OutputArchive& archive) const {
  auto& self = const_cast<FusedParamState&>(*this);
  if (step_.defined()) archive.write("step", step_);
  for (const char* name : kBufferNames) {
    const torch::Tensor& t = self.buffer(name);
    if (t.defined()) archive.write(name, t);
    const torch::Tensor& absmax = self.absmax(name);
    if (absmax.defined()) archive.write(std::string(name) + "_absmax", absmax);
  }
}

void FusedParamState::serialize(torch::serialize::InputArchive& archive) {
  archive.try_read("step", step_);
  for (const char* name : kBufferNames) {
    archive.try_read(name, buffer(name));
    archive.try_read(std::string(name) + "_absmax", absmax(name));
  }
}

// ---- the step --------------------------------------------------------------------------------------------
namespace {

// A float32 step counter holding `value`: on the CPU for CPU params (as torch.optim), on the param's device
// otherwise, where the fused CUDA kernels read and advance it in place.
torch::Tensor new_step(double value, const torch::Device& device) {
  return at::full({}, value, at::TensorOptions().dtype(at::kFloat).device(device));
}

// The engine's 1-D float64 per-tensor inputs, made on the CPU and copied without waiting for a device.
torch::Tensor per_tensor(const std::vector<double>& values, const torch::Device& device) {
  torch::Tensor t = at::tensor(values, at::TensorOptions().dtype(at::kDouble));
  return device.is_cpu() ? t : t.to(device, /*non_blocking=*/true);
}

}  // namespace

// ---- param groups ----------------------------------------------------------------------------------------
FusedOptimizer::FusedOptimizer(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                               std::unique_ptr<torch::optim::OptimizerOptions> defaults)
    : Optimizer(std::vector<torch::optim::OptimizerParamGroup>{}, std::move(defaults)) {
  for (const auto& group : param_groups) add_group_unchecked(group);
}

void FusedOptimizer::add_group_unchecked(const torch::optim::OptimizerParamGroup& param_group) {
  const size_t g = param_groups_.size();
  const auto& params = param_group.params();
  for (size_t i = 0; i < params.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      TORCH_CHECK_VALUE(!params[i].is_same(params[j]), "param group ", g, " holds the same tensor twice (params ", j,
                        " and ", i, ")");
    }
    for (size_t h = 0; h < g; ++h) {
      for (const auto& q : param_groups_[h].params()) {
        TORCH_CHECK_VALUE(!params[i].is_same(q), "param ", i, " of param group ", g, " is already in param group ", h,
                          ": a parameter belongs to one group");
      }
    }
  }
  Optimizer::add_param_group(param_group);  // the leaf checks; the group gets a copy of the defaults
  if (param_group.has_options()) param_groups_.back().set_options(param_group.options().clone());
}

void FusedOptimizer::add_param_group(const torch::optim::OptimizerParamGroup& param_group) {
  add_group_unchecked(param_group);
  try {
    check_options(param_groups_.back().options(), param_groups_.back().params().size());
  } catch (...) {
    param_groups_.pop_back();  // a rejected group must not stay behind
    throw;
  }
}

void FusedOptimizer::check_all_groups() const {
  check_options(defaults(), kAnyNumParams);  // the defaults' per-parameter lists are checked per group
  for (const auto& group : param_groups_) check_options(group.options(), group.params().size());
}

FusedOptimizer::PreparedStep FusedOptimizer::prepare_step() {
  // NOTE: [atomic steps] (as the Python base): plan every group with new state made on the side and check every
  // engine call when there are several (one call is checked by the op itself before it touches memory). The new
  // state is committed by run(), once the engine has taken the step.
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    check_options(group.options(), group.params().size());
    for (size_t i = 0; i < group.params().size(); ++i) {
      const torch::Tensor& p = group.params()[i];
      const torch::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      TORCH_CHECK(!grad.is_sparse(), name(), " does not support sparse gradients (param ", i, " of group ", g, ")");
      TORCH_CHECK(!p.is_complex() && !grad.is_complex(), name(),
                  " does not support complex parameters or gradients (param ", i, " of group ", g, ")");
    }
  }
  std::vector<std::pair<void*, std::unique_ptr<FusedParamState>>> new_state;
  std::vector<Bucket> buckets = plan(new_state);
  for (Bucket& b : buckets) {
    b.inputs.lr = call_lr(b);
    b.inputs.filter_coef = filter_coef(param_groups_[b.group_ids[0]].options(), b.device);
    if (b.recipe.trust != "none") {
      b.inputs.trust_ratios = at::ones({static_cast<int64_t>(b.tensors.params.size())},
                                       at::TensorOptions().dtype(at::kDouble).device(b.device));
    }
  }
  if (buckets.size() > 1) {
    for (const Bucket& b : buckets) fused_step_check(b.tensors, b.recipe, b.inputs);
  }
  return {std::move(buckets), std::move(new_state)};
}

// The engine's lr: one value, or one per tensor when the call's groups differ in lr (as the Python base).
torch::Tensor FusedOptimizer::call_lr(const Bucket& b) const {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(b.device);
  std::vector<double> lrs;
  for (size_t g : b.group_ids) lrs.push_back(group_lr(param_groups_[g].options()));
  if (std::all_of(lrs.begin(), lrs.end(), [&](double lr) { return lr == lrs[0]; })) return at::full({}, lrs[0], f64);
  std::vector<double> per_tensor_lr;
  for (size_t k = 0; k < lrs.size(); ++k) per_tensor_lr.insert(per_tensor_lr.end(), b.counts[k], lrs[k]);
  return per_tensor(per_tensor_lr, b.device);
}

std::vector<FusedOptimizer::Bucket> FusedOptimizer::plan(
    std::vector<std::pair<void*, std::unique_ptr<FusedParamState>>>& new_state) {
  // One engine call per (recipe, device, dtype, filter key, state form) across the groups, in order of first
  // appearance; within a call the tensors keep the groups' order (as the Python base's _BucketBuilder): a tensor's
  // position in its call keys the stochastic rounding of bf16 state, so both sides must agree on it.
  struct Builder {
    Bucket bucket;
    std::optional<double> filter_key;
    std::vector<double> lr_mult, weight_decay, blend, trust;
  };
  std::vector<Builder> builders;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    const auto& options = group.options();
    const Recipe r = recipe(options);
    const std::optional<double> key = filter_key(options);
    const std::vector<std::string> names = r.state_names();
    const std::vector<double>& mult = lr_mult(options);
    for (size_t i = 0; i < group.params().size(); ++i) {
      const torch::Tensor& p = group.params()[i];
      if (!p.grad().defined()) continue;
      const std::string precision = tensor_precision(state_precision(options), p);
      auto it = std::find_if(builders.begin(), builders.end(), [&](const Builder& x) {
        return x.bucket.recipe == r && x.bucket.device == p.device() &&
               x.bucket.tensors.params[0].scalar_type() == p.scalar_type() && x.filter_key == key &&
               x.bucket.tensors.state_precision == precision;
      });
      if (it == builders.end()) {
        builders.push_back(Builder{Bucket{{}, {}, r, p.device(), {}, {}}, key, {}, {}, {}, {}});
        it = std::prev(builders.end());
        it->bucket.tensors.state_precision = precision;
      }
      Bucket& b = it->bucket;
      if (b.group_ids.empty() || b.group_ids.back() != g) {
        b.group_ids.push_back(g);
        b.counts.push_back(0);
      }
      ++b.counts.back();
      // The param's state as it will be after this step's commit: the stored one, or a copy completed on the side.
      void* key_ptr = p.unsafeGetTensorImpl();
      auto found = state_.find(key_ptr);
      const FusedParamState* stored =
          found == state_.end() ? nullptr : static_cast<const FusedParamState*>(found->second.get());
      auto state = stored ? std::make_unique<FusedParamState>(*stored) : std::make_unique<FusedParamState>();
      bool changed = stored == nullptr;
      if (!state->step().defined()) {
        state->step(new_step(0.0, p.device()));
        changed = true;
      } else if (state->step().device() != p.device()) {
        state->step(state->step().to(p.device()));
        changed = true;
      }
      for (const std::string& n : names) {
        torch::Tensor& buf = state->buffer(n);
        if (!buf.defined()) {
          buf = new_state_buffer(p, precision);
          if (precision == "int8") state->absmax(n) = new_absmax(p);
          changed = true;
        } else {  // state kept in another form (the group's state_precision changed since) is refused here
          check_state_form(g, i, n, buf, state->absmax(n), p, precision, /*check_values=*/false);
        }
      }
      b.tensors.params.push_back(p);
      b.tensors.grads.push_back(p.grad());
      const bool int8 = precision == "int8";
      if (r.filter != "none") {
        b.tensors.filters.push_back(state->filter());
        if (int8) b.tensors.filter_scales.push_back(state->filter_absmax());
      }
      if (r.moment == "adam") {
        b.tensors.exp_avgs.push_back(state->exp_avg());
        b.tensors.exp_avg_sqs.push_back(state->exp_avg_sq());
        if (int8) {
          b.tensors.exp_avg_scales.push_back(state->exp_avg_absmax());
          b.tensors.exp_avg_sq_scales.push_back(state->exp_avg_sq_absmax());
        }
      } else if (r.momentum != 0.0) {
        b.tensors.exp_avgs.push_back(state->momentum_buffer());
        if (int8) b.tensors.exp_avg_scales.push_back(state->momentum_buffer_absmax());
      }
      b.tensors.steps.push_back(state->step());
      if (changed) new_state.emplace_back(key_ptr, std::move(state));
      it->lr_mult.push_back(per_param(mult, i));
      const TensorSettings s = tensor_settings(options, i, p);
      it->weight_decay.push_back(s.weight_decay);
      it->blend.push_back(s.blend);
      it->trust.push_back(s.trust ? 1.0 : 0.0);
    }
  }
  std::vector<Bucket> buckets;
  for (Builder& x : builders) {
    Bucket& b = x.bucket;
    b.inputs.lr_mult = per_tensor(x.lr_mult, b.device);
    b.inputs.weight_decay = per_tensor(x.weight_decay, b.device);
    b.inputs.blend = per_tensor(x.blend, b.device);
    b.inputs.trust_mask = per_tensor(x.trust, b.device);
    buckets.push_back(std::move(b));
  }
  return buckets;
}

void FusedOptimizer::run(PreparedStep& step) {
  trust_ratios_.clear();
  bool ran = false;
  auto commit = [&] {
    if (!ran) return;
    for (auto& [key, state] : step.new_state) state_[key] = std::move(state);
    step.new_state.clear();
  };
  try {
    for (Bucket& b : step.buckets) {
      fused_step_(b.tensors, b.recipe, b.inputs);
      ran = true;
      if (b.inputs.trust_ratios) trust_ratios_.emplace_back(b.tensors.params, *b.inputs.trust_ratios);
    }
  } catch (...) {
    commit();
    throw;
  }
  commit();
}

torch::Tensor FusedOptimizer::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  PreparedStep prepared = prepare_step();
  run(prepared);
  return loss;
}

// ---- save / load -----------------------------------------------------------------------------------------
// Layout: param_groups/size; param_groups/<g>/{size, options, state/<i>} (state by position, so a new
// optimizer over new parameter tensors of the same shapes resumes); global_state (the subclass's, e.g. DALS's).
void FusedOptimizer::save(torch::serialize::OutputArchive& archive) const {
  archive.write("format", c10::IValue(std::string("torch_layerlr.optim/1")));
  archive.write("param_groups/size", c10::IValue(static_cast<int64_t>(param_groups_.size())));
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    torch::serialize::OutputArchive group_archive(archive.compilation_unit());
    group_archive.write("size", c10::IValue(static_cast<int64_t>(group.params().size())));
    torch::serialize::OutputArchive options_archive(archive.compilation_unit());
    group.options().serialize(options_archive);
    group_archive.write("options", options_archive);
    for (size_t i = 0; i < group.params().size(); ++i) {
      auto it = state_.find(group.params()[i].unsafeGetTensorImpl());
      if (it == state_.end()) continue;
      torch::serialize::OutputArchive state_archive(archive.compilation_unit());
      it->second->serialize(state_archive);
      group_archive.write("state/" + std::to_string(i), state_archive);
    }
    archive.write("param_groups/" + std::to_string(g), group_archive);
  }
  torch::serialize::OutputArchive global_archive(archive.compilation_unit());
  save_global(global_archive);
  archive.write("global_state", global_archive);
}

namespace {

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue v;
  TORCH_CHECK_VALUE(archive.try_read(key, v) && v.isInt(), "the archive has no integer ", key);
  return v.toInt();
}

// A loaded state is untrusted: its step must be a one-element float tensor and each buffer must be in the form
// `saved` of the archive's state_precision (state_precision.h: dtype and shape, and for int8 the absmax's shape and
// values). Each buffer then takes the optimizer's form `form`: fp32 buffers the param's dtype and device, the step
// its device (as torch.optim's load); low-precision buffers of that form stay as saved (a resume is bit-exact),
// moved to the param's device and made contiguous as the engine takes them; a buffer of another form is converted
// (convert_state, as the Python classes' load).
void check_loaded_state(FusedParamState& state, const torch::Tensor& p, const std::string& saved,
                        const std::string& form, size_t g, size_t i) {
  const std::string where = "state of param " + std::to_string(i) + " of group " + std::to_string(g) + ": ";
  const torch::Tensor& step = state.step();
  TORCH_CHECK_VALUE(step.defined() && step.numel() == 1 && step.is_floating_point(), where,
                    "step must be a one-element float tensor");
  if (step.device() != p.device()) state.step(step.to(p.device()));
  for (const char* name : kBufferNames) {
    torch::Tensor& buf = state.buffer(name);
    torch::Tensor& absmax = state.absmax(name);
    if (!buf.defined()) {
      TORCH_CHECK_VALUE(!absmax.defined(), where, name, "_absmax is present without ", name);
      continue;
    }
    check_state_form(g, i, name, buf, absmax, p, saved, /*check_values=*/true);
    if (saved != form) {
      std::tie(buf, absmax) = convert_state(name, buf, absmax, p, saved, form);
    } else if (form == "fp32") {
      if (buf.scalar_type() != p.scalar_type() || buf.device() != p.device()) buf = buf.to(p.device(), p.scalar_type());
    } else {
      buf = buf.to(p.device()).contiguous();
      if (absmax.defined()) absmax = absmax.to(p.device()).contiguous();
    }
  }
}

}  // namespace

void FusedOptimizer::load(torch::serialize::InputArchive& archive) {
  c10::IValue format;
  TORCH_CHECK_VALUE(archive.try_read("format", format) && format.isString() &&
                        format.toStringRef() == "torch_layerlr.optim/1",
                    "not a torch_layerlr optimizer archive (no format torch_layerlr.optim/1)");
  const int64_t num_groups = read_int(archive, "param_groups/size");
  TORCH_CHECK_VALUE(num_groups == static_cast<int64_t>(param_groups_.size()), "the archive has ", num_groups,
                    " param groups but the optimizer has ", param_groups_.size());
  // Read and check everything first; nothing changes until all of it passed.
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options(num_groups);
  std::vector<std::pair<void*, std::unique_ptr<FusedParamState>>> states;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& params = param_groups_[g].params();
    torch::serialize::InputArchive group_archive;
    archive.read("param_groups/" + std::to_string(g), group_archive);
    const int64_t size = read_int(group_archive, "size");
    TORCH_CHECK_VALUE(size == static_cast<int64_t>(params.size()), "param group ", g, " of the archive has ", size,
                      " params but the optimizer's has ", params.size());
    torch::serialize::InputArchive options_archive;
    group_archive.read("options", options_archive);
    options[g] = param_groups_[g].options().clone();
    options[g]->serialize(options_archive);
    check_options(*options[g], params.size());
    // The optimizer keeps its own state_precision (as the Python classes): the archive's state is checked in the
    // archive's precision, then converted.
    const std::string saved = state_precision(*options[g]);
    const std::string precision = state_precision(param_groups_[g].options());
    set_state_precision(*options[g], precision);
    for (size_t i = 0; i < params.size(); ++i) {
      torch::serialize::InputArchive state_archive;
      if (!group_archive.try_read("state/" + std::to_string(i), state_archive)) continue;
      auto state = std::make_unique<FusedParamState>();
      state->serialize(state_archive);
      check_loaded_state(*state, params[i], tensor_precision(saved, params[i]), tensor_precision(precision, params[i]),
                         g, i);
      states.emplace_back(params[i].unsafeGetTensorImpl(), std::move(state));
    }
  }
  torch::serialize::InputArchive global_archive;
  archive.read("global_state", global_archive);
  std::function<void()> install_global = load_global(global_archive);

  for (size_t g = 0; g < param_groups_.size(); ++g) param_groups_[g].set_options(std::move(options[g]));
  state_.clear();
  for (auto& [key, state] : states) state_[key] = std::move(state);
  install_global();
}

}  // namespace torch_layerlr::optim
