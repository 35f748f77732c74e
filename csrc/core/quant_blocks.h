// GGUF / GGML quantized block layouts shared by the CPU and Metal kernels.
//
// These structs are byte-for-byte images of what a GGUF file stores, so a
// tensor's data can be reinterpreted in place (mmap) without repacking.  fp16
// fields are kept as raw uint16_t bits: C++17 has no portable half type, and
// Metal/NEON/F16C each decode them their own way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tinyfast::quant {

// Elements per block.  Legacy formats use 32 (one SIMD-friendly group); the
// "K" formats use 256-element super-blocks so per-sub-block scales can
// themselves be quantized against one fp16 super-scale.
constexpr int QK4_0 = 32;
constexpr int QK5_0 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;
// Q4_K packs 8 six-bit scales + 8 six-bit mins into 12 bytes.
constexpr int K_SCALE_SIZE = 12;

// x = d * (q - 8), q in [0, 15].  Byte j holds element j in its low nibble
// and element j + 16 in its high nibble (halves, not adjacent pairs).
struct block_q4_0 {
    uint16_t d;               // fp16
    uint8_t qs[QK4_0 / 2];
};

// x = d * q, q signed 8-bit.
struct block_q8_0 {
    uint16_t d;               // fp16
    int8_t qs[QK8_0];
};

// x = d * (q - 16), q in [0, 31].  Low 4 bits as in Q4_0; bit 4 of element j
// is bit j of qh read as a little-endian uint32 (qh is bytes, not a uint32,
// because the block is only 2-byte aligned inside a GGUF row).
struct block_q5_0 {
    uint16_t d;               // fp16
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};

// 8 sub-blocks of 32: x = d*sc[j]*q - dmin*m[j], q in [0,15], sc/m 6-bit.
// scales[12]: for j<4  sc = scales[j]&63,           m = scales[j+4]&63;
//             for j>=4 sc = (scales[j+4]&15) | (scales[j-4]>>6)<<4,
//                      m  = (scales[j+4]>>4) | (scales[j]>>6)<<4.
// qs: 4 chunks of 32 bytes; chunk i gives sub-block 2i (low nibbles) and
// sub-block 2i+1 (high nibbles).
struct block_q4_K {
    uint16_t d;               // fp16 super-scale for sc
    uint16_t dmin;            // fp16 super-scale for m
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};

// 16 sub-blocks of 16: x = d * scales[e/16] * (q - 32), q 6-bit.
// Two halves of 128 elements; half h uses ql[64h..], qh[32h..].  Within a
// half, for l in [0,32):
//   e=l     : ql[l]    & 15, (qh[l]>>0)&3      e=l+64 : ql[l]    >> 4, (qh[l]>>4)&3
//   e=l+32  : ql[l+32] & 15, (qh[l]>>2)&3      e=l+96 : ql[l+32] >> 4, (qh[l]>>6)&3
// d sits last, so the struct is 2-byte aligned with no padding (210 B).
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;               // fp16
};

// Activation-side block for K-format dot products (GGML type 15).  fp32 scale
// because activations are re-quantized every step and never stored in files;
// bsums (sum of each 16 qs) let the Q4_K min term be applied per sub-block
// without touching qs again.
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

// tinyfast-internal activation block for Q4_0/Q5_0/Q8_0 weights (not a GGUF
// type).  fp32 d avoids an fp16 round-trip on the activation side; qsum lets
// the constant offset of Q4_0 (-8) and Q5_0 (-16) be folded in once per
// block: sum_j d_w*(q_j-c)*d_a*a_j = d_w*d_a*(sum q_j*a_j - c*qsum).
struct block_q8_0a {
    float d;
    int32_t qsum;
    int8_t qs[QK8_0];
};

static_assert(sizeof(block_q4_0) == 18, "GGUF Q4_0 block is 18 bytes");
static_assert(sizeof(block_q8_0) == 34, "GGUF Q8_0 block is 34 bytes");
static_assert(sizeof(block_q5_0) == 22, "GGUF Q5_0 block is 22 bytes");
static_assert(sizeof(block_q4_K) == 144, "GGUF Q4_K block is 144 bytes");
static_assert(sizeof(block_q6_K) == 210, "GGUF Q6_K block is 210 bytes");
static_assert(sizeof(block_q8_K) == 292, "GGML Q8_K block is 292 bytes");
static_assert(sizeof(block_q8_0a) == 40, "activation block is 40 bytes");
// 2-byte alignment is all a GGUF row guarantees between blocks.
static_assert(alignof(block_q4_0) == 2 && alignof(block_q5_0) == 2 &&
                  alignof(block_q8_0) == 2 && alignof(block_q4_K) == 2 &&
                  alignof(block_q6_K) == 2,
              "weight blocks must not require more than 2-byte alignment");

// GGML type ids, as written in GGUF tensor infos.
enum class QuantFormat : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q5_0 = 6,
    Q8_0 = 8,
    Q4_K = 12,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
};

struct FormatTraits {
    QuantFormat format;
    int block_elems;   // elements per block (1 for plain float types)
    int block_bytes;   // bytes per block
    const char* name;
};

constexpr FormatTraits kFormatTable[] = {
    {QuantFormat::F32, 1, 4, "f32"},
    {QuantFormat::F16, 1, 2, "f16"},
    {QuantFormat::Q4_0, QK4_0, sizeof(block_q4_0), "q4_0"},
    {QuantFormat::Q5_0, QK5_0, sizeof(block_q5_0), "q5_0"},
    {QuantFormat::Q8_0, QK8_0, sizeof(block_q8_0), "q8_0"},
    {QuantFormat::Q4_K, QK_K, sizeof(block_q4_K), "q4_k"},
    {QuantFormat::Q6_K, QK_K, sizeof(block_q6_K), "q6_k"},
    {QuantFormat::Q8_K, QK_K, sizeof(block_q8_K), "q8_k"},
    {QuantFormat::BF16, 1, 2, "bf16"},
};

// Returns traits with block_elems == 0 for an unsupported id, so callers can
// reject unknown GGUF tensor types without exceptions.
constexpr FormatTraits format_traits(QuantFormat f) {
    for (const auto& t : kFormatTable) {
        if (t.format == f) return t;
    }
    return {f, 0, 0, "unsupported"};
}

// Bytes of one row of n elements; n must be a multiple of block_elems
// (GGUF never splits a block across rows).
constexpr size_t row_bytes(QuantFormat f, size_t n) {
    const FormatTraits t = format_traits(f);
    return t.block_elems == 0 ? 0 : n / t.block_elems * t.block_bytes;
}

static_assert(row_bytes(QuantFormat::Q4_K, 1024) == 576, "row size sanity");
static_assert(format_traits(QuantFormat::Q6_K).block_bytes == 210, "table");

// IEEE binary16 <-> binary32 by bit manipulation: portable across compilers
// and hosts without _Float16 / F16C, and exact (fp16 -> fp32 is lossless).
inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        // Zero or subnormal: value = mant * 2^-24, exact in fp32.
        float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    uint32_t bits;
    if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
    } else {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Round-to-nearest-even, matching numpy's float32 -> float16 cast, so test
// data built in Python and kernels agree on every bit.
inline uint16_t fp32_to_fp16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t a = bits & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;           // NaN -> quiet NaN
    if (a >= 0x477ff000u) return sign | 0x7c00u;          // >= 65520 -> inf
    if (a >= 0x38800000u) {                               // normal half
        uint32_t h = (a >> 13) - ((127u - 15u) << 10);
        const uint32_t rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into exp: fine
        return static_cast<uint16_t>(sign | h);
    }
    if (a <= 0x33000000u) return sign;                    // <= 2^-25 rounds to 0
    // Subnormal half: q = round(value * 2^24) with ties to even.
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;                      // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
}

}  // namespace tinyfast::quant
