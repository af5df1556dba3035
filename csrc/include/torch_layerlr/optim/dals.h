// DALS: depth-aware layer scaling (Yao et al., arXiv:2604.27295), the published algorithm and its variants
// (torch_layerlr/optim/dals.py: the same recipe, schedule, loss-phase detector and defaults).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/options_macros.h"

namespace torch::nn {
class Module;
}

namespace torch_layerlr::optim {

/// Per step k (from 1), per tensor theta of depth ratio d (0 at the input, 1 at the output), b = 0.3 + 0.4 d,
/// filter f and momentum m starting at 0:
///   f <- a_phase f + (1 - a_phase) g,   g^ = b g + (1-b) f + wd theta
///   r = clamp(gamma ||theta|| / ||g^||, 0.2, 5)   (1 if ||theta|| = 0 or ||g^|| = 0)
///   m <- mu m + g^,   theta <- theta - lr s(k) m_l r m
/// s: "dals"/"fast" warmup (floor(warmup_frac T) steps, from 0) then cosine to T = total_steps; "acc" SGDR
/// (restart_steps, restart_mult); 1 with schedule(false). The loss phase comes from update_phase(loss) or the
/// closure's loss. The schedule clock, factor and phase are advanced by the engine (layerlr::dals_advance_) on the
/// params' device, as in the Python class.
///
/// The constructor's variant picks the published defaults of lr, momentum, weight_decay, alpha and
/// warmup_frac ("acc" has no warmup); the setters override them. variant, alpha, warmup_frac, total_steps,
/// restart_steps and restart_mult belong to the optimizer (they are read from its defaults); the other
/// options may differ per group. depth_ratio and lr_mult hold one value or one per parameter of the group.
struct DALSOptions : public torch::optim::OptimizerCloneableOptions<DALSOptions> {
  DALSOptions(const std::string& variant = "dals");
  DALSOptions(const char* variant) : DALSOptions(std::string(variant)) {}
  const std::string& variant() const noexcept { return variant_; }
  TORCH_ARG(double, lr);
  TORCH_ARG(double, momentum);
  TORCH_ARG(double, weight_decay);
  TORCH_ARG(double, trust_coefficient) = 0.02;
  TORCH_ARG(double, alpha);
  TORCH_ARG(std::optional<double>, warmup_frac);
  TORCH_ARG(int64_t, total_steps) = 10000;
  TORCH_ARG(int64_t, restart_steps) = 1000;
  TORCH_ARG(int64_t, restart_mult) = 2;
  /// Apply the built-in schedule (default); false leaves the lr to an external scheduler.
  TORCH_ARG(bool, schedule) = true;
  TORCH_ARG(std::vector<double>, depth_ratio) = std::vector<double>{0.5};
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(DALSOptions);

 private:
  std::string variant_;
};

class DALS : public FusedOptimizer {
 public:
  explicit DALS(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, DALSOptions defaults = {});
  explicit DALS(std::vector<torch::Tensor> params, DALSOptions defaults = {})
      : DALS({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}
  /// All of `model`'s parameters, the tensors of its i-th of N top-level children at depth ratio i/(N-1)
  /// (0.5 for N = 1 and for parameters of no child). Children count in registration order, which must be the
  /// forward order (as in the usual C++ modules that register layers as they are used).
  explicit DALS(const torch::nn::Module& model, DALSOptions defaults = {});

  /// One DALS step; the closure's loss (if any) goes to the phase detector first, then is returned.
  torch::Tensor step(LossClosure closure = nullptr) override;
  /// Feed the training loss of this step to the phase detector (before step()).
  void update_phase(const torch::Tensor& loss);
  void update_phase(double loss);
  /// The factor s of the step about to be taken (advances the global step and the SGDR cycle; the engine
  /// computes it, this reads it back).
  double schedule_factor();
  /// The current loss phase: 0 (loss falling fast), 1 (falling), 2 (flat).
  int64_t phase() const;
  const DALSOptions& options() const { return static_cast<const DALSOptions&>(defaults()); }

 protected:
  const char* name() const override { return "DALS"; }
  void check_options(const torch::optim::OptimizerOptions& options, size_t num_params) const override;
  Recipe recipe(const torch::optim::OptimizerOptions& group) const override;
  TensorSettings tensor_settings(const torch::optim::OptimizerOptions& group, size_t index,
                                 const torch::Tensor& param) const override;
  const std::vector<double>& lr_mult(const torch::optim::OptimizerOptions& group) const override;
  const std::string& state_precision(const torch::optim::OptimizerOptions& group) const override;
  void set_state_precision(torch::optim::OptimizerOptions& group, const std::string& precision) const override;
  std::optional<torch::Tensor> filter_coef(const torch::optim::OptimizerOptions& group,
                                           const torch::Device& device) const override;
  void save_global(torch::serialize::OutputArchive& archive) const override;
  std::function<void()> load_global(torch::serialize::InputArchive& archive) override;

 private:
  // The global (not per-parameter) state, float64 tensors where the params are (NOTE: [DALS global state on the
  // device] in torch_layerlr/optim/dals.py).
  struct Global {
    torch::Tensor clock;        // [step, SGDR cycle, cycle length]
    torch::Tensor scale;        // [the last step's schedule factor]
    torch::Tensor detector;     // [loss EMA, losses seen, phase]
    torch::Tensor filter_coef;  // [alpha, gate] of the current phase
    Global to(const torch::Device& device) const;
    Global clone() const;
  };
  Global initial_global() const;
  /// One step of the global state (layerlr::dals_advance_), feeding `loss` to the detector when defined.
  void advance(const torch::Tensor& loss);

  std::vector<double> phase_alpha_, phase_gate_;
  double tau1_ = 0.0, tau2_ = 0.0;
  Global global_;
};

}  // namespace torch_layerlr::optim
