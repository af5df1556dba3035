// LAMB: layer-wise adaptive moments (You et al., ICLR 2020; torch_layerlr/optim/lamb.py).
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/options_macros.h"

namespace torch_layerlr::optim {

/// Algorithm 2 of You et al. (2020):
///   m <- b1 m + (1-b1) g,  v <- b2 v + (1-b2) g^2,  m^ = m/(1-b1^t),  v^ = v/(1-b2^t)
///   r_l = m^/(sqrt(v^) + eps) + wd w_l,   w_l <- w_l - lr m_l phi(||w_l||)/||r_l|| r_l
/// with phi(z) = min(z, clamp_value) when clamp_value is set. Like apex's FusedLAMB the step reuses each
/// gradient's memory for r_l: after step(), p.grad() holds the update direction.
struct LAMBOptions : public torch::optim::OptimizerCloneableOptions<LAMBOptions> {
  LAMBOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, weight_decay) = 0.01;
  TORCH_ARG(bool, bias_correction) = true;
  TORCH_ARG(std::optional<double>, clamp_value) = std::nullopt;
  TORCH_ARG(bool, exclude_1d) = false;
  TORCH_ARG(std::optional<double>, grokfast_alpha) = std::nullopt;
  TORCH_ARG(double, grokfast_lambda) = 2.0;
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(LAMBOptions);
};

class LAMB : public FusedOptimizer {
 public:
  explicit LAMB(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, LAMBOptions defaults = {});
  explicit LAMB(std::vector<torch::Tensor> params, LAMBOptions defaults = {})
      : LAMB({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

 protected:
  const char* name() const override { return "LAMB"; }
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
