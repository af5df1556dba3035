// AdamW on the Grokfast-EMA filtered gradient (Lee et al. 2024; torch_layerlr/optim/grokfast.py).
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "torch_layerlr/optim/fused_optimizer.h"
#include "torch_layerlr/optim/options_macros.h"

namespace torch_layerlr::optim {

/// mu <- g (t = 1), alpha*mu + (1-alpha)*g (t > 1);  g_hat = g + lambda*mu;  then LayerwiseAdamW on g_hat.
/// The defaults are the authors' gradfilter_ema (alpha = 0.98, lambda = 2).
struct GrokfastAdamWOptions : public torch::optim::OptimizerCloneableOptions<GrokfastAdamWOptions> {
  GrokfastAdamWOptions(double lr = 1e-3);
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 1e-2;
  TORCH_ARG(double, grokfast_alpha) = 0.98;
  TORCH_ARG(double, grokfast_lambda) = 2.0;
  TORCH_ARG(std::vector<double>, lr_mult) = std::vector<double>{1.0};
  TORCH_ARG(bool, maximize) = false;
  TORCH_LAYERLR_OPTIONS_COMMON(GrokfastAdamWOptions);
};

class GrokfastAdamW : public FusedOptimizer {
 public:
  explicit GrokfastAdamW(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                         GrokfastAdamWOptions defaults = {});
  explicit GrokfastAdamW(std::vector<torch::Tensor> params, GrokfastAdamWOptions defaults = {})
      : GrokfastAdamW({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

 protected:
  const char* name() const override { return "GrokfastAdamW"; }
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
