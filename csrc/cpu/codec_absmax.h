// The running absmax of a block of int8 state, shared by the scalar and vector codecs (state_codec.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

namespace layerlr::cpu {

// max |x| over the non-NaN values, and whether a NaN was seen: an order-free reduction, so every vector width
// and lane assignment gives the same block absmax.
struct AbsMax {
  float max = 0.0f;
  bool nan = false;

  void add(float x) {
    const float a = std::fabs(x);
    if (std::isnan(a)) {
      nan = true;
    } else {
      max = std::max(max, a);
    }
  }
  float value() const { return nan ? std::numeric_limits<float>::quiet_NaN() : max; }
};

}  // namespace layerlr::cpu
