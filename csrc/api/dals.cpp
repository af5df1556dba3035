// DALS (torch_layerlr/optim/dals.py in C++): the published variants' defaults, the warmup+cosine / SGDR schedule,
// the global loss-phase detector (the engine's layerlr::dals_phase_) and the blend recipe.
#include "torch_layerlr/optim/dals.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <cmath>
#include <unordered_map>

#include "archive_fields.h"
#include "torch_layerlr/optim/state_precision.h"

namespace torch_layerlr::optim {

namespace {

using torch::optim::OptimizerOptions;
constexpr double kInf = std::numeric_limits<double>::infinity();
// The clamp of the trust ratio, as published.
constexpr double kRatioMin = 0.2, kRatioMax = 5.0;

// The published defaults of each variant (section A.6 of the research notes; the authors' classes).
struct Variant {
  double lr, momentum, weight_decay, alpha;
  std::optional<double> warmup_frac;
  double tau1, tau2;  // loss-phase thresholds
};

const Variant& published(const std::string& variant) {
  static const std::unordered_map<std::string, Variant> variants = {
      {"dals", {0.03, 0.9, 1e-4, 0.6, 0.05, 0.01, 0.002}},
      {"fast", {0.05, 0.85, 1e-4, 0.6, 0.02, 0.01, 0.002}},
      {"acc", {0.03, 0.9, 5e-4, 0.7, std::nullopt, 0.01, 0.001}},
  };
  auto it = variants.find(variant);
  TORCH_CHECK_VALUE(it != variants.end(), "Unknown DALS variant '", variant,
                    "': expected one of ['acc', 'dals', 'fast']");
  return it->second;
}

// Filter coefficient and gate of phases 0 (loss falling fast), 1 (falling) and 2 (flat). DALS-Fast bypasses the
// filter in phase 0 (gate 0: the raw gradient goes through, the filter is frozen).
std::pair<std::vector<double>, std::vector<double>> phase_table(const std::string& variant, double alpha) {
  const double slow = std::min(0.9, alpha + 0.1);
  if (variant == "dals") return {{std::max(0.3, alpha - 0.3), alpha, slow}, {1.0, 1.0, 1.0}};
  if (variant == "fast") return {{1.0, alpha, slow}, {0.0, 1.0, 1.0}};
  return {{std::max(0.4, alpha - 0.15), alpha, slow}, {1.0, 1.0, 1.0}};
}

// Depth ratio i/(N-1) of each parameter of the i-th of N children (0.5 for N = 1 and for no child's params).
torch::optim::OptimizerParamGroup module_group(const torch::nn::Module& model, const DALSOptions& defaults) {
  const auto children = model.children();
  const size_t n = children.size();
  std::unordered_map<const void*, double> depth;
  for (size_t i = 0; i < n; ++i) {
    const double d = n == 1 ? 0.5 : static_cast<double>(i) / static_cast<double>(n - 1);
    for (const auto& p : children[i]->parameters()) depth.emplace(p.unsafeGetTensorImpl(), d);
  }
  std::vector<torch::Tensor> params = model.parameters();
  std::vector<double> ratios;
  for (const auto& p : params) {
    auto it = depth.find(p.unsafeGetTensorImpl());
    ratios.push_back(it == depth.end() ? 0.5 : it->second);
  }
  DALSOptions options = defaults;
  options.depth_ratio(ratios);
  return torch::optim::OptimizerParamGroup(std::move(params), std::make_unique<DALSOptions>(options));
}

}  // namespace

// ---- options ---------------------------------------------------------------------------------------------
DALSOptions::DALSOptions(const std::string& variant) : variant_(variant) {
  const Variant& v = published(variant);
  lr_ = v.lr;
  momentum_ = v.momentum;
  weight_decay_ = v.weight_decay;
  alpha_ = v.alpha;
  warmup_frac_ = v.warmup_frac;
}

#define DALS_FIELDS(X)                                                                                       \
  X(double, lr) X(double, momentum) X(double, weight_decay) X(double, trust_coefficient) X(double, alpha)   \
  X(std::optional<double>, warmup_frac) X(int64_t, total_steps) X(int64_t, restart_steps)                    \
  X(int64_t, restart_mult) X(bool, schedule) X(std::vector<double>, depth_ratio) X(std::vector<double>, lr_mult)  \
  X(bool, maximize)

void DALSOptions::serialize(torch::serialize::OutputArchive& archive) const {
  detail::write_field(archive, "variant", variant_);
  DALS_FIELDS(TORCH_LAYERLR_WRITE_FIELD)
  detail::write_state_precision(archive, state_precision());
}

void DALSOptions::serialize(torch::serialize::InputArchive& archive) {
  variant_ = detail::read_field<std::string>(archive, "variant");
  published(variant_);  // an unknown variant is an error
  DALS_FIELDS(TORCH_LAYERLR_READ_FIELD)
  state_precision(detail::read_state_precision(archive));
}

bool operator==(const DALSOptions& lhs, const DALSOptions& rhs) {
  return lhs.variant() == rhs.variant() && lhs.state_precision() == rhs.state_precision()
      DALS_FIELDS(TORCH_LAYERLR_EQUAL_FIELD);
}

double DALSOptions::get_lr() const { return lr(); }
void DALSOptions::set_lr(const double lr) { this->lr(lr); }

// ---- the optimizer ---------------------------------------------------------------------------------------
DALS::DALS(const std::vector<torch::optim::OptimizerParamGroup>& param_groups, DALSOptions defaults)
    : FusedOptimizer(param_groups, std::make_unique<DALSOptions>(defaults)) {
  check_all_groups();
  const DALSOptions& o = options();
  std::tie(phase_alpha_, phase_gate_) = phase_table(o.variant(), o.alpha());
  tau1_ = published(o.variant()).tau1;
  tau2_ = published(o.variant()).tau2;
  global_ = initial_global();
}

DALS::DALS(const torch::nn::Module& model, DALSOptions defaults)
    : DALS(std::vector<torch::optim::OptimizerParamGroup>{module_group(model, defaults)}, defaults) {}

void DALS::check_options(const OptimizerOptions& options, size_t num_params) const {
  const auto& o = static_cast<const DALSOptions&>(options);
  published(o.variant());
  check_float("lr", o.lr(), 0.0);
  check_float("momentum", o.momentum(), 0.0, 1.0, false, /*high_open=*/true);
  check_float("weight_decay", o.weight_decay(), 0.0);
  check_float("trust_coefficient", o.trust_coefficient(), 0.0);
  check_float("alpha", o.alpha(), 0.0, 1.0);
  if (o.variant() == "acc") {
    TORCH_CHECK_VALUE(!o.warmup_frac(), "warmup_frac does not apply to variant 'acc' (SGDR without warmup)");
  } else {
    TORCH_CHECK_VALUE(o.warmup_frac().has_value(), "warmup_frac must be set for variant '", o.variant(), "'");
    check_float("warmup_frac", *o.warmup_frac(), 0.0, 1.0, false, /*high_open=*/true);
  }
  TORCH_CHECK_VALUE(o.total_steps() >= 1, "total_steps must be an int >= 1, got ", o.total_steps());
  TORCH_CHECK_VALUE(o.restart_steps() >= 1, "restart_steps must be an int >= 1, got ", o.restart_steps());
  TORCH_CHECK_VALUE(o.restart_mult() >= 1, "restart_mult must be an int >= 1, got ", o.restart_mult());
  check_per_param("depth_ratio", o.depth_ratio(), num_params, 0.0, 1.0);
  check_per_param("lr_mult", o.lr_mult(), num_params, 0.0, kInf);
  check_state_precision(o.state_precision());
}

DALS::Global DALS::initial_global() const {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  return {at::tensor(std::vector<double>{0.0, 0.0, static_cast<double>(options().restart_steps())}, f64),
          at::ones({1}, f64), at::zeros({3}, f64),
          at::tensor(std::vector<double>{phase_alpha_[0], phase_gate_[0]}, f64)};
}

DALS::Global DALS::Global::to(const torch::Device& device) const {
  return {clock.to(device), scale.to(device), detector.to(device), filter_coef.to(device)};
}

DALS::Global DALS::Global::clone() const { return {clock.clone(), scale.clone(), detector.clone(), filter_coef.clone()}; }

int64_t DALS::phase() const { return static_cast<int64_t>(global_.detector[2].item<double>()); }

void DALS::update_phase(const torch::Tensor& loss) {
  at::NoGradGuard no_grad;
  dals_phase_(global_.detector, global_.filter_coef, loss.detach(), tau1_, tau2_, phase_alpha_, phase_gate_);
}

void DALS::update_phase(double loss) { update_phase(at::scalar_tensor(loss, at::kDouble)); }

void DALS::advance(const torch::Tensor& loss) {
  const DALSOptions& o = options();
  dals_advance_(global_.clock, global_.scale, global_.detector, global_.filter_coef,
                loss.defined() ? std::optional<torch::Tensor>(loss.detach()) : std::nullopt, std::nullopt, o.variant(),
                o.schedule(), o.total_steps(), o.warmup_frac().value_or(0.0), o.restart_mult(), tau1_, tau2_,
                phase_alpha_, phase_gate_);
}

double DALS::schedule_factor() {
  at::NoGradGuard no_grad;
  advance(torch::Tensor());
  return global_.scale.item<double>();
}

torch::Tensor DALS::step(LossClosure closure) {
  at::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  PreparedStep prepared = prepare_step();  // every group and call checked (NOTE: [atomic steps])
  if (!prepared.buckets.empty() && global_.clock.device() != prepared.buckets[0].device) {
    global_ = global_.to(prepared.buckets[0].device);  // once: the global state lives where the params are
  }
  // Only now does global state move; the lr of each call is its group's times the schedule factor.
  const Global saved = global_.clone();
  try {
    advance(loss);
    for (Bucket& b : prepared.buckets) {
      b.inputs.lr = b.inputs.lr * global_.scale.to(b.device, /*non_blocking=*/true);
      if (b.inputs.filter_coef) b.inputs.filter_coef = global_.filter_coef.to(b.device, /*non_blocking=*/true);
    }
    run(prepared);
  } catch (...) {
    global_ = saved;
    throw;
  }
  return loss;
}

Recipe DALS::recipe(const OptimizerOptions& group) const {
  const auto& o = static_cast<const DALSOptions&>(group);
  Recipe r;
  r.filter = "blend";
  r.moment = "sgd";
  r.decay = "coupled";
  r.trust = "update";
  r.momentum = o.momentum();
  r.trust_coefficient = o.trust_coefficient();
  r.ratio_min = kRatioMin;
  r.ratio_max = kRatioMax;
  r.maximize = o.maximize();
  return r;
}

TensorSettings DALS::tensor_settings(const OptimizerOptions& group, size_t index, const torch::Tensor&) const {
  const auto& o = static_cast<const DALSOptions&>(group);
  return {o.weight_decay(), 0.3 + 0.4 * per_param(o.depth_ratio(), index), true};
}

const std::vector<double>& DALS::lr_mult(const OptimizerOptions& group) const {
  return static_cast<const DALSOptions&>(group).lr_mult();
}

const std::string& DALS::state_precision(const OptimizerOptions& group) const {
  return static_cast<const DALSOptions&>(group).state_precision();
}

void DALS::set_state_precision(OptimizerOptions& group, const std::string& precision) const {
  static_cast<DALSOptions&>(group).state_precision(precision);
}

std::optional<torch::Tensor> DALS::filter_coef(const OptimizerOptions&, const torch::Device& device) const {
  return device.is_cpu() ? global_.filter_coef : global_.filter_coef.to(device, /*non_blocking=*/true);
}

// As the Python state_dict's "dals" entry: the clock as integers, the detector and filter coefficients.
void DALS::save_global(torch::serialize::OutputArchive& archive) const {
  const torch::Tensor clock = global_.clock.cpu();
  archive.write("step", c10::IValue(static_cast<int64_t>(clock[0].item<double>())));
  archive.write("cycle", c10::IValue(static_cast<int64_t>(clock[1].item<double>())));
  archive.write("cycle_len", c10::IValue(static_cast<int64_t>(clock[2].item<double>())));
  archive.write("detector", global_.detector.cpu());
  archive.write("filter_coef", global_.filter_coef.cpu());
}

std::function<void()> DALS::load_global(torch::serialize::InputArchive& archive) {
  auto read_int = [&](const char* key, int64_t low) {
    c10::IValue v;
    TORCH_CHECK_VALUE(archive.try_read(key, v) && v.isInt() && v.toInt() >= low, "DALS state: ", key,
                      " must be an int >= ", low);
    return v.toInt();
  };
  const int64_t step = read_int("step", 0), cycle = read_int("cycle", 0), cycle_len = read_int("cycle_len", 1);
  torch::Tensor detector, filter_coef;
  TORCH_CHECK_VALUE(archive.try_read("detector", detector) && detector.numel() == 3 &&
                        detector.scalar_type() == at::kDouble,
                    "DALS state: detector must be a float64 tensor [ema, seen, phase]");
  TORCH_CHECK_VALUE(archive.try_read("filter_coef", filter_coef) && filter_coef.numel() == 2 &&
                        filter_coef.scalar_type() == at::kDouble,
                    "DALS state: filter_coef must be a float64 tensor [alpha, gate]");
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  Global g{at::tensor(std::vector<double>{static_cast<double>(step), static_cast<double>(cycle),
                                          static_cast<double>(cycle_len)}, f64),
           at::ones({1}, f64), detector.reshape({3}).contiguous(), filter_coef.reshape({2}).contiguous()};
  return [this, g] { global_ = g.to(global_.clock.device()); };
}

}  // namespace torch_layerlr::optim
