// Per-tensor numbers for one step: computed once per tensor in double, then cast to the math type, so the
// element loops only multiply and add. The CPU computes them on the host; the CUDA backend in a one-thread-
// per-tensor kernel from the device copies of lr, steps and the per-tensor inputs (no host sync), hence
// C10_HOST_DEVICE on make_coef and trust_ratio.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

#include "recipe.h"

namespace layerlr {

// What the host knows about one tensor at one step.
struct TensorInputs {
  double lr;            // the group's lr times this tensor's lr multiplier
  double weight_decay;  // this tensor's weight decay
  double blend;         // depth blend b (Filter::kBlend)
  bool trust;           // trust ratio on for this tensor
  double step;          // the tensor's step count after this step (1 on its first update)
  double filter_alpha;  // EMA coefficient a of the filter
  double filter_gate;   // 0 bypasses the blend filter (ghat = g, f frozen); 1 otherwise
  double grad_scale;    // GradScaler scale (1 without a scaler)
};

template <typename T>
struct Coef {
  T grad_mul;                  // 1/grad_scale, negated under maximize
  bool update_filter;          // write f <- a*f + (1-a)*g this pass
  T alpha, one_minus_alpha;    // filter EMA
  T keep_g, keep_f;            // ghat = keep_g*g + keep_f*f  (see NOTE: [filter stage])
  T wd_coupled, wd_update;     // see NOTE: [weight decay placement]
  T decay_scale;               // 1 - lr*wd for decoupled decay, else 1
  T lr;                        // lr * lr multiplier
  T momentum, buf_mul;         // buf <- momentum*buf + buf_mul*x  (buf_mul = 1 - dampening)
  bool first;                  // first update of this tensor: buf <- x
  bool nesterov;
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T inv_bc1, inv_sqrt_bc2, eps;  // Adam bias corrections: u = (m/bc1) / (sqrt(v)/sqrt(bc2) + eps)
  T ratio;                     // trust ratio (1 until pass 1 computed it)
};

template <typename T>
C10_HOST_DEVICE Coef<T> make_coef(const Recipe& r, const TensorInputs& in) {
  Coef<T> c{};
  const double sign = r.maximize ? -1.0 : 1.0;
  c.grad_mul = static_cast<T>(sign / in.grad_scale);

  double alpha = in.filter_alpha, keep_g = 1.0, keep_f = 0.0;
  switch (r.filter) {
    case Filter::kNone:
      break;
    case Filter::kGrokfast:
      keep_f = r.filter_lambda;
      if (in.step == 1.0) alpha = 0.0;  // the EMA starts at the first gradient
      break;
    case Filter::kBlend:
      keep_f = in.filter_gate * (1.0 - in.blend);
      keep_g = 1.0 - keep_f;
      if (in.filter_gate == 0.0) alpha = 1.0;  // bypass: f frozen
      break;
  }
  c.update_filter = r.filter != Filter::kNone && alpha != 1.0;
  c.alpha = static_cast<T>(alpha);
  c.one_minus_alpha = static_cast<T>(1.0 - alpha);
  c.keep_g = static_cast<T>(keep_g);
  c.keep_f = static_cast<T>(keep_f);

  c.wd_coupled = static_cast<T>(r.decay == Decay::kCoupled ? in.weight_decay : 0.0);
  c.wd_update = static_cast<T>(r.decay == Decay::kUpdate ? in.weight_decay : 0.0);
  c.decay_scale = static_cast<T>(r.decay == Decay::kDecoupled ? 1.0 - in.lr * in.weight_decay : 1.0);
  c.lr = static_cast<T>(in.lr);

  c.momentum = static_cast<T>(r.momentum);
  c.buf_mul = static_cast<T>(1.0 - r.dampening);
  c.first = in.step == 1.0;
  c.nesterov = r.nesterov;

  c.beta1 = static_cast<T>(r.beta1);
  c.one_minus_beta1 = static_cast<T>(1.0 - r.beta1);
  c.beta2 = static_cast<T>(r.beta2);
  c.one_minus_beta2 = static_cast<T>(1.0 - r.beta2);
  const bool bc = r.bias_correction;
  c.inv_bc1 = static_cast<T>(bc ? 1.0 / (1.0 - std::pow(r.beta1, in.step)) : 1.0);
  c.inv_sqrt_bc2 = static_cast<T>(bc ? 1.0 / std::sqrt(1.0 - std::pow(r.beta2, in.step)) : 1.0);
  c.eps = static_cast<T>(r.eps);
  c.ratio = static_cast<T>(1.0);
  return c;
}

// Per-tensor finish of the two-pass recipes: the trust ratio from the squared norms of pass 1.
// See NOTE: [trust ratio placement].
C10_HOST_DEVICE inline double trust_ratio(const Recipe& r, const TensorInputs& in, double sq_param, double sq_dir) {
  if (!in.trust) return 1.0;
  const double w = std::sqrt(sq_param), u = std::sqrt(sq_dir);
  if (!(w > 0.0) || !(u > 0.0)) return 1.0;
  if (r.trust == Trust::kLars) {
    return r.trust_coefficient * w / (u + in.weight_decay * w + r.trust_eps);
  }
  const double ratio = r.trust_coefficient * std::fmin(w, r.norm_max) / (u + r.trust_eps);
  return std::fmin(std::fmax(ratio, r.ratio_min), r.ratio_max);
}

}  // namespace layerlr
