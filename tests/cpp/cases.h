// The optimizer configurations shared by the C++ tests and the trajectory driver. tests/test_cpp_api.py builds
// the same configurations with the Python classes (its CASES table, by name) and compares trajectories.
// Every case takes the four parameters of the driver's inputs: shapes 4x3, 3, 2x3x2, 5, and for the low-precision
// cases (names ending in _bf16 or _int8; kLowPrecisionShapes) 64x72, 3, 4100, 5, so that int8 state applies to the
// first and third (>= 4096 elements; 4100 ends in a partial block) and the others keep their fp32 fallback.
#pragma once

#include <torch_layerlr/optim.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace layerlr_test {

namespace optim = torch_layerlr::optim;
using torch::optim::OptimizerParamGroup;
using Params = std::vector<torch::Tensor>;
using Factory = std::function<std::unique_ptr<optim::FusedOptimizer>(const Params&)>;

inline const std::vector<std::vector<int64_t>> kLowPrecisionShapes = {{64, 72}, {3}, {4100}, {5}};

inline bool is_low_precision_case(const std::string& name) {
  auto ends_with = [&](const std::string& tail) {
    return name.size() > tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  return ends_with("_bf16") || ends_with("_int8");
}

inline Params slice(const Params& p, size_t begin, size_t end) { return Params(p.begin() + begin, p.begin() + end); }

// Two groups: the first two parameters with the defaults, the other two with `options`.
template <typename Options>
std::vector<OptimizerParamGroup> two_groups(const Params& p, const Options& options) {
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(slice(p, 0, 2));
  groups.emplace_back(slice(p, 2, 4), std::make_unique<Options>(options));
  return groups;
}

inline const std::map<std::string, Factory>& cases() {
  using std::make_unique;
  static const std::map<std::string, Factory> table = {
      {"sgd",
       [](const Params& p) {
         return make_unique<optim::LayerwiseSGD>(
             p, optim::LayerwiseSGDOptions(0.1).momentum(0.9).weight_decay(0.01).lr_mult({1.0, 0.5, 2.0, 0.25}));
       }},
      {"sgd_nesterov_grokfast",
       [](const Params& p) {
         return make_unique<optim::LayerwiseSGD>(p, optim::LayerwiseSGDOptions(0.05)
                                                        .momentum(0.8)
                                                        .nesterov(true)
                                                        .grokfast_alpha(0.9)
                                                        .grokfast_lambda(1.5)
                                                        .maximize(true));
       }},
      {"sgd_groups",
       [](const Params& p) {
         return make_unique<optim::LayerwiseSGD>(
             two_groups(p, optim::LayerwiseSGDOptions(0.02).weight_decay(0.1).lr_mult({3.0, 0.5})),
             optim::LayerwiseSGDOptions(0.1).momentum(0.5).dampening(0.3));
       }},
      {"adamw",
       [](const Params& p) {
         return make_unique<optim::LayerwiseAdamW>(p, optim::LayerwiseAdamWOptions(0.01)
                                                          .betas({0.8, 0.99})
                                                          .eps(1e-6)
                                                          .weight_decay(0.05)
                                                          .lr_mult({1.0, 2.0, 0.5, 0.0}));
       }},
      {"grokfast_adamw",
       [](const Params& p) { return make_unique<optim::GrokfastAdamW>(p, optim::GrokfastAdamWOptions(0.01)); }},
      {"lars",
       [](const Params& p) {
         return make_unique<optim::LARS>(
             p, optim::LARSOptions(0.5).momentum(0.9).weight_decay(1e-3).trust_coefficient(0.01).eps(1e-8));
       }},
      {"lars_nesterov_grokfast",
       [](const Params& p) {
         return make_unique<optim::LARS>(
             p, optim::LARSOptions(0.2).nesterov(true).exclude_1d(false).grokfast_alpha(0.8).weight_decay(1e-2));
       }},
      {"lamb", [](const Params& p) { return make_unique<optim::LAMB>(p, optim::LAMBOptions(0.02)); }},
      {"lamb_groups_clamp",
       [](const Params& p) {
         return make_unique<optim::LAMB>(two_groups(p, optim::LAMBOptions(0.005).betas({0.7, 0.9}).exclude_1d(true)),
                                         optim::LAMBOptions(0.02)
                                             .clamp_value(0.5)
                                             .bias_correction(false)
                                             .grokfast_alpha(0.9)
                                             .maximize(true));
       }},
      {"lamb_groups_lr",
       [](const Params& p) {  // one engine call for both groups, with a lr per tensor
         return make_unique<optim::LAMB>(two_groups(p, optim::LAMBOptions(0.005)), optim::LAMBOptions(0.02));
       }},
      {"dals",
       [](const Params& p) {
         return make_unique<optim::DALS>(p, optim::DALSOptions("dals").total_steps(20).depth_ratio(
                                                {0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0}));
       }},
      {"dals_fast",
       [](const Params& p) {
         return make_unique<optim::DALS>(
             p, optim::DALSOptions("fast").total_steps(30).lr_mult({1.0, 0.5, 2.0, 1.5}).depth_ratio({0.25}));
       }},
      {"dals_acc",
       [](const Params& p) {
         return make_unique<optim::DALS>(p, optim::DALSOptions("acc").restart_steps(5).restart_mult(2).lr(0.05));
       }},
      {"dals_no_schedule",
       [](const Params& p) {
         return make_unique<optim::DALS>(p, optim::DALSOptions("dals").schedule(false).lr(0.01));
       }},
      {"lars_default_lr", [](const Params& p) { return make_unique<optim::LARS>(p); }},
      {"depth_scaled_res2",
       [](const Params& p) {
         return make_unique<optim::DepthScaledSGD>(
             p, optim::DepthScaledSGDOptions(1.3, 2.1).arch("res2").tau(2.0).momentum(0.5));
       }},
      {"depth_scaled_chain",
       [](const Params& p) {
         return make_unique<optim::DepthScaledSGD>(p, optim::DepthScaledSGDOptions(0.7, 1.9).weight_decay(0.01));
       }},
      // ---- low-precision state (state_precision) ----
      {"sgd_bf16",
       [](const Params& p) {
         return make_unique<optim::LayerwiseSGD>(
             p, optim::LayerwiseSGDOptions(0.1).momentum(0.9).weight_decay(0.01).state_precision("bf16"));
       }},
      {"adamw_bf16",
       [](const Params& p) {
         return make_unique<optim::LayerwiseAdamW>(p, optim::LayerwiseAdamWOptions(0.01)
                                                          .betas({0.8, 0.99})
                                                          .weight_decay(0.05)
                                                          .lr_mult({1.0, 2.0, 0.5, 1.5})
                                                          .state_precision("bf16"));
       }},
      {"lamb_bf16",
       [](const Params& p) {
         return make_unique<optim::LAMB>(p, optim::LAMBOptions(0.02).state_precision("bf16"));
       }},
      {"dals_bf16",
       [](const Params& p) {
         return make_unique<optim::DALS>(p, optim::DALSOptions("dals")
                                                .total_steps(20)
                                                .depth_ratio({0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0})
                                                .state_precision("bf16"));
       }},
      {"sgd_int8",
       [](const Params& p) {
         return make_unique<optim::LayerwiseSGD>(
             p, optim::LayerwiseSGDOptions(0.1).momentum(0.9).weight_decay(0.01).state_precision("int8"));
       }},
      {"adamw_int8",
       [](const Params& p) {
         return make_unique<optim::LayerwiseAdamW>(p, optim::LayerwiseAdamWOptions(0.01)
                                                          .betas({0.8, 0.99})
                                                          .weight_decay(0.05)
                                                          .lr_mult({1.0, 2.0, 0.5, 1.5})
                                                          .state_precision("int8"));
       }},
      {"lamb_int8",
       [](const Params& p) {
         return make_unique<optim::LAMB>(p, optim::LAMBOptions(0.02).state_precision("int8"));
       }},
      {"dals_int8",
       [](const Params& p) {
         return make_unique<optim::DALS>(p, optim::DALSOptions("dals")
                                                .total_steps(20)
                                                .depth_ratio({0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0})
                                                .state_precision("int8"));
       }},
      {"grokfast_adamw_int8",
       [](const Params& p) {
         return make_unique<optim::GrokfastAdamW>(p,
                                                  optim::GrokfastAdamWOptions(0.01).state_precision("int8"));
       }},
      {"lars_int8",
       [](const Params& p) {
         return make_unique<optim::LARS>(p, optim::LARSOptions(0.5)
                                                .momentum(0.9)
                                                .weight_decay(1e-3)
                                                .trust_coefficient(0.01)
                                                .state_precision("int8"));
       }},
      {"lamb_groups_int8",
       [](const Params& p) {  // a group in each low precision: one engine call per form
         return make_unique<optim::LAMB>(two_groups(p, optim::LAMBOptions(0.005).state_precision("int8")),
                                         optim::LAMBOptions(0.02).state_precision("bf16"));
       }},
  };
  return table;
}

}  // namespace layerlr_test
