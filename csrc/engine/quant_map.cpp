// Builds the dynamic quantization maps of quant_map.h (NOTE: [dynamic quantization map]).
#include "quant_map.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace layerlr {
namespace {

// The magnitudes of the codes, ascending, from 0 to 1: bitsandbytes' create_dynamic_map in double.
std::vector<double> magnitudes(bool is_signed) {
  static constexpr double kDecade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::vector<double> mags{0.0, 1.0};
  for (int i = 0; i < 7; ++i) {
    const int parts = is_signed ? (1 << i) : (1 << (i + 1));
    for (int j = 0; j < parts; ++j) {
      const double lo = 0.1 + 0.9 * j / parts, hi = 0.1 + 0.9 * (j + 1) / parts;
      mags.push_back(kDecade[i] * ((lo + hi) / 2.0));
    }
  }
  std::sort(mags.begin(), mags.end());
  return mags;
}

QuantMap build_quant_map(bool is_signed) {
  const std::vector<double> mags = magnitudes(is_signed);
  const int k = static_cast<int>(mags.size());  // 129 signed (0, 127 midpoints, 1), 256 unsigned
  TORCH_INTERNAL_ASSERT(k == (is_signed ? 129 : 256));
  QuantMap q{};
  for (int j = 0; j < k; ++j) {
    // signed codes: the negated midpoints ascending (0..126), 0 (127), the positive magnitudes (128..255)
    const int code = is_signed ? 127 + j : j;
    q.pos_code[j] = static_cast<uint8_t>(code);
    q.value[code] = static_cast<float>(mags[j]);
    if (is_signed && j >= 1 && j < k - 1) q.value[127 - j] = -static_cast<float>(mags[j]);
    // the negative side has no -1: its nearest code for |x| nearest 1 is the largest negated midpoint
    q.neg_code[j] = static_cast<uint8_t>(is_signed ? 127 - std::min(j, k - 2) : 0);
    TORCH_INTERNAL_ASSERT(!is_signed || (q.pos_code[j] == kSignedZeroCode + j &&
                                         q.neg_code[j] == kSignedZeroCode - std::min(j, kSignedZeroCode)));
    // NOTE: [nearest code by table]: midpoints truncated to 15 mantissa bits (the low 8 carry j in a bucket entry)
    const float mid = j + 1 < k ? static_cast<float>((static_cast<double>(static_cast<float>(mags[j])) +
                                                      static_cast<double>(static_cast<float>(mags[j + 1]))) / 2.0)
                                : std::numeric_limits<float>::infinity();
    q.mid[j] = bits_float(float_bits(mid) & ~0xFFu);
  }
  for (int b = 0; b < kBuckets; ++b) {
    const float lo = b == 0 ? 0.0f : bits_float(static_cast<uint32_t>(b + (kBucketExpLo << kBucketBits))
                                                << (23 - kBucketBits));
    const float hi = b + 1 == kBuckets ? std::numeric_limits<float>::infinity()
                                       : bits_float(static_cast<uint32_t>(b + 1 + (kBucketExpLo << kBucketBits))
                                                    << (23 - kBucketBits));
    int j = 0;
    while (j + 1 < k && static_cast<float>(mags[j + 1]) <= lo) ++j;
    q.bucket[b] = (float_bits(q.mid[j]) & ~0xFFu) | static_cast<uint32_t>(j);
    // NOTE: [nearest code by table]: one compare decides only if the next midpoint is not inside the bucket.
    TORCH_INTERNAL_ASSERT(j + 1 >= k - 1 || q.mid[j + 1] >= hi, "quantization bucket ", b, " holds two midpoints");
  }
  return q;
}

}  // namespace

const QuantMap& quant_map(bool is_signed) {
  static const QuantMap kSigned = build_quant_map(true);
  static const QuantMap kUnsigned = build_quant_map(false);
  return is_signed ? kSigned : kUnsigned;
}

}  // namespace layerlr
