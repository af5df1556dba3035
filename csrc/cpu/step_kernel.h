// The element loops of one recipe shape on the CPU, for params and grads of scalar_t and state of state_t: the
// params' dtype for full-precision state, the math type itself where low-precision state has been decoded into
// block buffers (cpu/low_precision.h).
#pragma once

#include <ATen/OpMathType.h>

#include "../engine/step_math.h"
#include "loops.h"

namespace layerlr::cpu {

template <typename scalar_t, typename state_t>
struct Slot {
  scalar_t* param;
  scalar_t* grad;
  state_t* filter;
  state_t* exp_avg;  // Adam's first moment, or the momentum buffer
  state_t* exp_avg_sq;
};

// One recipe shape. kTwoPass recipes call norms() on every chunk, then update() with c.update_filter off.
template <typename scalar_t, typename state_t, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
struct Kernel {
  using T = at::opmath_type<scalar_t>;
  static constexpr bool kPre = kTrust == Trust::kLars;
  using S = Slot<scalar_t, state_t>;

  // Pass 1: advance the filter (and Adam's moments), accumulate ||p||^2 and ||u||^2 of the trust direction.
  template <typename V>
  static void norms(const S& s, int64_t i, const Coef<T>& c, V& sq_p, V& sq_u) {
    using io = IO<scalar_t, V>;
    using st = IO<state_t, V>;
    const V p = io::load(s.param + i);
    V f = kFilter ? st::load(s.filter + i) : V(0);
    V u = filtered_grad<kFilter>(io::load(s.grad + i), f, c);
    if (kFilter && c.update_filter) st::store(s.filter + i, f);
    if constexpr (kMoment == Moment::kAdam) {
      u = u + V(c.wd_coupled) * p;
      V m = st::load(s.exp_avg + i), v = st::load(s.exp_avg_sq + i);
      adam_moments(u, m, v, c);
      st::store(s.exp_avg + i, m);
      st::store(s.exp_avg_sq + i, v);
      u = adam_direction(m, v, p, c);
      io::store(s.grad + i, u);  // NOTE: [adam direction in the grad buffer]
    } else if constexpr (!kPre) {
      u = u + V(c.wd_coupled) * p;  // LARS takes ||g|| and adds wd*||p|| in the ratio instead
    }
    sq_p = sq_p + p * p;
    sq_u = sq_u + u * u;
  }

  // The update: the whole step for one-pass recipes, pass 2 (moments already advanced) for two-pass ones.
  template <typename V>
  static void update(const S& s, int64_t i, const Coef<T>& c) {
    using io = IO<scalar_t, V>;
    using st = IO<state_t, V>;
    const V p = io::load(s.param + i);
    if constexpr (kMoment == Moment::kAdam && kTrust != Trust::kNone) {
      io::store(s.param + i, adam_update(p, io::load(s.grad + i), c));
    } else if constexpr (kMoment == Moment::kAdam) {
      V m = st::load(s.exp_avg + i), v = st::load(s.exp_avg_sq + i);
      V f = kFilter ? st::load(s.filter + i) : V(0);
      const V g = filtered_grad<kFilter>(io::load(s.grad + i), f, c) + V(c.wd_coupled) * p;
      if (kFilter && c.update_filter) st::store(s.filter + i, f);
      adam_moments(g, m, v, c);
      st::store(s.exp_avg + i, m);
      st::store(s.exp_avg_sq + i, v);
      io::store(s.param + i, adam_update(p, adam_direction(m, v, p, c), c));
    } else {
      V f = kFilter ? st::load(s.filter + i) : V(0);
      const V u = filtered_grad<kFilter>(io::load(s.grad + i), f, c) + V(c.wd_coupled) * p;
      if (kFilter && c.update_filter) st::store(s.filter + i, f);
      V buf = kBuffer ? st::load(s.exp_avg + i) : V(0);
      io::store(s.param + i, sgd_update<kBuffer, kPre>(p, u, buf, c));
      if (kBuffer) st::store(s.exp_avg + i, buf);
    }
  }

  // NOTE: the loops work on local copies of the slot and the coefficients: stores through scalar_t* could
  // alias a caller's T fields, which would force a reload of every coefficient after every store.
  static void norms_range(const S slot, int64_t begin, int64_t end, const Coef<T> coef, double* out) {
    using Vec = at::vec::Vectorized<T>;
    const S s = slot;
    const Coef<T> c = coef;
    Vec vp(0), vu(0);
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) norms<Vec>(s, i, c, vp, vu);
    T tp = 0, tu = 0;
    for (; i < end; ++i) norms<T>(s, i, c, tp, tu);
    out[0] = static_cast<double>(lane_sum(vp)) + static_cast<double>(tp);
    out[1] = static_cast<double>(lane_sum(vu)) + static_cast<double>(tu);
  }

  // norms_range over one block of a chunk (low-precision state): the sums go on in the caller's accumulators.
  static void norms_block(const S slot, int64_t len, const Coef<T> coef, at::vec::Vectorized<T>& vp,
                          at::vec::Vectorized<T>& vu, T& tp, T& tu) {
    using Vec = at::vec::Vectorized<T>;
    const S s = slot;
    const Coef<T> c = coef;
    Vec p = vp, u = vu;  // locals, for the same reason
    T sp = tp, su = tu;
    int64_t i = 0;
    for (; i + Vec::size() <= len; i += Vec::size()) norms<Vec>(s, i, c, p, u);
    for (; i < len; ++i) norms<T>(s, i, c, sp, su);
    vp = p, vu = u, tp = sp, tu = su;
  }

  static void update_range(const S slot, int64_t begin, int64_t end, const Coef<T> coef) {
    using Vec = at::vec::Vectorized<T>;
    const S s = slot;
    const Coef<T> c = coef;
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) update<Vec>(s, i, c);
    for (; i < end; ++i) update<T>(s, i, c);
  }
};

}  // namespace layerlr::cpu
