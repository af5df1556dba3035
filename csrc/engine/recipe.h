// The recipe: which stages of the layer-wise pipeline are on, and their constants.
//
//   gradient -> (unscale, sign) -> slow-gradient filter -> weight decay -> moments
//            -> per-tensor trust ratio -> per-tensor learning rate -> update
//
// Every optimizer in torch_layerlr is one recipe. The recipe is fixed for a call; the numbers that differ
// from tensor to tensor (lr multiplier, weight decay, depth blend, trust on/off) are 1-D kernel inputs.
#pragma once

#include <c10/util/Exception.h>

#include <cmath>
#include <string_view>

namespace layerlr {

// NOTE: [filter stage]
// Both filters keep an EMA f <- a*f + (1-a)*g of the gradient and feed the optimizer
// ghat = keep_g*g + keep_f*f. Grokfast (Lee et al. 2024) amplifies the slow part: keep_g = 1,
// keep_f = lambda, and f starts at the first gradient (a = 0 on a tensor's first step). DALS blends:
// keep_g = b, keep_f = 1 - b with the per-tensor depth blend b, f starts at zero, and a phase may
// bypass the filter (ghat = g, f frozen).
enum class Filter { kNone, kGrokfast, kBlend };

// NOTE: [weight decay placement]
// coupled:   g <- g + wd*p before the moments (SGD, LARS, DALS; L2 in Adam).
// decoupled: p <- p*(1 - lr*wd) before the update (AdamW).
// update:    u <- u + wd*p added to the final direction, inside the trust ratio (LAMB).
enum class Decay { kCoupled, kDecoupled, kUpdate };

// sgd: heavy-ball momentum (torch.optim.SGD semantics; no buffer when momentum == 0).
// adam: bias-corrected first and second moments.
enum class Moment { kSgd, kAdam };

// NOTE: [trust ratio placement]
// lars:   ratio = tc*||p|| / (||ghat|| + wd*||p|| + eps) scales the direction *before* it enters the
//         momentum buffer (You et al. 2017, eq. 6 and Alg. 1).
// update: ratio = clamp(tc*min(||p||, norm_max) / ||u||, ratio_min, ratio_max) on the direction u that
//         the moments produce (LAMB) or that enters them (DALS), scaling the step *after* momentum.
// Either ratio is 1 where ||p|| or the denominator's norm is 0, or the tensor's trust mask is 0.
enum class Trust { kNone, kLars, kUpdate };

// NOTE: [adam direction in the grad buffer]
// An adam-moment recipe with a trust ratio (LAMB) needs its direction u = m^/(sqrt(v^) + eps) + wd*p twice:
// for ||u|| in pass 1 and for the update in pass 2. Recomputing it costs a second sqrt and division per
// element, which makes the step compute-bound on a CPU (measured: 1.65x AdamW's time instead of 1.37x).
// So pass 1 writes u over the gradient, as apex's FusedLAMB does, and pass 2 reads it back: the same 40
// bytes per parameter, half the arithmetic. After such a step each grad holds its tensor's direction u.
// The sgd-moment recipes (LARS, DALS) recompute their cheap direction and leave the grads alone.

struct Recipe {
  Filter filter = Filter::kNone;
  Decay decay = Decay::kCoupled;
  Moment moment = Moment::kSgd;
  Trust trust = Trust::kNone;
  double filter_lambda = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool bias_correction = true;
  double trust_coefficient = 1.0;
  double trust_eps = 0.0;
  double ratio_min = 0.0;
  double ratio_max = INFINITY;
  double norm_max = INFINITY;
  bool maximize = false;

  bool has_momentum_buffer() const { return moment == Moment::kSgd && momentum != 0.0; }
  bool two_pass() const { return trust != Trust::kNone; }
  // NOTE: [adam direction in the grad buffer]: the only recipes that write their grads.
  bool writes_grads() const { return moment == Moment::kAdam && trust != Trust::kNone; }
};

inline Filter parse_filter(std::string_view s) {
  if (s == "none") return Filter::kNone;
  if (s == "grokfast") return Filter::kGrokfast;
  if (s == "blend") return Filter::kBlend;
  TORCH_CHECK_VALUE(false, "filter must be 'none', 'grokfast' or 'blend', got '", s, "'");
}

inline Decay parse_decay(std::string_view s) {
  if (s == "coupled") return Decay::kCoupled;
  if (s == "decoupled") return Decay::kDecoupled;
  if (s == "update") return Decay::kUpdate;
  TORCH_CHECK_VALUE(false, "decay must be 'coupled', 'decoupled' or 'update', got '", s, "'");
}

inline Moment parse_moment(std::string_view s) {
  if (s == "sgd") return Moment::kSgd;
  if (s == "adam") return Moment::kAdam;
  TORCH_CHECK_VALUE(false, "moment must be 'sgd' or 'adam', got '", s, "'");
}

inline Trust parse_trust(std::string_view s) {
  if (s == "none") return Trust::kNone;
  if (s == "lars") return Trust::kLars;
  if (s == "update") return Trust::kUpdate;
  TORCH_CHECK_VALUE(false, "trust must be 'none', 'lars' or 'update', got '", s, "'");
}

}  // namespace layerlr
