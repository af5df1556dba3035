// The recipes, options and checks of LayerwiseSGD, LayerwiseAdamW, GrokfastAdamW, LARS, LAMB and DepthScaledSGD
// (torch_layerlr/optim/{layerwise,grokfast,lars,lamb,depth_scaled}.py; the closed forms of
// torch_layerlr/theory/scalar_chain.py). Each mirrors what its Python class hands the engine, field by field.
#include <ATen/ATen.h>

#include <cmath>

#include "archive_fields.h"
#include "torch_layerlr/optim/depth_scaled.h"
#include "torch_layerlr/optim/grokfast.h"
#include "torch_layerlr/optim/lamb.h"
#include "torch_layerlr/optim/lars.h"
#include "torch_layerlr/optim/layerwise.h"
#include "torch_layerlr/optim/state_precision.h"

namespace torch_layerlr::optim {

namespace {

using torch::optim::OptimizerOptions;
constexpr double kInf = std::numeric_limits<double>::infinity();

void check_betas(const std::tuple<double, double>& betas) {
  check_float("betas[0]", std::get<0>(betas), 0.0, 1.0, false, true);
  check_float("betas[1]", std::get<1>(betas), 0.0, 1.0, false, true);
}

// The optional Grokfast-EMA stage (torch_layerlr/optim/_grokfast_stage.py): its checks, recipe switch and the
// engine's filter coefficients [alpha, gate].
void check_grokfast(const std::optional<double>& alpha, double lambda) {
  if (alpha) check_float("grokfast_alpha", *alpha, 0.0, 1.0, false, true);
  check_float("grokfast_lambda", lambda, 0.0);
}

Recipe with_grokfast(Recipe recipe, const std::optional<double>& alpha, double lambda) {
  if (!alpha) return recipe;
  recipe.filter = "grokfast";
  recipe.filter_lambda = lambda;
  return recipe;
}

std::optional<torch::Tensor> grokfast_coef(const std::optional<double>& alpha, const torch::Device& device) {
  if (!alpha) return std::nullopt;
  torch::Tensor coef = at::tensor(std::vector<double>{*alpha, 1.0}, at::TensorOptions().dtype(at::kDouble));
  return device.is_cpu() ? coef : coef.to(device, /*non_blocking=*/true);
}

// AdamW's recipe: Adam moments, decoupled weight decay.
template <typename Options>
Recipe adamw_recipe(const Options& o) {
  Recipe r;
  r.moment = "adam";
  r.decay = "decoupled";
  r.beta1 = std::get<0>(o.betas());
  r.beta2 = std::get<1>(o.betas());
  r.eps = o.eps();
  r.maximize = o.maximize();
  return r;
}

bool is_1d(const torch::Tensor& p) { return p.dim() <= 1; }

}  // namespace

// ---- LayerwiseSGD ----------------------------------------------------------------------------------------
#define SGD_FIELDS(X)                                                                                    \
  X(double, lr) X(double, momentum) X(double, dampening) X(double, weight_decay) X(bool, nesterov)      \
  X(std::optional<double>, grokfast_alpha) X(double, grokfast_lambda) X(std::vector<double>, lr_mult) \
  X(bool, maximize)
LayerwiseSGDOptions::LayerwiseSGDOptions(double lr) : lr_(lr) {}
TORCH_LAYERLR_DEFINE_OPTIONS(LayerwiseSGDOptions, SGD_FIELDS)

LayerwiseSGD::LayerwiseSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                           LayerwiseSGDOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<LayerwiseSGDOptions>(defaults)) {
  check_all_groups();
}

void LayerwiseSGD::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const LayerwiseSGDOptions&>(options);
  check_float("lr", o.lr(), 0.0);
  check_float("momentum", o.momentum(), 0.0, 1.0);
  check_float("dampening", o.dampening(), 0.0, 1.0);
  check_float("weight_decay", o.weight_decay(), 0.0);
  TORCH_CHECK_VALUE(!o.nesterov() || (o.momentum() > 0 && o.dampening() == 0),
                    "nesterov momentum requires a momentum and zero dampening");
  check_grokfast(o.grokfast_alpha(), o.grokfast_lambda());
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

Recipe LayerwiseSGD::recipe(const OptimizerOptions& group) const {
  const auto& o = static_cast<const LayerwiseSGDOptions&>(group);
  Recipe r;
  r.moment = "sgd";
  r.decay = "coupled";
  r.momentum = o.momentum();
  r.dampening = o.dampening();
  r.nesterov = o.nesterov();
  r.maximize = o.maximize();
  return with_grokfast(r, o.grokfast_alpha(), o.grokfast_lambda());
}

TensorSettings LayerwiseSGD::tensor_settings(const OptimizerOptions& group, size_t, const torch::Tensor&) const {
  return {static_cast<const LayerwiseSGDOptions&>(group).weight_decay(), 0.0, true};
}

const std::vector<double>& LayerwiseSGD::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const LayerwiseSGDOptions&>(group).lr_mult();
}

const std::string& LayerwiseSGD::state_precision(const OptimizerOptions& group) const {
  return static_cast<const LayerwiseSGDOptions&>(group).state_precision();
}

void LayerwiseSGD::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<LayerwiseSGDOptions&>(group).state_precision(precision);
}

std::optional<torch::Tensor> LayerwiseSGD::filter_coef(const OptimizerOptions& group,
                                                       const torch::Device& device) const {
  return grokfast_coef(static_cast<const LayerwiseSGDOptions&>(group).grokfast_alpha(), device);
}

std::optional<double> LayerwiseSGD::filter_key(const OptimizerOptions& group) const {
  return static_cast<const LayerwiseSGDOptions&>(group).grokfast_alpha();
}

// ---- LayerwiseAdamW --------------------------------------------------------------------------------------
#define ADAMW_FIELDS(X)                                                                                        \
  X(double, lr) X(LayerwiseAdamWOptions::betas_t, betas) X(double, eps) X(double, weight_decay)              \
  X(std::vector<double>, lr_mult) X(bool, maximize)
LayerwiseAdamWOptions::LayerwiseAdamWOptions(double lr) : lr_(lr) {}
TORCH_LAYERLR_DEFINE_OPTIONS(LayerwiseAdamWOptions, ADAMW_FIELDS)

LayerwiseAdamW::LayerwiseAdamW(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                               LayerwiseAdamWOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<LayerwiseAdamWOptions>(defaults)) {
  check_all_groups();
}

void LayerwiseAdamW::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const LayerwiseAdamWOptions&>(options);
  check_float("lr", o.lr(), 0.0);
  check_float("eps", o.eps(), 0.0);
  check_float("weight_decay", o.weight_decay(), 0.0);
  check_betas(o.betas());
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

Recipe LayerwiseAdamW::recipe(const OptimizerOptions& group) const {
  return adamw_recipe(static_cast<const LayerwiseAdamWOptions&>(group));
}

TensorSettings LayerwiseAdamW::tensor_settings(const OptimizerOptions& group, size_t, const torch::Tensor&) const {
  return {static_cast<const LayerwiseAdamWOptions&>(group).weight_decay(), 0.0, true};
}

const std::vector<double>& LayerwiseAdamW::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const LayerwiseAdamWOptions&>(group).lr_mult();
}

const std::string& LayerwiseAdamW::state_precision(const OptimizerOptions& group) const {
  return static_cast<const LayerwiseAdamWOptions&>(group).state_precision();
}

void LayerwiseAdamW::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<LayerwiseAdamWOptions&>(group).state_precision(precision);
}

// ---- GrokfastAdamW ---------------------------------------------------------------------------------------
#define GROKFAST_FIELDS(X)                                                                                   \
  X(double, lr) X(GrokfastAdamWOptions::betas_t, betas) X(double, eps) X(double, weight_decay)              \
  X(double, grokfast_alpha) X(double, grokfast_lambda) X(std::vector<double>, lr_mult) X(bool, maximize)
GrokfastAdamWOptions::GrokfastAdamWOptions(double lr) : lr_(lr) {}
TORCH_LAYERLR_DEFINE_OPTIONS(GrokfastAdamWOptions, GROKFAST_FIELDS)

GrokfastAdamW::GrokfastAdamW(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                             GrokfastAdamWOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<GrokfastAdamWOptions>(defaults)) {
  check_all_groups();
}

void GrokfastAdamW::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const GrokfastAdamWOptions&>(options);
  check_float("lr", o.lr(), 0.0);
  check_float("eps", o.eps(), 0.0);
  check_float("weight_decay", o.weight_decay(), 0.0);
  check_betas(o.betas());
  check_grokfast(o.grokfast_alpha(), o.grokfast_lambda());
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

Recipe GrokfastAdamW::recipe(const OptimizerOptions& group) const {
  const auto& o = static_cast<const GrokfastAdamWOptions&>(group);
  return with_grokfast(adamw_recipe(o), o.grokfast_alpha(), o.grokfast_lambda());
}

TensorSettings GrokfastAdamW::tensor_settings(const OptimizerOptions& group, size_t, const torch::Tensor&) const {
  return {static_cast<const GrokfastAdamWOptions&>(group).weight_decay(), 0.0, true};
}

const std::vector<double>& GrokfastAdamW::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const GrokfastAdamWOptions&>(group).lr_mult();
}

const std::string& GrokfastAdamW::state_precision(const OptimizerOptions& group) const {
  return static_cast<const GrokfastAdamWOptions&>(group).state_precision();
}

void GrokfastAdamW::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<GrokfastAdamWOptions&>(group).state_precision(precision);
}

std::optional<torch::Tensor> GrokfastAdamW::filter_coef(const OptimizerOptions& group,
                                                        const torch::Device& device) const {
  return grokfast_coef(static_cast<const GrokfastAdamWOptions&>(group).grokfast_alpha(), device);
}

std::optional<double> GrokfastAdamW::filter_key(const OptimizerOptions& group) const {
  return static_cast<const GrokfastAdamWOptions&>(group).grokfast_alpha();
}

// ---- LARS ------------------------------------------------------------------------------------------------
#define LARS_FIELDS(X)                                                                                      \
  X(double, lr) X(double, momentum) X(double, weight_decay) X(double, trust_coefficient) X(double, eps)    \
  X(bool, nesterov) X(bool, exclude_1d) X(std::optional<double>, grokfast_alpha) X(double, grokfast_lambda) \
  X(std::vector<double>, lr_mult) X(bool, maximize)
LARSOptions::LARSOptions(double lr) : lr_(lr) {}
TORCH_LAYERLR_DEFINE_OPTIONS(LARSOptions, LARS_FIELDS)

LARS::LARS(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, LARSOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<LARSOptions>(defaults)) {
  check_all_groups();
}

void LARS::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const LARSOptions&>(options);
  check_float("lr", o.lr(), 0.0);
  check_float("momentum", o.momentum(), 0.0, 1.0);
  check_float("weight_decay", o.weight_decay(), 0.0);
  check_float("trust_coefficient", o.trust_coefficient(), 0.0);
  check_float("eps", o.eps(), 0.0);
  TORCH_CHECK_VALUE(!o.nesterov() || o.momentum() > 0, "nesterov momentum requires a momentum > 0");
  check_grokfast(o.grokfast_alpha(), o.grokfast_lambda());
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

Recipe LARS::recipe(const OptimizerOptions& group) const {
  const auto& o = static_cast<const LARSOptions&>(group);
  Recipe r;
  r.moment = "sgd";
  r.decay = "coupled";
  r.trust = "lars";
  r.momentum = o.momentum();
  r.nesterov = o.nesterov();
  r.trust_coefficient = o.trust_coefficient();
  r.trust_eps = o.eps();
  r.maximize = o.maximize();
  return with_grokfast(r, o.grokfast_alpha(), o.grokfast_lambda());
}

TensorSettings LARS::tensor_settings(const OptimizerOptions& group, size_t, const torch::Tensor& param) const {
  const auto& o = static_cast<const LARSOptions&>(group);
  if (o.exclude_1d() && is_1d(param)) return {0.0, 0.0, false};
  return {o.weight_decay(), 0.0, true};
}

const std::vector<double>& LARS::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const LARSOptions&>(group).lr_mult();
}

const std::string& LARS::state_precision(const OptimizerOptions& group) const {
  return static_cast<const LARSOptions&>(group).state_precision();
}

void LARS::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<LARSOptions&>(group).state_precision(precision);
}

std::optional<torch::Tensor> LARS::filter_coef(const OptimizerOptions& group, const torch::Device& device) const {
  return grokfast_coef(static_cast<const LARSOptions&>(group).grokfast_alpha(), device);
}

std::optional<double> LARS::filter_key(const OptimizerOptions& group) const {
  return static_cast<const LARSOptions&>(group).grokfast_alpha();
}

// ---- LAMB ------------------------------------------------------------------------------------------------
#define LAMB_FIELDS(X)                                                                                      \
  X(double, lr) X(LAMBOptions::betas_t, betas) X(double, eps) X(double, weight_decay)                      \
  X(bool, bias_correction) X(std::optional<double>, clamp_value) X(bool, exclude_1d)                        \
  X(std::optional<double>, grokfast_alpha) X(double, grokfast_lambda) X(std::vector<double>, lr_mult)      \
  X(bool, maximize)
LAMBOptions::LAMBOptions(double lr) : lr_(lr) {}
TORCH_LAYERLR_DEFINE_OPTIONS(LAMBOptions, LAMB_FIELDS)

LAMB::LAMB(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, LAMBOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<LAMBOptions>(defaults)) {
  check_all_groups();
}

void LAMB::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const LAMBOptions&>(options);
  check_float("lr", o.lr(), 0.0);
  check_float("eps", o.eps(), 0.0);
  check_float("weight_decay", o.weight_decay(), 0.0);
  if (o.clamp_value()) check_float("clamp_value", *o.clamp_value(), 0.0, kInf, /*low_open=*/true);
  check_betas(o.betas());
  check_grokfast(o.grokfast_alpha(), o.grokfast_lambda());
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

Recipe LAMB::recipe(const OptimizerOptions& group) const {
  const auto& o = static_cast<const LAMBOptions&>(group);
  Recipe r;
  r.moment = "adam";
  r.decay = "update";
  r.trust = "update";
  r.beta1 = std::get<0>(o.betas());
  r.beta2 = std::get<1>(o.betas());
  r.eps = o.eps();
  r.bias_correction = o.bias_correction();
  r.norm_max = o.clamp_value() ? *o.clamp_value() : kInf;
  r.maximize = o.maximize();
  return with_grokfast(r, o.grokfast_alpha(), o.grokfast_lambda());
}

TensorSettings LAMB::tensor_settings(const OptimizerOptions& group, size_t, const torch::Tensor& param) const {
  const auto& o = static_cast<const LAMBOptions&>(group);
  return {o.weight_decay(), 0.0, !(o.exclude_1d() && is_1d(param))};
}

const std::vector<double>& LAMB::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const LAMBOptions&>(group).lr_mult();
}

const std::string& LAMB::state_precision(const OptimizerOptions& group) const {
  return static_cast<const LAMBOptions&>(group).state_precision();
}

void LAMB::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<LAMBOptions&>(group).state_precision(precision);
}

std::optional<torch::Tensor> LAMB::filter_coef(const OptimizerOptions& group, const torch::Device& device) const {
  return grokfast_coef(static_cast<const LAMBOptions&>(group).grokfast_alpha(), device);
}

std::optional<double> LAMB::filter_key(const OptimizerOptions& group) const {
  return static_cast<const LAMBOptions&>(group).grokfast_alpha();
}

}  // namespace torch_layerlr::optim

// ---- the depth-scaling closed forms ----------------------------------------------------------------------
namespace torch_layerlr::theory {

namespace {

void check_arch(const std::string& arch) {
  TORCH_CHECK_VALUE(arch == "chain" || arch == "res1" || arch == "res2",
                    "arch must be one of ('chain', 'res1', 'res2'), got '", arch, "'");
}

void check_positive(const char* name, double x) {
  TORCH_CHECK_VALUE(x > 0 && std::isfinite(x), name, " must be positive and finite, got ", x);
}

}  // namespace

double sharpness(double depth, double mu_xx, double mu_yx, const std::string& arch) {
  check_arch(arch);
  TORCH_CHECK_VALUE(!std::isnan(depth) && depth >= 1 && (std::isinf(depth) || depth == std::round(depth)),
                    "depth must be an integer >= 1 or inf, got ", depth);
  check_positive("mu_xx", mu_xx);
  TORCH_CHECK_VALUE(!std::isnan(mu_yx), "mu_yx must not be NaN");
  const double r = mu_yx / mu_xx;
  if (arch == "res2") {
    TORCH_CHECK_VALUE(r > 1, "arch='res2' needs mu_yx/mu_xx > 1, got ", r,
                      ": its layers 1 + w^2/L are >= 1, so the balanced minimum (1 + w^2/L)^L = mu_yx/mu_xx has "
                      "a real solution with nonzero sharpness only for a ratio above 1");
  } else {
    TORCH_CHECK_VALUE(r > 0 && std::isfinite(r),
                      "mu_yx/mu_xx must be positive and finite (the target reached with positive layers), got ", r);
  }
  // The same operations in the same order as the NumPy forms, so the rate is the same double.
  const double power = std::pow(r, 2.0 - 2.0 / depth);
  if (arch == "chain") return mu_xx * depth * power;
  if (arch == "res1") return mu_xx * power;
  return 4.0 * mu_xx * power * std::expm1(std::log(r) / depth);  // r^(1/L) - 1, exact at large L
}

double max_stable_lr(double depth, double mu_xx, double mu_yx, double tau, const std::string& arch) {
  check_positive("tau", tau);
  return 1.0 / (tau * sharpness(depth, mu_xx, mu_yx, arch));
}

}  // namespace torch_layerlr::theory

// ---- DepthScaledSGD --------------------------------------------------------------------------------------
namespace torch_layerlr::optim {

namespace {

// The rule's inputs with depth resolved (default: the number of parameter tensors), and the rate it gives.
std::pair<DepthScaledSGDOptions, double> resolve(const std::vector<torch::optim::OptimizerParamGroup>& groups,
                                                 DepthScaledSGDOptions o) {
  if (!o.depth()) {
    int64_t n = 0;
    for (const auto& g : groups) n += static_cast<int64_t>(g.params().size());
    TORCH_CHECK_VALUE(n > 0, "DepthScaledSGD got an empty parameter list");
    o.depth(n);
  }
  TORCH_CHECK_VALUE(*o.depth() >= 1, "depth must be a positive integer, got ", *o.depth());
  check_float("tau", o.tau(), 0.0, kInf, /*low_open=*/true);
  TORCH_CHECK_VALUE(o.arch() == "chain" || o.arch() == "res1" || o.arch() == "res2",
                    "arch must be one of ('chain', 'res1', 'res2'), got '", o.arch(), "'");
  double lr;
  if (!o.sharpness()) {
    TORCH_CHECK_VALUE(o.mu_xx() && o.mu_yx(), "DepthScaledSGD needs mu_xx and mu_yx (or sharpness)");
    lr = theory::max_stable_lr(static_cast<double>(*o.depth()), *o.mu_xx(), *o.mu_yx(), o.tau(), o.arch());
  } else {
    const double s = check_float("sharpness", *o.sharpness(), 0.0, kInf, /*low_open=*/true);
    lr = 1.0 / (o.tau() * s);
  }
  return {o, lr};
}

LayerwiseSGDOptions sgd_options(const DepthScaledSGDOptions& o, double lr) {
  return LayerwiseSGDOptions(lr)
      .momentum(o.momentum())
      .dampening(o.dampening())
      .weight_decay(o.weight_decay())
      .nesterov(o.nesterov())
      .grokfast_alpha(o.grokfast_alpha())
      .grokfast_lambda(o.grokfast_lambda())
      .lr_mult(o.lr_mult())
      .maximize(o.maximize())
      .state_precision(o.state_precision());
}

}  // namespace

DepthScaledSGD::DepthScaledSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                               const DepthScaledSGDOptions& options)
    : DepthScaledSGD(param_groups, resolve(param_groups, options)) {}

DepthScaledSGD::DepthScaledSGD(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                               std::pair<DepthScaledSGDOptions, double> resolved)
    : LayerwiseSGD(param_groups, sgd_options(resolved.first, resolved.second)),
      depth_scaling_(resolved.first),
      lr_(resolved.second) {}

}  // namespace torch_layerlr::optim
