// Builds the dynamic quantization maps of quant_map.h (NOTE: [dynamic quantization map], NOTE: [nearest code by
// arithmetic]) and checks the arithmetic encoder against them.
#include "quant_map.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace layerlr {
namespace {

constexpr double kDecadeScale[kDecades] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};

int decade_parts(bool is_signed, int d) { return is_signed ? (1 << d) : (1 << (d + 1)); }

// The magnitudes of the codes, ascending, from 0 to 1: bitsandbytes' create_dynamic_map in double.
std::vector<double> magnitudes(bool is_signed) {
  std::vector<double> mags{0.0};
  for (int d = 0; d < kDecades; ++d) {
    const int parts = decade_parts(is_signed, d);
    for (int k = 0; k < parts; ++k) {
      const double lo = 0.1 + 0.9 * k / parts, hi = 0.1 + 0.9 * (k + 1) / parts;
      mags.push_back(kDecadeScale[d] * ((lo + hi) / 2.0));
    }
  }
  mags.push_back(1.0);
  return mags;  // ascending: decades are disjoint and each ascends
}

float midpoint(const std::vector<double>& mags, int j) {
  return static_cast<float>((static_cast<double>(static_cast<float>(mags[j])) +
                             static_cast<double>(static_cast<float>(mags[j + 1]))) / 2.0);
}

// NOTE: [nearest code by arithmetic]: every value encodes to its own code, and values 2e-6 (relative) either side
// of every midpoint to the code on their side.
void check_encoder(const QuantMap& q, const std::vector<double>& mags, bool is_signed) {
  const int k = static_cast<int>(mags.size());
  for (int j = 0; j < k; ++j) {
    const float v = static_cast<float>(mags[j]);
    TORCH_INTERNAL_ASSERT(quant_magnitude(q, v) == j, "quantization map: value ", v, " does not encode to ", j);
    const uint8_t code = quant_encode(is_signed, q, v);
    TORCH_INTERNAL_ASSERT(q.value[code] == v, "quantization map: code ", int(code), " of ", v);
    if (is_signed && j > 0 && j < k - 1) TORCH_INTERNAL_ASSERT(q.value[quant_encode(true, q, -v)] == -v);
    if (j + 1 < k) {
      const double mid = midpoint(mags, j);
      TORCH_INTERNAL_ASSERT(quant_magnitude(q, static_cast<float>(mid * (1 - 2e-6))) == j &&
                                quant_magnitude(q, static_cast<float>(mid * (1 + 2e-6))) == j + 1,
                            "quantization map: midpoint ", mid, " between magnitudes ", j, " and ", j + 1);
    }
  }
  for (float x : {0.0f, -0.0f, 1e-30f, 1.5f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    TORCH_INTERNAL_ASSERT(quant_magnitude(q, std::fabs(x)) == (std::fabs(x) < 1e-20f ? 0 : k - 1));
}

QuantMap build_quant_map(bool is_signed) {
  const std::vector<double> mags = magnitudes(is_signed);
  const int k = static_cast<int>(mags.size());  // 129 signed (0, 127 decade values, 1), 256 unsigned
  TORCH_INTERNAL_ASSERT(k == (is_signed ? 129 : 256));
  QuantMap q{};
  for (int j = 0; j < k; ++j) {
    // signed codes: the negated magnitudes descending (0..126), 0 (127), the positive magnitudes (128..255)
    q.value[is_signed ? kSignedZeroCode + j : j] = static_cast<float>(mags[j]);
    if (is_signed && j >= 1 && j < k - 1) q.value[kSignedZeroCode - j] = -static_cast<float>(mags[j]);
  }
  // regions (NOTE: [nearest code by arithmetic]): 0, the decades, 1
  std::vector<double> starts;  // starts[r - 1]: where region r begins
  int first = 1;
  for (int d = 0; d < kDecades; ++d) {
    const int parts = decade_parts(is_signed, d), r = d + 1;
    q.scale[r] = static_cast<float>(parts / (0.9 * kDecadeScale[d]));
    q.offset[r] = static_cast<float>(parts / 9.0 - first);
    q.last[r] = static_cast<float>(first + parts - 1);
    starts.push_back(midpoint(mags, first - 1));
    first += parts;
  }
  TORCH_INTERNAL_ASSERT(first == k - 1);
  starts.push_back(midpoint(mags, k - 2));
  q.offset[kRegions - 1] = static_cast<float>(-(k - 1));  // region 8: 0 * a + (k - 1)
  q.last[kRegions - 1] = static_cast<float>(k - 1);
  for (int r = kRegions; r < 16; ++r) {
    q.scale[r] = q.scale[kRegions - 1];
    q.offset[r] = q.offset[kRegions - 1];
    q.last[r] = q.last[kRegions - 1];
  }
  for (int r = 0; r + 1 < kRegions; ++r) {
    q.region_start[r] = static_cast<float>(starts[r]);
    TORCH_INTERNAL_ASSERT(r == 0 || starts[r] > 2 * starts[r - 1]);  // a binade holds at most one region start
  }
  for (int b = 0; b < kBinades; ++b) {
    const double start = std::ldexp(1.0, b + kBinadeLo - 127);  // binade 0's start stands for everything below
    int r = 0;
    while (r + 1 < kRegions && q.region_start[r] <= start) ++r;
    q.binade_region[b] = r;
    q.binade_next[b] = r + 1 < kRegions ? q.region_start[r] : std::numeric_limits<float>::infinity();
  }
  TORCH_INTERNAL_ASSERT(q.region_start[0] > std::ldexp(1.0, 1 + kBinadeLo - 127));  // binade 0 is in region 0
  check_encoder(q, mags, is_signed);
  return q;
}

}  // namespace

const QuantMap& quant_map(bool is_signed) {
  static const QuantMap kSigned = build_quant_map(true);
  static const QuantMap kUnsigned = build_quant_map(false);
  return is_signed ? kSigned : kUnsigned;
}

}  // namespace layerlr
