// The CPU loops of low-precision state (NOTE: [state precision] in engine/state_precision.h): a chunk is walked
// in blocks of kQuantBlock elements; each block's state is decoded into float buffers on the stack, the
// recipe's element loops (step_kernel.h) run on them, and what the pass wrote is encoded back. One pass over
// memory, like the full-precision loops; the buffers stay in L1.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>

#include "../engine/quant_map.h"
#include "../engine/state_precision.h"
#include "state_codec.h"
#include "step_kernel.h"

namespace layerlr::cpu {

static_assert(kChunk % kQuantBlock == 0, "an absmax block must not straddle two chunks");

// The stored state of one tensor: per slot (filter, exp_avg, exp_avg_sq) the bfloat16 values or uint8 codes, the
// int8 absmax per block, and the key of the slot's rounding stream (NOTE: [stochastic rounding]).
struct LowSlot {
  void* state[3];
  float* absmax[3];
  uint64_t key[3];
};

constexpr int kFilterSlot = 0, kExpAvgSlot = 1, kExpAvgSqSlot = 2;

// First moments, buffers and filters take the signed map, second moments the unsigned one.
inline const QuantMap& slot_map(int slot) { return quant_map(slot != kExpAvgSqSlot); }

template <typename T>
void decode_block(StatePrecision prec, const LowSlot& s, int slot, int64_t begin, int64_t len, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    if (prec == StatePrecision::kBf16) {
      decode_bf16(static_cast<const uint16_t*>(s.state[slot]) + begin, len, out);
    } else {
      decode_int8(slot_map(slot), static_cast<const uint8_t*>(s.state[slot]) + begin,
                  s.absmax[slot][begin / kQuantBlock], len, out);
    }
  } else {  // float64 params: through a float buffer
    float x[kQuantBlock];
    decode_block<float>(prec, s, slot, begin, len, x);
    for (int64_t i = 0; i < len; ++i) out[i] = static_cast<T>(x[i]);
  }
}

template <typename T>
void encode_block(StatePrecision prec, const LowSlot& s, int slot, int64_t begin, int64_t len, const T* in) {
  if constexpr (std::is_same_v<T, float>) {
    if (prec == StatePrecision::kBf16) {
      encode_bf16(in, len, s.key[slot], begin, static_cast<uint16_t*>(s.state[slot]) + begin);
    } else {
      const float absmax = block_absmax(in, len);
      encode_int8(slot_map(slot), slot != kExpAvgSqSlot, in, quant_inverse_scale(absmax), len,
                  static_cast<uint8_t*>(s.state[slot]) + begin);
      s.absmax[slot][begin / kQuantBlock] = absmax;
    }
  } else {
    float x[kQuantBlock];
    for (int64_t i = 0; i < len; ++i) x[i] = static_cast<float>(in[i]);
    encode_block<float>(prec, s, slot, begin, len, x);
  }
}

// One recipe shape over low-precision state. kNorms: pass 1 of a two-pass recipe; else the update.
template <typename K, bool kFilter, Moment kMoment, bool kBuffer, Trust kTrust>
struct BlockKernel {
  using scalar_t = std::remove_pointer_t<decltype(K::S::param)>;
  using T = typename K::T;
  static constexpr bool kAdam = kMoment == Moment::kAdam;

  // The slots a pass reads, and those it writes (the filter only when c.update_filter).
  static constexpr bool reads(int slot, bool norms) {
    if (slot == kFilterSlot) return kFilter && (norms || !(kAdam && kTrust != Trust::kNone));
    if (kAdam) return norms || kTrust == Trust::kNone;
    return slot == kExpAvgSlot && kBuffer && !norms;
  }
  static bool writes(int slot, bool norms, const Coef<T>& c) {
    if (slot == kFilterSlot) return reads(slot, norms) && c.update_filter;
    return reads(slot, norms);
  }

  template <bool kNorms>
  static void run(StatePrecision prec, scalar_t* param, scalar_t* grad, const LowSlot& s, int64_t begin,
                  int64_t end, const Coef<T>& c, double* out) {
    using Vec = at::vec::Vectorized<T>;
    T buf[3][kQuantBlock];
    Vec vp(0), vu(0);
    T tp = 0, tu = 0;
    for (int64_t b = begin; b < end; b += kQuantBlock) {
      const int64_t len = std::min<int64_t>(kQuantBlock, end - b);
      for (int k = 0; k < 3; ++k)
        if (reads(k, kNorms)) decode_block(prec, s, k, b, len, buf[k]);
      const typename K::S local{param + b, grad + b, buf[kFilterSlot], buf[kExpAvgSlot], buf[kExpAvgSqSlot]};
      if constexpr (kNorms) {
        K::norms_block(local, len, c, vp, vu, tp, tu);
      } else {
        K::update_range(local, 0, len, c);
      }
      for (int k = 0; k < 3; ++k)
        if (writes(k, kNorms, c)) encode_block(prec, s, k, b, len, buf[k]);
    }
    if constexpr (kNorms) {
      out[0] = static_cast<double>(lane_sum(vp)) + static_cast<double>(tp);
      out[1] = static_cast<double>(lane_sum(vu)) + static_cast<double>(tu);
    }
  }
};

}  // namespace layerlr::cpu
