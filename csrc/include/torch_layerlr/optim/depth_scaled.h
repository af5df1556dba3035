// SGD whose learning rate follows the data-dependent depth scaling of deep linear networks
// (torch_layerlr/optim/depth_scaled.py and torch_layerlr/theory/scalar_chain.py).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "torch_layerlr/optim/layerwise.h"

namespace torch_layerlr::theory {

/// Sharpness S at the balanced global minimum, r = mu_yx / mu_xx:
///   "chain" (eq. 13): S = mu_xx L r^(2-2/L);  "res1" (eq. 27): S = mu_xx r^(2-2/L);
///   "res2" (eq. 33): S = 4 mu_xx r^(2-2/L) (r^(1/L) - 1)  (needs r > 1).
double sharpness(double depth, double mu_xx, double mu_yx, const std::string& arch = "chain");

/// The learning-rate rule eta = 1/(tau S): eq. 5 (chain), eq. 28 (res1), eq. 34 (res2).
double max_stable_lr(double depth, double mu_xx, double mu_yx, double tau = 1.0, const std::string& arch = "chain");

}  // namespace torch_layerlr::theory

namespace torch_layerlr::optim {

/// The depth-scaling rule's inputs and LayerwiseSGD's other options. depth defaults to the number of
/// parameter tensors; sharpness, when set, replaces the closed form (then mu_xx/mu_yx may be unset).
struct DepthScaledSGDOptions {
  DepthScaledSGDOptions(std::optional<double> mu_xx, std::optional<double> mu_yx) : mu_xx_(mu_xx), mu_yx_(mu_yx) {}
  TORCH_ARG(std::optional<double>, mu_xx);
  TORCH_ARG(std::optional<double>, mu_yx);
  TORCH_ARG(std::optional<int64_t>, depth) = std::nullopt;
  TORCH_ARG(double, tau) = 1.0;
  TORCH_ARG(std::string, arch) = "chain";
  TORCH_ARG(double, momentum) = 0.0;
  TORCH_ARG(std::optional<double>, sharpness) = std::nullopt;
  TORCH_ARG(double, dampening) = 0.0;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(std::optional<double>, grokfast_alpha) = std::nullopt;
  TORCH_ARG(double, grokfast_lambda) = 2.0;
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  /// "fp32" | "bf16" | "int8": how the state is kept (options_macros.h).
  TORCH_ARG(std::string, state_precision) = "fp32";
};

/// LayerwiseSGD with eta = 1/(tau S) (theory::max_stable_lr), e.g. for a chain
///   eta = 1/(tau mu_xx L) (mu_yx/mu_xx)^(-2+2/L).
/// The group options are LayerwiseSGDOptions holding that lr (so LR schedulers act on it as usual);
/// depth_scaling() keeps the rule's inputs (depth resolved).
class DepthScaledSGD : public LayerwiseSGD {
 public:
  explicit DepthScaledSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                          const DepthScaledSGDOptions& options);
  explicit DepthScaledSGD(std::vector<torch::Tensor> params, const DepthScaledSGDOptions& options)
      : DepthScaledSGD({torch::optim::OptimizerParamGroup(std::move(params))}, options) {}
  const DepthScaledSGDOptions& depth_scaling() const { return depth_scaling_; }
  /// The learning rate the rule gave.
  double scaled_lr() const { return lr_; }

 protected:
  const char* name() const override { return "DepthScaledSGD"; }

 private:
  DepthScaledSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                 std::pair<DepthScaledSGDOptions, double> resolved);
  DepthScaledSGDOptions depth_scaling_;
  double lr_;
};

}  // namespace torch_layerlr::optim
