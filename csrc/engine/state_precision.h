// How a call keeps its per-parameter state (filters, momentum buffers, exp_avg, exp_avg_sq): the precision, and
// the stochastic rounding of bfloat16 state. Step counters and params are never affected.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <cstring>

namespace layerlr {

// NOTE: [state precision]
// full: state in the params' dtype, as every call before low-precision state (bit for bit the same kernels).
// bf16: state stored as bfloat16; loaded into the math type, updated there, and written back with stochastic
//       rounding (NOTE: [stochastic rounding]).
// int8: blockwise dynamic quantization as in bitsandbytes' 8-bit optimizers (Dettmers et al., "8-bit Optimizers
//       via Block-wise Quantization", ICLR 2022): one uint8 code per element, one float32 absmax per block of
//       kQuantBlock elements (NOTE: [dynamic quantization map] in quant_map.h).
// Either low precision works block by block: a block of state is decoded into float buffers, the recipe's math
// runs on them exactly as on full-precision state, and the block is encoded back, in the same pass over memory.
// Trust-ratio norms are taken on the values in those buffers, before they are rounded.
enum class StatePrecision { kFull, kBf16, kInt8 };

// One absmax per this many elements of a tensor, in its row-major (contiguous) element order. The CPU's chunk and
// the CUDA chunk are multiples of it, so blocks never straddle the unit of work of a thread (a CUDA block).
constexpr int64_t kQuantBlock = 256;

inline int64_t quant_blocks(int64_t numel) { return (numel + kQuantBlock - 1) / kQuantBlock; }

inline StatePrecision parse_state_precision(c10::string_view s) {
  if (s == "fp32") return StatePrecision::kFull;
  if (s == "bf16") return StatePrecision::kBf16;
  if (s == "int8") return StatePrecision::kInt8;
  TORCH_CHECK_VALUE(false, "state_precision must be 'fp32', 'bf16' or 'int8', got '", s, "'");
}

// NOTE: [stochastic rounding]
// A float x goes to one of the two bfloat16 values around it, up with probability equal to its distance from
// the lower one in units of the gap: E[round(x)] = x, so small updates (lr*m against a large v) are not lost on
// average the way round-to-nearest loses them. The 16 random bits come from a counter-based generator: the key
// of a stream is mixed on the host from (seed, step, tensor position in the call, state slot) with splitmix64's
// finalizer, and element i of the stream takes the top 16 bits of lowbias32(key_lo + i * golden32) ^ key_hi
// (lowbias32: C. Wellons' 32-bit integer hash, two multiplies, so eight elements hash in one AVX2 vector; i is
// the element's position in its tensor modulo 2^32). A result therefore depends on the seed, the step and the
// element's position, never on threads or chunking, and a run is reproducible.
C10_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint32_t kGolden32 = 0x9E3779B9u;

// The key of one state tensor's stream at one step.
C10_HOST_DEVICE inline uint64_t rounding_key(uint64_t seed, uint64_t step, uint64_t tensor, uint64_t slot) {
  return mix64(mix64(mix64(seed + kGolden) ^ (step * kGolden)) ^ ((tensor << 2) | slot));
}

C10_HOST_DEVICE inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// The 16 random bits of element i of the stream `key`.
C10_HOST_DEVICE inline uint32_t rounding_bits(uint64_t key, int64_t i) {
  const uint32_t h = lowbias32(static_cast<uint32_t>(key) + static_cast<uint32_t>(i) * kGolden32);
  return (h ^ static_cast<uint32_t>(key >> 32)) >> 16;
}

C10_HOST_DEVICE inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}

C10_HOST_DEVICE inline float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// The bfloat16 bits of x rounded stochastically with the 16 random bits r: adding r below the kept bits carries
// into them with probability (dropped bits)/2^16. Sign-magnitude, so negative values round in magnitude
// symmetrically. NaN stays NaN (its payload could carry into the sign otherwise).
C10_HOST_DEVICE inline uint16_t bf16_round_stochastic(float x, uint32_t r) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + (r & 0xFFFFu)) >> 16);
}

C10_HOST_DEVICE inline float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

}  // namespace layerlr
