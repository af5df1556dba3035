// From a runtime recipe to the compile-time shape a backend's kernels are instantiated for.
#pragma once

#include "recipe.h"

namespace layerlr {

// Calls fn.template operator()<kFilter, kMoment, kBuffer, kTrust>() for the recipe's shape. The grokfast and
// blend filters share one shape (NOTE: [filter stage]); adam recipes take no momentum buffer and no
// LARS ratio (check_step_args rejects that combination).
template <typename Fn>
void dispatch_recipe(const Recipe& r, Fn&& fn) {
  auto with_trust = [&]<bool kFilter, Moment kMoment, bool kBuffer>() {
    switch (r.trust) {
      case Trust::kNone: return fn.template operator()<kFilter, kMoment, kBuffer, Trust::kNone>();
      case Trust::kLars: return fn.template operator()<kFilter, kMoment, kBuffer, Trust::kLars>();
      case Trust::kUpdate: return fn.template operator()<kFilter, kMoment, kBuffer, Trust::kUpdate>();
    }
  };
  auto with_moment = [&]<bool kFilter>() {
    if (r.moment == Moment::kAdam) {
      if (r.trust == Trust::kNone) return fn.template operator()<kFilter, Moment::kAdam, false, Trust::kNone>();
      return fn.template operator()<kFilter, Moment::kAdam, false, Trust::kUpdate>();
    }
    if (r.has_momentum_buffer()) return with_trust.template operator()<kFilter, Moment::kSgd, true>();
    return with_trust.template operator()<kFilter, Moment::kSgd, false>();
  };
  if (r.filter != Filter::kNone) return with_moment.template operator()<true>();
  return with_moment.template operator()<false>();
}

}  // namespace layerlr
