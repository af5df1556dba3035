// The shared base of every optimizer here (mirrors torch_layerlr/optim/_base.py): param groups and state as in
// torch::optim, the step in the fused engine.
//
// A subclass says which recipe a group runs (recipe()) and, per tensor, its weight decay, depth blend and
// trust-ratio switch (tensor_settings()). The base builds the engine's 1-D per-tensor inputs and calls it once
// per (recipe, device, dtype, state form) across the groups: never once per tensor, and never one param group per
// layer.
//
// Every options class has state_precision ("fp32" default, "bf16", "int8"; options_macros.h): the form of the
// groups' per-parameter state, as the Python classes keep it (state_precision.h), so that a C++ and a Python run
// are the same bit for bit in every form. save() writes the state as kept and the precision with the options;
// load() resumes an archive of the optimizer's own precision bit for bit, and converts one of another precision
// to the optimizer's (which it keeps) through float32 values, after checking it in the archive's precision, as
// the Python classes' load_state_dict does (convert_state in state_precision.h).
#pragma once

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "torch_layerlr/optim/recipe.h"

namespace torch_layerlr::optim {

/// Per-parameter state of every optimizer here: a float32 step counter (on the CPU for CPU params, as in
/// torch.optim) and the buffers its recipe names (Recipe::state_names()) in the form of the group's
/// state_precision: values in the param's dtype ("fp32"), bfloat16 ("bf16"), or uint8 codes with their float32
/// `<name>_absmax` ("int8"). Buffers a recipe does not use, and the absmax of other forms, stay undefined.
struct FusedParamState : public torch::optim::OptimizerCloneableParamState<FusedParamState> {
  TORCH_ARG(torch::Tensor, step);
  TORCH_ARG(torch::Tensor, filter);
  TORCH_ARG(torch::Tensor, exp_avg);
  TORCH_ARG(torch::Tensor, exp_avg_sq);
  TORCH_ARG(torch::Tensor, momentum_buffer);
  TORCH_ARG(torch::Tensor, filter_absmax);
  TORCH_ARG(torch::Tensor, exp_avg_absmax);
  TORCH_ARG(torch::Tensor, exp_avg_sq_absmax);
  TORCH_ARG(torch::Tensor, momentum_buffer_absmax);

 public:
  /// The buffer called `name` ("filter", "exp_avg", "exp_avg_sq" or "momentum_buffer").
  torch::Tensor& buffer(const std::string& name);
  /// Its int8 absmax ("<name>_absmax").
  torch::Tensor& absmax(const std::string& name);
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

/// (weight decay, depth blend, trust ratio on) of one parameter tensor.
struct TensorSettings {
  double weight_decay = 0.0;
  double blend = 0.0;
  bool trust = true;
};

/// Raise c10::ValueError naming `name` unless `value` lies in the interval (as Python's check_float).
double check_float(const std::string& name, double value, double low = -std::numeric_limits<double>::infinity(),
                   double high = std::numeric_limits<double>::infinity(), bool low_open = false,
                   bool high_open = false);

/// The `num_params` of the defaults' check: their per-parameter lists are checked against each group.
constexpr size_t kAnyNumParams = static_cast<size_t>(-1);

/// Raise c10::ValueError unless `values` holds one value, or one per parameter of a group of `num_params`
/// (any number for kAnyNumParams), each in [low, high].
void check_per_param(const std::string& name, const std::vector<double>& values, size_t num_params, double low,
                     double high);

/// The `index`-th entry of a per-parameter option (one value for all, or one per parameter).
inline double per_param(const std::vector<double>& values, size_t index) {
  return values.size() == 1 ? values[0] : values[index];
}

class FusedOptimizer : public torch::optim::Optimizer {
 public:
  /// Add a param group. Its options, when it has them, are the group's options as given (LibTorch's own
  /// add_param_group keeps them only for its built-in optimizers); they are checked here, and a rejected group
  /// is not added.
  void add_param_group(const torch::optim::OptimizerParamGroup& param_group);

  /// One optimization step. `closure` re-evaluates the model and returns the loss, which step returns.
  torch::Tensor step(LossClosure closure = nullptr) override;

  /// Options of every group, the per-parameter state by (group, position) and any global state: a resume
  /// from load() is bit-exact. load() checks everything before it changes anything; a group's state saved in
  /// another state_precision is converted to the group's own, which the group keeps.
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  /// The per-tensor trust ratios of the last step (recipes with a trust ratio): (params, float64 ratios) per
  /// engine call.
  const std::vector<std::pair<std::vector<torch::Tensor>, torch::Tensor>>& trust_ratios() const {
    return trust_ratios_;
  }

 protected:
  /// Takes the groups with their own options (see add_param_group); subclass constructors then call
  /// check_all_groups().
  FusedOptimizer(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                 std::unique_ptr<torch::optim::OptimizerOptions> defaults);

  // ---- what subclasses provide ---------------------------------------------------------------------------
  /// The class name, for error messages.
  virtual const char* name() const = 0;
  /// Raise c10::ValueError naming the option unless `options` is valid for a group of `num_params` tensors.
  virtual void check_options(const torch::optim::OptimizerOptions& options, size_t num_params) const = 0;
  virtual Recipe recipe(const torch::optim::OptimizerOptions& group) const = 0;
  virtual TensorSettings tensor_settings(const torch::optim::OptimizerOptions& group, size_t index,
                                         const torch::Tensor& param) const = 0;
  virtual const std::vector<double>& lr_mult(const torch::optim::OptimizerOptions& group) const = 0;
  virtual const std::string& state_precision(const torch::optim::OptimizerOptions& group) const = 0;
  /// Set a group's state_precision (load() keeps the optimizer's own over the archive's).
  virtual void set_state_precision(torch::optim::OptimizerOptions& group, const std::string& precision) const = 0;
  virtual double group_lr(const torch::optim::OptimizerOptions& group) const { return group.get_lr(); }
  virtual std::optional<torch::Tensor> filter_coef(const torch::optim::OptimizerOptions& group,
                                                   const torch::Device& device) const {
    return std::nullopt;
  }
  /// Groups with equal keys (and recipes) share filter_coef() and so may share an engine call.
  virtual std::optional<double> filter_key(const torch::optim::OptimizerOptions& group) const { return std::nullopt; }
  /// Global (not per-parameter) state, saved under "global_state" (DALS's schedule and loss phase).
  virtual void save_global(torch::serialize::OutputArchive& archive) const {}
  /// Read and check the global state, returning a function that installs it (called once all checks passed).
  virtual std::function<void()> load_global(torch::serialize::InputArchive& archive) { return [] {}; }

  /// Check the defaults and every group (subclass constructors call it: virtual calls need a built object).
  void check_all_groups() const;
  /// Check every group and engine call and return the step's engine calls (one per group, device and dtype) with
  /// all their inputs, and the state they create (kept aside until the engine took the step). Changes nothing.
  struct Bucket;
  struct PreparedStep;
  PreparedStep prepare_step();
  /// Run the prepared engine calls; their new state joins state() once the engine has taken the step (a refused
  /// first call leaves no trace), as the Python base's _run_calls.
  void run(PreparedStep& step);

 private:
  void add_group_unchecked(const torch::optim::OptimizerParamGroup& param_group);
  std::vector<Bucket> plan(std::vector<std::pair<void*, std::unique_ptr<FusedParamState>>>& new_state);
  torch::Tensor call_lr(const Bucket& bucket) const;
  std::vector<std::pair<std::vector<torch::Tensor>, torch::Tensor>> trust_ratios_;
};

struct FusedOptimizer::Bucket {
  std::vector<size_t> group_ids;  // the groups of the call, in order, and how many tensors each has
  std::vector<size_t> counts;
  Recipe recipe;
  torch::Device device;
  StepTensors tensors;  // tensors.state_precision: the form of the call's state
  StepInputs inputs;
};

struct FusedOptimizer::PreparedStep {
  std::vector<Bucket> buckets;
  std::vector<std::pair<void*, std::unique_ptr<FusedParamState>>> new_state;
};

}  // namespace torch_layerlr::optim
