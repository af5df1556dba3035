// CPU backend of the fused step: at::vec inner loops, at::parallel_for over fixed-size chunks.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <vector>

#include "../engine/step_args.h"
#include "../engine/dense_views.h"
#include "../engine/dispatch.h"
#include "../engine/step_math.h"
#include "cpu_backend.h"
#include "loops.h"
#include "low_precision.h"
#include "step_kernel.h"

namespace layerlr::cpu {
namespace {

template <typename scalar_t, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
void run(const StepArgs& a, const std::vector<at::Tensor>& views) {
  using T = at::opmath_type<scalar_t>;
  // Full-precision state is walked in place; low-precision state through block buffers of T (low_precision.h).
  using K = Kernel<scalar_t, scalar_t, kFilter, kMoment, kBuffer, kTrust>;
  using KB = BlockKernel<Kernel<scalar_t, T, kFilter, kMoment, kBuffer, kTrust>, kFilter, kMoment, kBuffer, kTrust>;
  const StatePrecision prec = a.precision;
  const bool low = prec != StatePrecision::kFull;
  const Recipe& r = a.recipe;
  const int64_t n = static_cast<int64_t>(a.params.size());

  // Host side of the step: per-tensor numbers in double (NOTE in coef.h).
  const bool lr_per_tensor = a.lr.numel() != 1;  // else one lr for the call (0-d or [1])
  const double scale = a.grad_scale ? read_scalar(*a.grad_scale) : 1.0;
  const bool filter = r.filter != Filter::kNone;  // filter_coef is read only by a recipe with a filter
  const double alpha = filter ? read_scalar(*a.filter_coef, 0) : 0.0;
  const double gate = filter ? read_scalar(*a.filter_coef, 1) : 1.0;
  std::vector<TensorInputs> inputs(n);
  std::vector<Coef<T>> coefs(n);
  std::vector<Slot<scalar_t, scalar_t>> slots(n);
  std::vector<LowSlot> low_slots(low ? n : 0);
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int64_t t = 0; t < n; ++t) {
    TensorInputs& in = inputs[t];
    in.lr = read_scalar(a.lr, lr_per_tensor ? t : 0) * read_scalar(a.lr_mult, t);
    in.weight_decay = read_scalar(a.weight_decay, t);
    in.blend = read_scalar(a.blend, t);
    in.trust = read_scalar(a.trust, t) != 0.0;
    in.step = read_scalar(a.steps[t]) + 1.0;
    in.filter_alpha = alpha;
    in.filter_gate = gate;
    in.grad_scale = scale;
    coefs[t] = make_coef<T>(r, in);
    auto ptr = [&](int d) { const at::Tensor& v = views[t * kDepth + d]; return v.defined() ? v.data_ptr() : nullptr; };
    slots[t] = {static_cast<scalar_t*>(ptr(kParamIdx)), static_cast<scalar_t*>(ptr(kGradIdx)),
                static_cast<scalar_t*>(ptr(kFilterIdx)), static_cast<scalar_t*>(ptr(kExpAvgIdx)),
                static_cast<scalar_t*>(ptr(kExpAvgSqIdx))};
    if (low) {
      const at::TensorList* scales[3] = {&a.filter_scales, &a.exp_avg_scales, &a.exp_avg_sq_scales};
      for (int k = 0; k < 3; ++k) {
        low_slots[t].state[k] = ptr(kFilterIdx + k);
        low_slots[t].absmax[k] = scales[k]->empty() ? nullptr : (*scales[k])[t].mutable_data_ptr<float>();
        low_slots[t].key[k] = rounding_key(static_cast<uint64_t>(a.seed), static_cast<uint64_t>(in.step), t, k);
      }
    }
    const int64_t numel = a.params[t].numel();
    for (int64_t b = 0; b < numel; b += kChunk) chunks.push_back({t, b, std::min(numel, b + kChunk)});
    total += numel;
  }

  auto update_chunk = [&](const Chunk& ch, int64_t) {
    const Slot<scalar_t, scalar_t>& s = slots[ch.tensor];
    if (low) {
      KB::template run<false>(prec, s.param, s.grad, low_slots[ch.tensor], ch.begin, ch.end, coefs[ch.tensor],
                              nullptr);
    } else {
      K::update_range(s, ch.begin, ch.end, coefs[ch.tensor]);
    }
  };
  if constexpr (kTrust == Trust::kNone) {
    for_each_chunk(chunks, 0, chunks.size(), total, update_chunk);
  } else {
    // NOTE: [split trust step] in engine/step_args.h: an update call takes the (reduced) norms it is given.
    std::vector<double> sq(2 * n, 0.0);
    if (a.pass == TrustPass::kUpdate) {
      const at::Tensor& given = *a.sq_norms;
      const double* in = given.const_data_ptr<double>();
      for (int64_t t = 0; t < n; ++t) {
        sq[2 * t] = in[t * given.stride(0)];
        sq[2 * t + 1] = in[t * given.stride(0) + given.stride(1)];
      }
    } else {
      std::vector<double> partials(2 * chunks.size());
      for_each_chunk(chunks, 0, chunks.size(), total, [&](const Chunk& ch, int64_t k) {
        const Slot<scalar_t, scalar_t>& s = slots[ch.tensor];
        if (low) {
          KB::template run<true>(prec, s.param, s.grad, low_slots[ch.tensor], ch.begin, ch.end, coefs[ch.tensor],
                                 &partials[2 * k]);
        } else {
          K::norms_range(s, ch.begin, ch.end, coefs[ch.tensor], &partials[2 * k]);
        }
      });
      // Per-tensor finish: partials added in chunk order (NOTE: [chunking territory, CPU]).
      for (size_t k = 0; k < chunks.size(); ++k) {
        sq[2 * chunks[k].tensor] += partials[2 * k];
        sq[2 * chunks[k].tensor + 1] += partials[2 * k + 1];
      }
      if (a.pass == TrustPass::kNorms) {
        const at::Tensor& given = *a.sq_norms;
        double* out = given.mutable_data_ptr<double>();
        for (int64_t t = 0; t < n; ++t) {
          out[t * given.stride(0)] = sq[2 * t];
          out[t * given.stride(0) + given.stride(1)] = sq[2 * t + 1];
        }
        return;
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const double ratio = trust_ratio(r, inputs[t], sq[2 * t], sq[2 * t + 1]);
      coefs[t].ratio = static_cast<T>(ratio);
      coefs[t].update_filter = false;  // pass 1 advanced the filter
      if (a.trust_ratios) write_scalar(*a.trust_ratios, t, ratio);
    }
    for_each_chunk(chunks, 0, chunks.size(), total, update_chunk);
  }
}


}  // namespace

void fused_step(const StepArgs& a) {
  const int64_t n = static_cast<int64_t>(a.params.size());
  // The step counts set the bias corrections and the first-step branches: a negative or non-finite count
  // (a crafted checkpoint) is refused before anything is written.
  for (int64_t t = 0; t < n; ++t) {
    const double step = read_scalar(a.steps[t]);
    TORCH_CHECK_VALUE(std::isfinite(step) && step >= 0.0, "steps[", t, "] is ", step,
                      ": a step count must be finite and >= 0");
  }

  if (a.found_inf && read_scalar(*a.found_inf) != 0.0) return;  // GradScaler: skip, state untouched
  if (n == 0) return;

  DenseViews dense(a);
  const std::vector<at::Tensor>& views = dense.views;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.params[0].scalar_type(), "layerlr_fused_step", [&] {
    dispatch_recipe(a.recipe, [&]<bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>() {
      run<scalar_t, kFilter, kMoment, kBuffer, kTrust>(a, views);
    });
  });

  dense.finish();
  if (a.pass == TrustPass::kNorms) return;  // the update call advances the steps
  for (const at::Tensor& s : a.steps) write_scalar(s, 0, read_scalar(s) + 1.0);
}

}  // namespace layerlr::cpu
