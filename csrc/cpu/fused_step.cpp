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

namespace layerlr::cpu {
namespace {

template <typename scalar_t>
struct Slot {
  scalar_t* ptr[kDepth];
};

// One recipe shape. kTwoPass recipes call norms() on every chunk, then update() with c.update_filter off.
template <typename scalar_t, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
struct Kernel {
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kPre = kTrust == Trust::kLars;

  // Pass 1: advance the filter (and Adam's moments), accumulate ||p||^2 and ||u||^2 of the trust direction.
  template <typename V>
  static void norms(const Slot<scalar_t>& s, int64_t i, const Coef<T>& c, V& sq_p, V& sq_u) {
    using io = IO<scalar_t, V>;
    const V p = io::load(s.ptr[kParamIdx] + i);
    V f = kFilter ? io::load(s.ptr[kFilterIdx] + i) : V(0);
    V u = filtered_grad<kFilter>(io::load(s.ptr[kGradIdx] + i), f, c);
    if (kFilter && c.update_filter) io::store(s.ptr[kFilterIdx] + i, f);
    if constexpr (kMoment == Moment::kAdam) {
      u = u + V(c.wd_coupled) * p;
      V m = io::load(s.ptr[kExpAvgIdx] + i), v = io::load(s.ptr[kExpAvgSqIdx] + i);
      adam_moments(u, m, v, c);
      io::store(s.ptr[kExpAvgIdx] + i, m);
      io::store(s.ptr[kExpAvgSqIdx] + i, v);
      u = adam_direction(m, v, p, c);
      io::store(s.ptr[kGradIdx] + i, u);  // NOTE: [adam direction in the grad buffer]
    } else if constexpr (!kPre) {
      u = u + V(c.wd_coupled) * p;  // LARS takes ||g|| and adds wd*||p|| in the ratio instead
    }
    sq_p = sq_p + p * p;
    sq_u = sq_u + u * u;
  }

  // The update: the whole step for one-pass recipes, pass 2 (moments already advanced) for two-pass ones.
  template <typename V>
  static void update(const Slot<scalar_t>& s, int64_t i, const Coef<T>& c) {
    using io = IO<scalar_t, V>;
    const V p = io::load(s.ptr[kParamIdx] + i);
    if constexpr (kMoment == Moment::kAdam && kTrust != Trust::kNone) {
      io::store(s.ptr[kParamIdx] + i, adam_update(p, io::load(s.ptr[kGradIdx] + i), c));
    } else if constexpr (kMoment == Moment::kAdam) {
      V m = io::load(s.ptr[kExpAvgIdx] + i), v = io::load(s.ptr[kExpAvgSqIdx] + i);
      if (kTrust == Trust::kNone) {
        V f = kFilter ? io::load(s.ptr[kFilterIdx] + i) : V(0);
        const V g = filtered_grad<kFilter>(io::load(s.ptr[kGradIdx] + i), f, c) + V(c.wd_coupled) * p;
        if (kFilter && c.update_filter) io::store(s.ptr[kFilterIdx] + i, f);
        adam_moments(g, m, v, c);
        io::store(s.ptr[kExpAvgIdx] + i, m);
        io::store(s.ptr[kExpAvgSqIdx] + i, v);
      }
      io::store(s.ptr[kParamIdx] + i, adam_update(p, adam_direction(m, v, p, c), c));
    } else {
      V f = kFilter ? io::load(s.ptr[kFilterIdx] + i) : V(0);
      const V u = filtered_grad<kFilter>(io::load(s.ptr[kGradIdx] + i), f, c) + V(c.wd_coupled) * p;
      if (kFilter && c.update_filter) io::store(s.ptr[kFilterIdx] + i, f);
      V buf = kBuffer ? io::load(s.ptr[kExpAvgIdx] + i) : V(0);
      io::store(s.ptr[kParamIdx] + i, sgd_update<kBuffer, kPre>(p, u, buf, c));
      if (kBuffer) io::store(s.ptr[kExpAvgIdx] + i, buf);
    }
  }

  // NOTE: the loops work on local copies of the slot and the coefficients: stores through scalar_t* could
  // alias a caller's T fields, which would force a reload of every coefficient after every store.
  static void norms_range(const Slot<scalar_t> slot, int64_t begin, int64_t end, const Coef<T> coef,
                          double* out) {
    using Vec = at::vec::Vectorized<T>;
    const Slot<scalar_t> s = slot;
    const Coef<T> c = coef;
    Vec vp(0), vu(0);
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) norms<Vec>(s, i, c, vp, vu);
    T tp = 0, tu = 0;
    for (; i < end; ++i) norms<T>(s, i, c, tp, tu);
    out[0] = static_cast<double>(lane_sum(vp)) + static_cast<double>(tp);
    out[1] = static_cast<double>(lane_sum(vu)) + static_cast<double>(tu);
  }

  static void update_range(const Slot<scalar_t> slot, int64_t begin, int64_t end, const Coef<T> coef) {
    using Vec = at::vec::Vectorized<T>;
    const Slot<scalar_t> s = slot;
    const Coef<T> c = coef;
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) update<Vec>(s, i, c);
    for (; i < end; ++i) update<T>(s, i, c);
  }
};

template <typename scalar_t, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
void run(const StepArgs& a, const std::vector<at::Tensor>& views) {
  using K = Kernel<scalar_t, kFilter, kMoment, kBuffer, kTrust>;
  using T = typename K::T;
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
  std::vector<Slot<scalar_t>> slots(n);
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
    for (int d = 0; d < kDepth; ++d) {
      const at::Tensor& v = views[t * kDepth + d];
      slots[t].ptr[d] = v.defined() ? static_cast<scalar_t*>(v.data_ptr()) : nullptr;
    }
    const int64_t numel = a.params[t].numel();
    for (int64_t b = 0; b < numel; b += kChunk) chunks.push_back({t, b, std::min(numel, b + kChunk)});
    total += numel;
  }

  if constexpr (kTrust == Trust::kNone) {
    for_each_chunk(chunks, 0, chunks.size(), total, [&](const Chunk& ch, int64_t) {
      K::update_range(slots[ch.tensor], ch.begin, ch.end, coefs[ch.tensor]);
    });
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
        K::norms_range(slots[ch.tensor], ch.begin, ch.end, coefs[ch.tensor], &partials[2 * k]);
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
    for_each_chunk(chunks, 0, chunks.size(), total, [&](const Chunk& ch, int64_t) {
      K::update_range(slots[ch.tensor], ch.begin, ch.end, coefs[ch.tensor]);
    });
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
