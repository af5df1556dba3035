// SGD and AdamW with per-layer learning-rate multipliers (torch_layerlr/optim/layerwise.py).
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/options_macros.h"

namespace torch_layerlr::optim {

/// torch::optim::SGD with a learning-rate multiplier per parameter tensor:
///   g <- ±grad + wd*theta;  b <- g (t = 1), mu*b + (1 - dampening)*g (t > 1);  d = g + mu*b (nesterov) or b;
///   theta <- theta - lr * lr_mult[l] * d.
/// With grokfast_alpha set, the gradient first goes through the Grokfast-EMA filter
/// (mu <- a*mu + (1-a)*grad, mu = grad at the first step; grad <- grad + lambda*mu).
struct LayerwiseSGDOptions : public torch::optim::OptimizerCloneableOptions<LayerwiseSGDOptions> {
  LayerwiseSGDOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, momentum) = 0.0;
  TORCH_ARG(double, dampening) = 0.0;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(std::optional<double>, grokfast_alpha) = std::nullopt;
  TORCH_ARG(double, grokfast_lambda) = 2.0;
  /// One multiplier for every tensor of the group, or one per tensor.
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(LayerwiseSGDOptions);
};

class LayerwiseSGD : public FusedOptimizer {
 public:
  explicit LayerwiseSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                        LayerwiseSGDOptions defaults = {});
  explicit LayerwiseSGD(std::vector<torch::Tensor> params, LayerwiseSGDOptions defaults = {})
      : LayerwiseSGD({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

 protected:
  const char* name() const override { return "LayerwiseSGD"; }
  void check_options(const torch::optim::OptimizerOptions& options, size_t num_params) const override;
  Recipe recipe(const torch::optim::OptimizerOptions& group) const override;
  TensorSettings tensor_settings(const torch::optim::OptimizerOptions& group, size_t index,
                                 const torch::Tensor& param) const override;
  const std::vector<double>& lr_mult(const torch::optim::OptimizerOptions& group) const override;
  const std::string& state_precision(const torch::optim::OptimizerOptions& group) const override;
  void set_state_precision(torch::optim::OptimizerOptions& group, const std::string& precision) const override;
  std::optional<torch::Tensor> filter_coef(const torch::optim::OptimizerOptions& group,
                                           const torch::Device& device) const override;
  std::optional<double> filter_key(const torch::optim::OptimizerOptions& group) const override;
};

/// torch::optim::AdamW with a learning-rate multiplier per parameter tensor:
///   theta <- theta (1 - lr m_l wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
///   theta <- theta - lr m_l / (1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
struct LayerwiseAdamWOptions : public torch::optim::OptimizerCloneableOptions<LayerwiseAdamWOptions> {
  LayerwiseAdamWOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 1e-2;
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(LayerwiseAdamWOptions);
};

class LayerwiseAdamW : public FusedOptimizer {
 public:
  explicit LayerwiseAdamW(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                          LayerwiseAdamWOptions defaults = {});
  explicit LayerwiseAdamW(std::vector<torch::Tensor> params, LayerwiseAdamWOptions defaults = {})
      : LayerwiseAdamW({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

 protected:
  const char* name() const override { return "LayerwiseAdamW"; }
  void check_options(const torch::optim::OptimizerOptions& options, size_t num_params) const override;
  Recipe recipe(const torch::optim::OptimizerOptions& group) const override;
  TensorSettings tensor_settings(const torch::optim::OptimizerOptions& group, size_t index,
                                 const torch::Tensor& param) const override;
  const std::vector<double>& lr_mult(const torch::optim::OptimizerOptions& group) const override;
  const std::string& state_precision(const torch::optim::OptimizerOptions& group) const override;
  void set_state_precision(torch::optim::OptimizerOptions& group, const std::string& precision) const override;
};

}  // namespace torch_layerlr::optim
