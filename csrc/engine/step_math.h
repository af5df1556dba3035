// The per-element math of the engine, written once for every backend and width: V is the math type
// itself (a scalar tail, a CUDA thread) or a SIMD vector of it (at::vec::Vectorized on the CPU).
// Each function is one stage of the pipeline in recipe.h.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <type_traits>

#include "coef.h"

namespace layerlr {

template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
C10_HOST_DEVICE inline T vsqrt(T x) {
  return std::sqrt(x);
}

template <typename V>
C10_HOST_DEVICE inline auto vsqrt(const V& x) -> decltype(x.sqrt()) {
  return x.sqrt();
}

// gradient -> ghat: unscale and sign, then the slow-gradient filter. Writes the filter state f only when
// c.update_filter (pass 1 of a two-pass recipe, or the single pass).
template <bool kFilter, typename V, typename T>
C10_HOST_DEVICE inline V filtered_grad(V g, V& f, const Coef<T>& c) {
  g = g * V(c.grad_mul);
  if constexpr (!kFilter) {
    return g;
  } else {
    if (c.update_filter) f = V(c.alpha) * f + V(c.one_minus_alpha) * g;
    return V(c.keep_g) * g + V(c.keep_f) * f;
  }
}

// Adam moments in place.
template <typename V, typename T>
C10_HOST_DEVICE inline void adam_moments(V g, V& m, V& v, const Coef<T>& c) {
  m = V(c.beta1) * m + V(c.one_minus_beta1) * g;
  v = V(c.beta2) * v + V(c.one_minus_beta2) * g * g;
}

// The Adam direction from the (already updated) moments, plus LAMB's in-update weight decay.
template <typename V, typename T>
C10_HOST_DEVICE inline V adam_direction(V m, V v, V p, const Coef<T>& c) {
  return (m * V(c.inv_bc1)) / (vsqrt(v) * V(c.inv_sqrt_bc2) + V(c.eps)) + V(c.wd_update) * p;
}

// Heavy-ball momentum and the update of an sgd-moment recipe. u is the direction entering the buffer.
// kPre (LARS): the trust-scaled lr multiplies u before the buffer; otherwise it scales the buffer's output.
template <bool kBuffer, bool kPre, typename V, typename T>
C10_HOST_DEVICE inline V sgd_update(V p, V u, V& buf, const Coef<T>& c) {
  const T scaled_lr = c.lr * c.ratio;
  const V x = kPre ? V(scaled_lr) * u : u;
  V dir = x;
  if constexpr (kBuffer) {
    buf = c.first ? x : V(c.momentum) * buf + V(c.buf_mul) * x;
    dir = c.nesterov ? x + V(c.momentum) * buf : buf;
  }
  return kPre ? V(c.decay_scale) * p - dir : V(c.decay_scale) * p - V(scaled_lr) * dir;
}

// The update of an adam-moment recipe from its direction u.
template <typename V, typename T>
C10_HOST_DEVICE inline V adam_update(V p, V u, const Coef<T>& c) {
  return V(c.decay_scale) * p - V(c.lr * c.ratio) * u;
}

}  // namespace layerlr
