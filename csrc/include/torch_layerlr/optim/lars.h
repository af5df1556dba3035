// LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017; torch_layerlr/optim/lars.py).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/options_macros.h"

namespace torch_layerlr::optim {

/// eq. 6 and Algorithm 1 of You et al. (2017):
///   lambda_l = gamma ||w_l|| / (||g_l|| + beta ||w_l|| + eps)   (1 if ||w_l|| = 0 or ||g_l|| = 0)
///   v_l <- mu v_l + lr m_l lambda_l (g_l + beta w_l),   w_l <- w_l - v_l
/// With exclude_1d, tensors with ndim <= 1 get lambda_l = 1 and no weight decay. lr defaults to 1e-3 (as
/// torch::optim::SGD).
struct LARSOptions : public torch::optim::OptimizerCloneableOptions<LARSOptions> {
  LARSOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, weight_decay) = 0.0;
  TORCH_ARG(double, trust_coefficient) = 0.001;
  TORCH_ARG(double, eps) = 0.0;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(bool, exclude_1d) = true;
  TORCH_ARG(std::optional<double>, grokfast_alpha) = std::nullopt;
  TORCH_ARG(double, grokfast_lambda) = 2.0;
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(LARSOptions);
};

class LARS : public FusedOptimizer {
 public:
  explicit LARS(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, LARSOptions defaults = {});
  explicit LARS(std::vector<torch::Tensor> params, LARSOptions defaults = {})
      : LARS({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

 protected:
  const char* name() const override { return "LARS"; }
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

}  // namespace torch_layerlr::optim
