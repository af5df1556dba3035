// C++ API tests: bit-exact save/load resume for every case of cases.h, options validation (c10::Error naming the
// option), param groups with their own options, bf16 parameters against a plain float64 LAMB, low-precision state
// (its forms, archives of another precision converted, crafted ones refused), DALS's schedule and DepthScaledSGD's
// closed forms. Trajectories against the Python classes: tests/test_cpp_api.py.
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/module.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/serialize.h>

#include <cmath>
#include <sstream>

#include "cases.h"

namespace {

namespace optim = torch_layerlr::optim;
using layerlr_test::Params;

const std::vector<std::vector<int64_t>> kShapes = {{4, 3}, {3}, {2, 3, 2}, {5}};

Params make_params(torch::Dtype dtype, int64_t seed = 0, const std::vector<std::vector<int64_t>>& shapes = kShapes) {
  torch::manual_seed(seed);
  Params p;
  for (const auto& shape : shapes) {
    p.push_back(torch::randn(shape, torch::kFloat64).to(dtype).set_requires_grad(true));
  }
  return p;
}

Params clone_params(const Params& params) {
  Params out;
  for (const auto& p : params) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

// Step k's gradient of parameter i: a fixed function of (k, i), the same for every copy of the params.
void set_grads(const Params& params, int64_t k) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::manual_seed(1000 * k + static_cast<int64_t>(i));
    params[i].mutable_grad() = torch::randn(params[i].sizes(), torch::kFloat64).to(params[i].scalar_type());
  }
}

void run_steps(optim::FusedOptimizer& opt, const Params& params, int64_t first, int64_t last) {
  for (int64_t k = first; k < last; ++k) {
    set_grads(params, k);
    const double loss = 2.0 / (1.0 + static_cast<double>(k));  // a falling loss moves DALS's phases
    opt.step([loss] { return torch::tensor(loss, torch::dtype(torch::kFloat32)); });
  }
}

// The first two of the four params.
Params slice_of(const Params& p) { return Params(p.begin(), p.begin() + 2); }

void expect_equal(const Params& a, const Params& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "param " << i << " differs";
  }
}

// ---- save / load: a resumed run equals the uninterrupted one bit for bit -------------------------------------
class Resume : public ::testing::TestWithParam<std::string> {};

TEST_P(Resume, BitExact) {
  const auto& factory = layerlr_test::cases().at(GetParam());
  const auto& shapes = layerlr_test::is_low_precision_case(GetParam()) ? layerlr_test::kLowPrecisionShapes : kShapes;
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    Params straight = make_params(dtype, 0, shapes);
    auto opt = factory(straight);
    run_steps(*opt, straight, 0, 7);

    std::stringstream buffer;
    {
      torch::serialize::OutputArchive archive;
      opt->save(archive);
      archive.save_to(buffer);
    }
    Params resumed = clone_params(straight);
    auto opt2 = factory(resumed);
    {
      torch::serialize::InputArchive archive;
      archive.load_from(buffer);
      opt2->load(archive);
    }
    run_steps(*opt, straight, 7, 15);
    run_steps(*opt2, resumed, 7, 15);
    expect_equal(straight, resumed);
  }
}

INSTANTIATE_TEST_SUITE_P(AllCases, Resume, ::testing::ValuesIn([] {
                           std::vector<std::string> names;
                           for (const auto& [name, factory] : layerlr_test::cases()) names.push_back(name);
                           return names;
                         }()));

TEST(Resume, LoadRejectsAnotherOptimizersLayoutWithoutChangingState) {
  Params params = make_params(torch::kFloat32);
  optim::LAMB lamb(params, optim::LAMBOptions(0.01));
  run_steps(lamb, params, 0, 3);
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    lamb.save(archive);
    archive.save_to(buffer);
  }
  // Fewer params in the group: the archive does not fit, and the optimizer keeps its options and state.
  Params fewer = slice_of(params);
  optim::LAMB other(fewer, optim::LAMBOptions(0.03));
  run_steps(other, fewer, 0, 2);
  const auto before = static_cast<const optim::FusedParamState&>(*other.state().at(fewer[0].unsafeGetTensorImpl()))
                          .exp_avg()
                          .clone();
  torch::serialize::InputArchive archive;
  archive.load_from(buffer);
  try {
    other.load(archive);
    FAIL() << "load accepted an archive of 4 params into a group of 2";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("params"), std::string::npos) << e.what();
  }
  EXPECT_EQ(static_cast<const optim::LAMBOptions&>(other.param_groups()[0].options()).lr(), 0.03);
  EXPECT_TRUE(torch::equal(
      static_cast<const optim::FusedParamState&>(*other.state().at(fewer[0].unsafeGetTensorImpl())).exp_avg(), before));
}

// ---- options validation: c10::Error whose message names the option --------------------------------------------
template <typename F>
void expect_error_naming(F&& make, const std::string& option) {
  try {
    make();
    ADD_FAILURE() << "no error for a bad " << option;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(option), std::string::npos) << "message does not name " << option << ": "
                                                                      << e.what();
  }
}

TEST(Options, InvalidValuesThrowNamingTheOption) {
  Params p = make_params(torch::kFloat32);
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(-1.0)); }, "lr");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).momentum(1.5)); }, "momentum");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).dampening(-0.1)); }, "dampening");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).nesterov(true)); }, "nesterov");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).grokfast_alpha(1.0)); },
                      "grokfast_alpha");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).lr_mult({1.0, 2.0})); },
                      "lr_mult");
  expect_error_naming([&] { optim::LayerwiseSGD(p, optim::LayerwiseSGDOptions(0.1).lr_mult({1, 1, -1, 1})); },
                      "lr_mult[2]");
  expect_error_naming([&] { optim::LayerwiseAdamW(p, optim::LayerwiseAdamWOptions().betas({0.9, 1.0})); },
                      "betas[1]");
  expect_error_naming([&] { optim::LayerwiseAdamW(p, optim::LayerwiseAdamWOptions().eps(-1e-8)); }, "eps");
  expect_error_naming([&] { optim::GrokfastAdamW(p, optim::GrokfastAdamWOptions().grokfast_lambda(-1)); },
                      "grokfast_lambda");
  expect_error_naming([&] { optim::GrokfastAdamW(p, optim::GrokfastAdamWOptions().weight_decay(NAN)); },
                      "weight_decay");
  expect_error_naming([&] { optim::LARS(p, optim::LARSOptions(0.1).trust_coefficient(-1)); }, "trust_coefficient");
  expect_error_naming([&] { optim::LARS(p, optim::LARSOptions(0.1).momentum(0).nesterov(true)); }, "nesterov");
  expect_error_naming([&] { optim::LAMB(p, optim::LAMBOptions().clamp_value(0.0)); }, "clamp_value");
  expect_error_naming([&] { optim::LAMB(p, optim::LAMBOptions().betas({-0.1, 0.9})); }, "betas[0]");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions("slow")); }, "variant");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().momentum(1.0)); }, "momentum");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().alpha(1.1)); }, "alpha");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().warmup_frac(1.0)); }, "warmup_frac");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions("acc").warmup_frac(0.1)); }, "warmup_frac");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().total_steps(0)); }, "total_steps");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().restart_mult(0)); }, "restart_mult");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions().depth_ratio({0.0, 0.5, 1.5, 1.0})); },
                      "depth_ratio[2]");
  expect_error_naming([&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(1.0, 2.0).tau(0.0)); }, "tau");
  expect_error_naming([&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(1.0, 2.0).arch("res3")); },
                      "arch");
  expect_error_naming([&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(1.0, 2.0).depth(0)); }, "depth");
  expect_error_naming([&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(-1.0, 2.0)); }, "mu_xx");
  expect_error_naming([&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(std::nullopt, 2.0)); }, "mu_xx");
  expect_error_naming(
      [&] { optim::DepthScaledSGD(p, optim::DepthScaledSGDOptions(std::nullopt, std::nullopt).sharpness(-2.0)); },
      "sharpness");
}

TEST(Options, GroupOptionsAreCheckedAtConstructionAndStep) {
  Params p = make_params(torch::kFloat32);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(slice_of(p), std::make_unique<optim::LAMBOptions>(optim::LAMBOptions().eps(-1.0)));
  expect_error_naming([&] { optim::LAMB(groups, optim::LAMBOptions()); }, "eps");

  optim::LAMB lamb(p, optim::LAMBOptions());
  static_cast<optim::LAMBOptions&>(lamb.param_groups()[0].options()).weight_decay(-0.5);
  set_grads(p, 0);
  const Params before = clone_params(p);
  expect_error_naming([&] { lamb.step(); }, "weight_decay");
  expect_equal(p, before);  // a rejected step moves nothing
}

// ---- atomic steps: a refused step changes nothing, state included ------------------------------------------
TEST(AtomicStep, RefusedStepLeavesParamsAndStateUntouched) {
  // Two engine calls (float32 and float64 tensors); the second call's grad has the wrong shape, so the checks of
  // every call before the first runs refuse the step: nothing moves and no state appears.
  Params p = make_params(torch::kFloat32);
  p[2] = p[2].detach().to(torch::kFloat64).set_requires_grad(true);
  optim::LAMB lamb(p, optim::LAMBOptions(0.01));
  set_grads(p, 0);
  p[2].mutable_grad() = torch::zeros({7}, torch::kFloat64);
  const Params before = clone_params(p);
  expect_error_naming([&] { lamb.step(); }, "grads[0]");
  expect_equal(p, before);
  EXPECT_TRUE(lamb.state().empty());
  // One engine call refused by the op itself: no state either.
  Params q = make_params(torch::kFloat32);
  optim::LayerwiseAdamW adamw(q, optim::LayerwiseAdamWOptions(0.01));
  set_grads(q, 0);
  q[1].mutable_grad() = torch::zeros({2}, torch::kFloat32);
  expect_error_naming([&] { adamw.step(); }, "grads[1]");
  EXPECT_TRUE(adamw.state().empty());
  // Fixed, the step runs and creates the state.
  set_grads(q, 0);
  adamw.step();
  EXPECT_EQ(adamw.state().size(), 4u);
}

// ---- param groups with different options ---------------------------------------------------------------------
TEST(ParamGroups, EachGroupStepsWithItsOwnOptions) {
  // One optimizer with two groups equals two optimizers, one per group, bit for bit.
  Params together = make_params(torch::kFloat32);
  Params first = clone_params(Params(together.begin(), together.begin() + 2));
  Params second = clone_params(Params(together.begin() + 2, together.end()));
  const auto g2 = optim::LARSOptions(0.05).momentum(0.5).exclude_1d(false).lr_mult({2.0, 0.5});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(Params(together.begin(), together.begin() + 2));
  groups.emplace_back(Params(together.begin() + 2, together.end()), std::make_unique<optim::LARSOptions>(g2));
  optim::LARS both(groups, optim::LARSOptions(0.3).weight_decay(0.01));
  optim::LARS only_first(first, optim::LARSOptions(0.3).weight_decay(0.01));
  optim::LARS only_second(second, g2);
  for (int64_t k = 0; k < 6; ++k) {
    set_grads(together, k);
    for (size_t i = 0; i < 2; ++i) first[i].mutable_grad() = together[i].grad().clone();
    for (size_t i = 0; i < 2; ++i) second[i].mutable_grad() = together[i + 2].grad().clone();
    both.step();
    only_first.step();
    only_second.step();
  }
  expect_equal(Params(together.begin(), together.begin() + 2), first);
  expect_equal(Params(together.begin() + 2, together.end()), second);
  // and the groups really differ: the second group's own rate moved its tensors differently
  EXPECT_EQ(static_cast<const optim::LARSOptions&>(both.param_groups()[1].options()).lr(), 0.05);
}

TEST(ParamGroups, LibTorchSchedulersSetEachGroupsLr) {
  // torch::optim::StepLR reads and writes every group's lr through get_lr/set_lr; DALS's steps then use the
  // scheduled lr times its own schedule factor.
  Params p = make_params(torch::kFloat32);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(Params(p.begin(), p.begin() + 2));
  groups.emplace_back(Params(p.begin() + 2, p.end()), std::make_unique<optim::DALSOptions>(optim::DALSOptions().lr(0.1)));
  optim::DALS dals(groups, optim::DALSOptions().lr(0.02));
  // LibTorch's StepLR multiplies by gamma on its calls number 2, 4, ... (counting from 0): twice in 5 calls.
  torch::optim::StepLR scheduler(dals, /*step_size=*/2, /*gamma=*/0.5);
  for (int64_t k = 0; k < 5; ++k) {
    set_grads(p, k);
    dals.step();
    scheduler.step();
  }
  EXPECT_EQ(dals.trust_ratios().size(), 1u);  // the two groups share one recipe: one engine call, a lr per tensor
  EXPECT_DOUBLE_EQ(dals.param_groups()[0].options().get_lr(), 0.02 * 0.25);
  EXPECT_DOUBLE_EQ(dals.param_groups()[1].options().get_lr(), 0.1 * 0.25);
}

TEST(ParamGroups, ZeroLrMultFreezesATensor) {
  Params p = make_params(torch::kFloat64);
  const Params before = clone_params(p);
  optim::LayerwiseAdamW opt(p, optim::LayerwiseAdamWOptions(0.1).lr_mult({1.0, 0.0, 1.0, 0.0}));
  run_steps(opt, p, 0, 3);
  EXPECT_FALSE(torch::equal(p[0], before[0]));
  EXPECT_TRUE(torch::equal(p[1], before[1]));
  EXPECT_TRUE(torch::equal(p[3], before[3]));
}

// ---- bf16 parameters against a plain float64 LAMB ---------------------------------------------------------------
// LAMB, Algorithm 2 of You et al. (2020), written with plain tensor ops in float64.
struct ReferenceLamb {
  double lr, beta1, beta2, eps, wd;
  std::vector<torch::Tensor> m, v;
  int64_t t = 0;
  void step(std::vector<torch::Tensor>& w, const std::vector<torch::Tensor>& g) {
    ++t;
    if (m.empty()) {
      for (const auto& x : w) {
        m.push_back(torch::zeros_like(x));
        v.push_back(torch::zeros_like(x));
      }
    }
    for (size_t i = 0; i < w.size(); ++i) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const auto mhat = m[i] / (1 - std::pow(beta1, t));
      const auto vhat = v[i] / (1 - std::pow(beta2, t));
      const auto r = mhat / (vhat.sqrt() + eps) + wd * w[i];
      const double wn = w[i].norm().item<double>(), rn = r.norm().item<double>();
      const double ratio = (wn > 0 && rn > 0) ? wn / rn : 1.0;
      w[i] = w[i] - lr * ratio * r;
    }
  }
};

TEST(Dtypes, Bf16ParamsFollowTheFloat64Reference) {
  for (auto dtype : {torch::kBFloat16, torch::kFloat64}) {
    Params p = make_params(dtype);
    std::vector<torch::Tensor> ref;
    for (const auto& x : p) ref.push_back(x.detach().to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true));
    optim::LAMB lamb(p, optim::LAMBOptions(0.01).weight_decay(0.01));
    ReferenceLamb reference{0.01, 0.9, 0.999, 1e-6, 0.01};
    for (int64_t k = 0; k < 5; ++k) {
      set_grads(p, k);
      std::vector<torch::Tensor> g;
      for (const auto& x : p) g.push_back(x.grad().to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true));
      lamb.step();
      reference.step(ref, g);
    }
    // bf16 keeps 8 significant bits: each step rounds the params (relative 2^-8); float64 agrees to rounding.
    const double tol = dtype == torch::kBFloat16 ? 2e-2 : 1e-12;
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_EQ(p[i].scalar_type(), dtype);
      const auto& state = static_cast<const optim::FusedParamState&>(*lamb.state().at(p[i].unsafeGetTensorImpl()));
      EXPECT_EQ(state.exp_avg().scalar_type(), dtype);
      EXPECT_EQ(state.step().scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::allclose(p[i].detach().to(torch::kFloat64), ref[i], tol, tol))
          << "param " << i << " (" << dtype << ")";
    }
  }
}

// ---- low-precision state (state_precision) --------------------------------------------------------------------
Params low_precision_params() { return make_params(torch::kFloat32, 0, layerlr_test::kLowPrecisionShapes); }

const optim::FusedParamState& state_of(const optim::FusedOptimizer& opt, const torch::Tensor& p) {
  return static_cast<const optim::FusedParamState&>(*opt.state().at(p.unsafeGetTensorImpl()));
}

optim::FusedParamState& state_of(optim::FusedOptimizer& opt, const torch::Tensor& p) {
  return static_cast<optim::FusedParamState&>(*opt.state().at(p.unsafeGetTensorImpl()));
}

std::string saved(const optim::FusedOptimizer& opt) {
  std::stringstream buffer;
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  archive.save_to(buffer);
  return buffer.str();
}

void load(optim::FusedOptimizer& opt, const std::string& bytes) {
  std::stringstream buffer(bytes);
  torch::serialize::InputArchive archive;
  archive.load_from(buffer);
  opt.load(archive);
}

TEST(StatePrecision, StateTakesTheFormOfTheOption) {
  Params p = low_precision_params();  // 64x72 and 4100 elements: int8; 3 and 5: the fp32 fallback
  optim::LAMB int8(p, optim::LAMBOptions(0.01).state_precision("int8"));
  run_steps(int8, p, 0, 2);
  for (size_t i : {0, 2}) {
    const auto& s = state_of(int8, p[i]);
    const int64_t blocks = (p[i].numel() + 255) / 256;
    for (const auto& [codes, absmax] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{
             {s.exp_avg(), s.exp_avg_absmax()}, {s.exp_avg_sq(), s.exp_avg_sq_absmax()}}) {
      EXPECT_EQ(codes.scalar_type(), torch::kUInt8);
      EXPECT_EQ(codes.sizes(), p[i].sizes());
      EXPECT_EQ(absmax.scalar_type(), torch::kFloat32);
      EXPECT_EQ(absmax.dim(), 1);
      EXPECT_EQ(absmax.numel(), blocks);
    }
  }
  for (size_t i : {1, 3}) {
    const auto& s = state_of(int8, p[i]);
    EXPECT_EQ(s.exp_avg().scalar_type(), torch::kFloat32);
    EXPECT_FALSE(s.exp_avg_absmax().defined());
  }
  Params q = low_precision_params();
  optim::LayerwiseSGD bf16(q, optim::LayerwiseSGDOptions(0.1).momentum(0.9).state_precision("bf16"));
  run_steps(bf16, q, 0, 2);
  for (const auto& x : q) {
    EXPECT_EQ(state_of(bf16, x).momentum_buffer().scalar_type(), torch::kBFloat16);
    EXPECT_FALSE(state_of(bf16, x).momentum_buffer_absmax().defined());
  }
}

TEST(StatePrecision, UnknownPrecisionThrowsNamingTheOption) {
  Params p = make_params(torch::kFloat32);
  expect_error_naming([&] { optim::LayerwiseAdamW(p, optim::LayerwiseAdamWOptions().state_precision("fp16")); },
                      "state_precision");
  expect_error_naming([&] { optim::DALS(p, optim::DALSOptions("dals").state_precision("int4")); }, "state_precision");
}

const std::string& precision_of(const optim::FusedOptimizer& opt) {
  return static_cast<const optim::LayerwiseAdamWOptions&>(opt.param_groups()[0].options()).state_precision();
}

// Each param's first moment is in the form its group's state_precision gives it, with an absmax for int8 only.
void expect_forms(const optim::FusedOptimizer& opt, const Params& params) {
  const std::map<std::string, torch::Dtype> dtypes = {
      {"fp32", torch::kFloat32}, {"bf16", torch::kBFloat16}, {"int8", torch::kUInt8}};
  for (const auto& p : params) {
    const std::string form = optim::tensor_precision(precision_of(opt), p);
    EXPECT_EQ(state_of(opt, p).exp_avg().scalar_type(), dtypes.at(form)) << form;
    EXPECT_EQ(state_of(opt, p).exp_avg_absmax().defined(), form == "int8") << form;
  }
}

TEST(StatePrecision, ArchiveOfAnotherPrecisionIsConverted) {
  // The optimizer keeps its precision and takes the archive's state in its own form, then steps on it.
  // (The values against the Python classes' conversion: tests/test_cpp_api.py.)
  for (const char* from : {"fp32", "bf16", "int8"}) {
    Params p = low_precision_params();
    optim::LayerwiseAdamW source(p, optim::LayerwiseAdamWOptions(0.01).state_precision(from));
    run_steps(source, p, 0, 3);
    const std::string bytes = saved(source);
    for (const char* to : {"fp32", "bf16", "int8"}) {
      if (std::string(from) == to) continue;
      Params q = clone_params(p);
      optim::LayerwiseAdamW opt(q, optim::LayerwiseAdamWOptions(0.01).state_precision(to));
      load(opt, bytes);
      EXPECT_EQ(precision_of(opt), to);
      expect_forms(opt, q);
      run_steps(opt, q, 3, 5);
      expect_forms(opt, q);
    }
  }
}

TEST(StatePrecision, ConversionToBf16RoundsToNearest) {
  // A checkpoint converts deterministically: bf16 from float32 values rounds to nearest, not stochastically.
  Params p = low_precision_params();
  optim::LayerwiseAdamW fp32(p, optim::LayerwiseAdamWOptions(0.01));
  run_steps(fp32, p, 0, 2);
  Params q = clone_params(p);
  optim::LayerwiseAdamW bf16(q, optim::LayerwiseAdamWOptions(0.01).state_precision("bf16"));
  load(bf16, saved(fp32));
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_TRUE(torch::equal(state_of(bf16, q[i]).exp_avg(), state_of(fp32, p[i]).exp_avg().to(torch::kBFloat16)));
  }
}

TEST(StatePrecision, CraftedArchiveOfAnotherPrecisionIsRefusedBeforeConversion) {
  // The archive is checked in its own precision first: a bad one is refused naming the key and changes nothing.
  Params p = low_precision_params();
  optim::LayerwiseAdamW int8(p, optim::LayerwiseAdamWOptions(0.01).state_precision("int8"));
  run_steps(int8, p, 0, 2);
  const std::string good = saved(int8);
  const std::vector<std::pair<std::function<void(optim::LayerwiseAdamW&, const Params&)>, std::string>> crafted = {
      {[](auto& o, const Params& q) { state_of(o, q[0]).exp_avg_absmax(-state_of(o, q[0]).exp_avg_absmax()); },
       "negative or non-finite"},
      {[](auto& o, const Params& q) { state_of(o, q[2]).exp_avg_sq_absmax(torch::Tensor()); },
       "exp_avg_sq_absmax is missing"},
      {[](auto& o, const Params& q) { state_of(o, q[0]).exp_avg(state_of(o, q[0]).exp_avg().reshape({-1})); },
       "exp_avg has shape"},
      // int8 codes under a group that claims bf16 state
      {[](auto& o, const Params&) {
         static_cast<optim::LayerwiseAdamWOptions&>(o.param_groups()[0].options()).state_precision("bf16");
       },
       "state of param 0 of group 0: exp_avg has dtype"},
  };
  for (const auto& [change, message] : crafted) {
    for (const char* to : {"fp32", "bf16"}) {
      Params q = clone_params(p);
      optim::LayerwiseAdamW bad(q, optim::LayerwiseAdamWOptions(0.01).state_precision("int8"));
      load(bad, good);
      change(bad, q);
      const std::string bytes = saved(bad);
      Params r = clone_params(p);
      optim::LayerwiseAdamW target(r, optim::LayerwiseAdamWOptions(0.01).state_precision(to));
      run_steps(target, r, 0, 1);
      const auto before = state_of(target, r[0]).exp_avg().clone();
      expect_error_naming([&] { load(target, bytes); }, message);
      EXPECT_TRUE(torch::equal(state_of(target, r[0]).exp_avg(), before)) << message;
      EXPECT_EQ(precision_of(target), to) << message;
    }
  }
}

TEST(StatePrecision, CraftedArchiveTensorsAreRefusedNamingTheKey) {
  Params p = low_precision_params();
  optim::LayerwiseAdamW source(p, optim::LayerwiseAdamWOptions(0.01).state_precision("int8"));
  run_steps(source, p, 0, 2);
  const std::string good = saved(source);
  // Each change to the first param's state, saved, is refused by a fresh optimizer with `message` in the error.
  const std::vector<std::pair<std::function<void(optim::FusedParamState&)>, std::string>> crafted = {
      {[](auto& s) { s.exp_avg_absmax(s.exp_avg_absmax().narrow(0, 0, 5)); }, "exp_avg_absmax"},
      {[](auto& s) { s.exp_avg_absmax(s.exp_avg_absmax().to(torch::kFloat64)); }, "exp_avg_absmax"},
      {[](auto& s) { s.exp_avg_absmax(-s.exp_avg_absmax()); }, "negative or non-finite"},
      {[](auto& s) { s.exp_avg_sq_absmax(torch::full_like(s.exp_avg_sq_absmax(), NAN)); }, "exp_avg_sq_absmax"},
      {[](auto& s) { s.exp_avg_absmax(torch::Tensor()); }, "exp_avg_absmax is missing"},
      {[](auto& s) { s.exp_avg(s.exp_avg().to(torch::kFloat32)); }, "exp_avg has dtype"},
      {[](auto& s) { s.exp_avg_sq(s.exp_avg_sq().reshape({-1})); }, "exp_avg_sq has shape"},
  };
  for (const auto& [change, message] : crafted) {
    Params q = clone_params(p);
    optim::LayerwiseAdamW bad(q, optim::LayerwiseAdamWOptions(0.01).state_precision("int8"));
    load(bad, good);
    change(state_of(bad, q[0]));
    const std::string bytes = saved(bad);
    Params r = clone_params(p);
    optim::LayerwiseAdamW target(r, optim::LayerwiseAdamWOptions(0.01).state_precision("int8"));
    expect_error_naming([&] { load(target, bytes); }, message);
    EXPECT_TRUE(target.state().empty()) << message;  // a refused archive changes nothing
  }
  // bf16 state has no absmax: one in the archive is refused too.
  Params b = low_precision_params();
  optim::LayerwiseAdamW bf16(b, optim::LayerwiseAdamWOptions(0.01).state_precision("bf16"));
  run_steps(bf16, b, 0, 1);
  state_of(bf16, b[0]).exp_avg_absmax(torch::ones({18}));
  const std::string bytes = saved(bf16);
  Params c = clone_params(b);
  optim::LayerwiseAdamW target(c, optim::LayerwiseAdamWOptions(0.01).state_precision("bf16"));
  expect_error_naming([&] { load(target, bytes); }, "exp_avg_absmax is present");
}

TEST(StatePrecision, StateOfAnotherFormIsRefusedAtTheStep) {
  // A group whose state_precision changed after its state was made: the step names the state, and moves nothing.
  Params p = low_precision_params();
  optim::LAMB lamb(p, optim::LAMBOptions(0.01).state_precision("int8"));
  run_steps(lamb, p, 0, 1);
  static_cast<optim::LAMBOptions&>(lamb.param_groups()[0].options()).state_precision("bf16");
  const Params before = clone_params(p);
  set_grads(p, 1);
  expect_error_naming([&] { lamb.step(); }, "state of param 0 of group 0: exp_avg");
  expect_equal(p, before);
}

// ---- DALS: schedule, loss phase, depths of a module -------------------------------------------------------------
TEST(DALS, WarmupCosineScheduleAndFirstStepMovesNothing) {
  Params p = make_params(torch::kFloat64);
  optim::DALS dals(p, optim::DALSOptions("dals").total_steps(100));  // warmup floor(0.05 * 100) = 5 steps
  const Params before = clone_params(p);
  set_grads(p, 0);
  dals.step();
  expect_equal(p, before);  // s(1) = 0/5
  for (int64_t k = 2; k <= 5; ++k) EXPECT_DOUBLE_EQ(dals.schedule_factor(), (k - 1) / 5.0);
  EXPECT_DOUBLE_EQ(dals.schedule_factor(), 1.0);  // t = 5: cosine at progress 0
  for (int64_t k = 7; k < 100; ++k) dals.schedule_factor();
  EXPECT_NEAR(dals.schedule_factor(), 0.5 * (1 + std::cos(M_PI * 94.0 / 95.0)), 1e-15);  // t = 99
  optim::DALS unscheduled(clone_params(p), optim::DALSOptions("dals").schedule(false));
  EXPECT_EQ(unscheduled.schedule_factor(), 1.0);  // the lr is left to an external scheduler
}

TEST(DALS, SgdrRestartsForVariantAcc) {
  // cycle c advances first, restarts at the cycle length T_i (then T_i *= restart_mult); s = (1 + cos(pi c/T_i))/2
  Params p = make_params(torch::kFloat64);
  optim::DALS dals(p, optim::DALSOptions("acc").restart_steps(3).restart_mult(2));
  const std::vector<std::pair<int, int>> cycle_and_length = {{1, 3}, {2, 3}, {0, 6}, {1, 6}, {2, 6}};
  for (const auto& [c, length] : cycle_and_length) {
    EXPECT_NEAR(dals.schedule_factor(), 0.5 * (1 + std::cos(M_PI * c / length)), 1e-15) << c << "/" << length;
  }
}

TEST(DALS, LossPhaseFollowsTheLossEma) {
  Params p = make_params(torch::kFloat32);
  optim::DALS dals(p);
  EXPECT_EQ(dals.phase(), 0);
  dals.update_phase(1.0);  // seeds the EMA
  for (int i = 0; i < 30; ++i) dals.update_phase(1.0);  // flat: Delta = 0 <= tau2
  EXPECT_EQ(dals.phase(), 2);
  dals.update_phase(0.0);  // EMA falls by 5%: Delta = 0.05 > tau1
  EXPECT_EQ(dals.phase(), 0);
}

TEST(DALS, ModuleChildrenGiveDepthRatios) {
  struct Net : torch::nn::Module {
    torch::nn::Linear a{nullptr}, b{nullptr}, c{nullptr};
    Net() {
      a = register_module("a", torch::nn::Linear(3, 4));
      b = register_module("b", torch::nn::Linear(4, 4));
      c = register_module("c", torch::nn::Linear(4, 2));
    }
  } net;
  optim::DALS dals(net);
  const auto& o = static_cast<const optim::DALSOptions&>(dals.param_groups()[0].options());
  EXPECT_EQ(o.depth_ratio(), (std::vector<double>{0.0, 0.0, 0.5, 0.5, 1.0, 1.0}));
}

// ---- DepthScaledSGD: the closed forms -------------------------------------------------------------------------
TEST(DepthScaledSGD, ClosedForms) {
  namespace theory = torch_layerlr::theory;
  // eq. 13: chain S = mu_xx L r^(2-2/L); at L = 1 it is mu_xx, at L = 2 mu_xx 2 r.
  EXPECT_DOUBLE_EQ(theory::sharpness(1, 0.5, 3.0, "chain"), 0.5);
  EXPECT_DOUBLE_EQ(theory::sharpness(2, 0.5, 3.0, "chain"), 0.5 * 2 * 6.0);
  // eq. 27: res1 S = mu_xx r^(2-2/L); eq. 33: res2 S = 4 mu_xx r^(2-2/L) (r^(1/L) - 1), at L = 2 with r = 4.
  EXPECT_DOUBLE_EQ(theory::sharpness(2, 0.5, 2.0, "res1"), 0.5 * 4.0);
  EXPECT_DOUBLE_EQ(theory::sharpness(2, 1.0, 4.0, "res2"), 4.0 * 4.0 * 1.0);
  EXPECT_DOUBLE_EQ(theory::max_stable_lr(2, 1.0, 4.0, 2.0, "res2"), 1.0 / 32.0);

  Params p = make_params(torch::kFloat32);
  optim::DepthScaledSGD sgd(p, optim::DepthScaledSGDOptions(0.5, 3.0).tau(2.0));
  EXPECT_EQ(*sgd.depth_scaling().depth(), 4);  // one layer per parameter tensor
  EXPECT_DOUBLE_EQ(sgd.scaled_lr(), 1.0 / (2.0 * 0.5 * 4 * std::pow(6.0, 1.5)));
  EXPECT_DOUBLE_EQ(sgd.param_groups()[0].options().get_lr(), sgd.scaled_lr());
  optim::DepthScaledSGD measured(p, optim::DepthScaledSGDOptions(std::nullopt, std::nullopt).sharpness(8.0));
  EXPECT_DOUBLE_EQ(measured.scaled_lr(), 1.0 / 8.0);
}

}  // namespace
