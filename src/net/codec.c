/* codec.c: see codec.h. The element conversions are branch-free so that the compiler
 * vectorises them; FP16 additionally has an F16C path (x86, chosen at run time) that the
 * tests check bit for bit against the portable one. Bytes on the wire are read and written
 * with memcpy (or through a bounce buffer) so that no access assumes the buffer's
 * alignment. */
#include "net/codec.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec.c writes little-endian wire data from host memory: little-endian hosts only"
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define SL_CODEC_HAVE_F16C 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define SL_CODEC_HAVE_F16C 0
#endif

/* Elements converted per bounce-buffer block when a wire buffer is not 2-byte aligned. */
#define BLOCK 1024

/* ---------------------------------------------------------------- bits */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* c ? x : y for a 0/1 condition, as masks: GCC 12 turns chains of ?: into branches (and
 * then does not vectorise), not these. */
#define SEL(c, x, y) ((((uint32_t)0 - (uint32_t)(c)) & (x)) | (((uint32_t)(c) - 1u) & (y)))

#define F32_INF_BITS 0x7f800000u
#define F16_SAT_FROM 0x477ff000u /* 65520.0f: from here round-to-nearest-even gives inf */
#define F16_MAX_BITS 0x7bffu     /* 65504 */
#define BF16_MAX_BITS 0x7f7fu    /* 3.3895314e38 */

/* One float to binary16: round to nearest even (after F. Giesen's float_to_half_fast3_rtne),
 * finite overflow saturated, inf kept, NaN quiet with its sign and leading payload bits.
 * Returns the 16 bits, plus 1 << 16 when the value saturated (one result, so that the
 * loops calling it stay free of control flow and vectorise). */
static inline uint32_t f16_from_f32(float x) {
    uint32_t u = f2u(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    /* Normal results: rebias the exponent, add half an ulp minus one plus the odd bit. */
    uint32_t nrm = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
    /* Subnormal results (|x| < 2^-14): the significand (implicit bit included) shifted right
     * to count 2^-24 steps, rounded to nearest even by hand; integer-only, because GCC
     * would not execute a float add speculatively and so would not vectorise the loop. */
    uint32_t sh = 126u - (a >> 23);
    sh = sh > 31u ? 31u : sh; /* >= 25 gives 0 anyway; also tames the wrapped values */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t sub = (m + ((1u << sh) >> 1) - 1u + ((m >> sh) & 1u)) >> sh;
    uint32_t r = SEL(a < (113u << 23), sub, nrm);
    uint32_t special = SEL(a > F32_INF_BITS, 0x7e00u | ((a >> 13) & 0x3ffu), 0x7c00u); /* NaN, inf */
    r = SEL(a >= F16_SAT_FROM, SEL(a >= F32_INF_BITS, special, F16_MAX_BITS), r);
    uint32_t o = (uint32_t)(a >= F16_SAT_FROM) & (uint32_t)(a < F32_INF_BITS);
    return r | sign | (o << 16);
}

/* binary16 to float, exact; a NaN comes out quiet (as F16C's vcvtph2ps does). */
static inline float f32_from_f16(uint16_t h) {
    uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t exp = em & (0x1fu << 23);
    uint32_t nrm = em + (112u << 23);
    uint32_t special = (em + (224u << 23)) | ((em & 0x7fffffu) != 0 ? 0x400000u : 0u);
    uint32_t sub = f2u(u2f(em + (113u << 23)) - u2f(113u << 23));
    uint32_t r = exp == (0x1fu << 23) ? special : (exp == 0 ? sub : nrm);
    return u2f(r | ((uint32_t)(h & 0x8000u) << 16));
}

static inline uint32_t bf16_from_f32(float x) { /* the same convention */
    uint32_t u = f2u(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    uint32_t r = (a + 0x7fffu + ((a >> 16) & 1u)) >> 16;
    uint32_t o = (uint32_t)(a < F32_INF_BITS) & (uint32_t)(r >= 0x7f80u);
    r = o ? BF16_MAX_BITS : r;
    r = a > F32_INF_BITS ? ((a >> 16) | 0x40u) : r;
    return r | sign | (o << 16);
}

/* ---------------------------------------------------------------- FP16 / BF16 arrays */

static atomic_int force_portable;

int sl_codec_force_portable(int on) { return atomic_exchange_explicit(&force_portable, on != 0, memory_order_relaxed); }

#if SL_CODEC_HAVE_F16C
/* CPUID says AVX and F16C, and the OS saves the YMM registers (XGETBV). */
static int detect_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    if (!(ecx & bit_OSXSAVE) || !(ecx & bit_AVX) || !(ecx & bit_F16C)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6u) == 6u;
}

static atomic_int f16c_state = -1; /* -1: not asked yet (CPUID is slow in VMs: once) */
#endif

int sl_codec_f16c_available(void) {
#if SL_CODEC_HAVE_F16C
    int s = atomic_load_explicit(&f16c_state, memory_order_relaxed);
    if (s < 0) {
        s = detect_f16c();
        atomic_store_explicit(&f16c_state, s, memory_order_relaxed);
    }
    return s;
#else
    return 0;
#endif
}

static int use_f16c(void) {
    return !atomic_load_explicit(&force_portable, memory_order_relaxed) && sl_codec_f16c_available();
}

static uint64_t f16_encode_portable(const float *src, size_t n, uint16_t *dst) {
    uint64_t sat = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = f16_from_f32(src[i]);
        dst[i] = (uint16_t)v;
        sat += v >> 16;
    }
    return sat;
}

static void f16_decode_portable(const uint16_t *src, size_t n, float *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_from_f16(src[i]);
}

#if SL_CODEC_HAVE_F16C
__attribute__((target("avx,f16c"))) static uint64_t f16_encode_f16c(const float *src, size_t n, uint16_t *dst) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 sat_from = _mm256_set1_ps(65520.0f);
    const __m256 inf = _mm256_castsi256_ps(_mm256_set1_epi32((int)F32_INF_BITS));
    const __m256 max_f16 = _mm256_set1_ps(65504.0f);
    uint64_t sat = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m256 ax = _mm256_and_ps(x, abs_mask);
        __m256 over = _mm256_and_ps(_mm256_cmp_ps(ax, sat_from, _CMP_GE_OQ), _mm256_cmp_ps(ax, inf, _CMP_LT_OQ));
        int m = _mm256_movemask_ps(over);
        if (m != 0) {
            x = _mm256_blendv_ps(x, _mm256_or_ps(max_f16, _mm256_andnot_ps(abs_mask, x)), over);
            sat += (uint64_t)__builtin_popcount((unsigned)m);
        }
        _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
    return sat + f16_encode_portable(src + i, n - i, dst + i);
}

__attribute__((target("avx,f16c"))) static void f16_decode_f16c(const uint16_t *src, size_t n, float *dst) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + i))));
    f16_decode_portable(src + i, n - i, dst + i);
}
#endif

void sl_f32_to_f16(const float *src, size_t n, uint16_t *dst, uint64_t *saturated) {
    uint64_t sat;
#if SL_CODEC_HAVE_F16C
    if (use_f16c())
        sat = f16_encode_f16c(src, n, dst);
    else
#endif
        sat = f16_encode_portable(src, n, dst);
    if (saturated != NULL) *saturated += sat;
}

void sl_f16_to_f32(const uint16_t *src, size_t n, float *dst) {
#if SL_CODEC_HAVE_F16C
    if (use_f16c()) {
        f16_decode_f16c(src, n, dst);
        return;
    }
#endif
    f16_decode_portable(src, n, dst);
}

void sl_f32_to_bf16(const float *src, size_t n, uint16_t *dst, uint64_t *saturated) {
    uint64_t sat = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = bf16_from_f32(src[i]);
        dst[i] = (uint16_t)v;
        sat += v >> 16;
    }
    if (saturated != NULL) *saturated += sat;
}

void sl_bf16_to_f32(const uint16_t *src, size_t n, float *dst) {
    for (size_t i = 0; i < n; i++) dst[i] = u2f((uint32_t)src[i] << 16);
}

/* Half-width arrays to or from wire bytes of any alignment. */
static void half_encode(uint8_t dtype, const float *src, size_t n, void *dst, uint64_t *sat) {
    void (*conv)(const float *, size_t, uint16_t *, uint64_t *) = dtype == SL_DTYPE_F16 ? sl_f32_to_f16
                                                                                         : sl_f32_to_bf16;
    if (((uintptr_t)dst & 1u) == 0) {
        conv(src, n, dst, sat);
        return;
    }
    uint16_t buf[BLOCK];
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t m = n - i < BLOCK ? n - i : BLOCK;
        conv(src + i, m, buf, sat);
        memcpy((uint8_t *)dst + 2 * i, buf, 2 * m);
    }
}

static void half_decode(uint8_t dtype, const void *src, size_t n, float *dst) {
    void (*conv)(const uint16_t *, size_t, float *) = dtype == SL_DTYPE_F16 ? sl_f16_to_f32 : sl_bf16_to_f32;
    if (((uintptr_t)src & 1u) == 0) {
        conv(src, n, dst);
        return;
    }
    uint16_t buf[BLOCK];
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t m = n - i < BLOCK ? n - i : BLOCK;
        memcpy(buf, (const uint8_t *)src + 2 * i, 2 * m);
        conv(buf, m, dst + i);
    }
}

/* ---------------------------------------------------------------- names and sizes */

int sl_codec_dtype_known(uint8_t dtype) { return sl_codec_dtype_name(dtype) != NULL; }

const char *sl_codec_dtype_name(uint8_t dtype) {
    switch (dtype) {
    case SL_DTYPE_F32: return "F32";
    case SL_DTYPE_F16: return "F16";
    case SL_DTYPE_BF16: return "BF16";
    case SL_DTYPE_I8_ROW: return "I8_ROW";
    case SL_DTYPE_TOPK_F16: return "TOPK_F16";
    case SL_DTYPE_TOPK_F32: return "TOPK_F32";
    default: return NULL;
    }
}

static size_t index_width(size_t cols) { return cols <= 65536u ? 2u : 4u; }

/* Bytes of the encoding; 0 or SL_EINVAL (message naming what) on overflow / bad k. */
static int bytes_of(uint8_t dtype, size_t rows, size_t cols, size_t k, size_t *out, int code, const char *what) {
    size_t n = 0, a = 0, b = 0;
    const char *name = sl_codec_dtype_name(dtype);
    if (name == NULL) return sl_fail(code, "%s: unknown codec dtype %u", what, dtype);
    if (sl_mul_size(rows, cols, &n) != 0)
        return sl_fail(code, "%s: %s %zu x %zu elements overflow", what, name, rows, cols);
    switch (dtype) {
    case SL_DTYPE_F32:
        if (sl_mul_size(n, 4, out) != 0) break;
        return SL_OK;
    case SL_DTYPE_F16:
    case SL_DTYPE_BF16:
        if (sl_mul_size(n, 2, out) != 0) break;
        return SL_OK;
    case SL_DTYPE_I8_ROW:
        if (sl_mul_size(rows, 4, &a) != 0 || n > SIZE_MAX - a) break;
        *out = a + n;
        return SL_OK;
    case SL_DTYPE_TOPK_F16:
    case SL_DTYPE_TOPK_F32:
        if (k > cols)
            return sl_fail(code, "%s: %s k = %zu entries kept per row, expected at most the row's %zu", what, name,
                           k, cols);
        if (cols > UINT32_MAX)
            return sl_fail(code, "%s: %s rows of %zu entries: indices are u32, at most %" PRIu32 " entries", what,
                           name, cols, UINT32_MAX);
        if (sl_mul_size(rows, k, &a) != 0 ||
            sl_mul_size(a, index_width(cols) + (dtype == SL_DTYPE_TOPK_F16 ? 2u : 4u), &b) != 0)
            break;
        *out = b;
        return SL_OK;
    }
    return sl_fail(code, "%s: %s of %zu x %zu elements: its size overflows", what, name, rows, cols);
}

int sl_codec_bytes(uint8_t dtype, size_t rows, size_t cols, size_t k, size_t *out) {
    return bytes_of(dtype, rows, cols, k, out, SL_EINVAL, "codec");
}

/* ---------------------------------------------------------------- INT8 with a scale per row */

/* The smallest float s with s >= max/127 (so that max/s <= 127 and no q needs clamping for
 * the bound to hold); max > 0 and finite. */
static float row_scale(float max) {
    double want = (double)max / 127.0;
    float s = (float)want;
    if ((double)s < want) s = nextafterf(s, INFINITY);
    return s;
}

static void i8_encode(const float *src, size_t rows, size_t cols, uint8_t *dst, sl_codec_stats *st) {
    uint8_t *scales = dst;
    int8_t *q = (int8_t *)(dst + 4 * rows);
    /* 1.5 * 2^23: adding and subtracting it rounds |v| < 2^22 to the nearest integer, ties to
     * even, in vector registers (rintf does not always vectorise). */
    const float magic = 12582912.0f;
    uint64_t bad_rows = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        int8_t *qr = q + r * cols;
        uint32_t top = 0; /* largest |x| as bits: NaN > inf > every finite value */
        for (size_t c = 0; c < cols; c++) {
            uint32_t a = f2u(x[c]) & 0x7fffffffu;
            top = a > top ? a : top;
        }
        float s;
        if (top >= F32_INF_BITS) {
            s = NAN;
            bad_rows++;
            memset(qr, 0, cols);
        } else if (top == 0) {
            s = 0.0f;
            memset(qr, 0, cols);
        } else {
            s = row_scale(u2f(top));
            for (size_t c = 0; c < cols; c++) {
                float v = (x[c] / s + magic) - magic;
                v = v > 127.0f ? 127.0f : v;
                v = v < -127.0f ? -127.0f : v;
                qr[c] = (int8_t)(int32_t)v;
            }
        }
        memcpy(scales + 4 * r, &s, 4);
    }
    if (st != NULL) st->s_nonfinite_rows += bad_rows;
}

static int i8_decode(const uint8_t *src, size_t rows, size_t cols, float *dst, const char *what) {
    const int8_t *q = (const int8_t *)(src + 4 * rows);
    for (size_t r = 0; r < rows; r++) {
        float s;
        memcpy(&s, src + 4 * r, 4);
        if (!(s >= 0.0f && s < INFINITY) && !isnan(s))
            return sl_fail(SL_EFORMAT, "%s: I8_ROW scale of row %zu (byte %zu): expected a finite value >= 0 or "
                           "NaN, found %g", what, r, 4 * r, (double)s);
        const int8_t *qr = q + r * cols;
        float *y = dst + r * cols;
        int low = 0;
        for (size_t c = 0; c < cols; c++) {
            low |= qr[c] == -128;
            y[c] = (float)qr[c] * s;
        }
        if (low) {
            size_t c = 0;
            while (qr[c] != -128) c++;
            return sl_fail(SL_EFORMAT, "%s: I8_ROW value at row %zu, column %zu (byte %zu): expected -127..127, "
                           "found -128", what, r, c, 4 * rows + r * cols + c);
        }
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- top-k per row */

static inline uint32_t mag_key(float x) { return f2u(x) & 0x7fffffffu; }

/* Picks, from the top, the bucket of hist in which the need-th largest key lies; lowers
 * *need by the keys in the buckets above it. */
static uint32_t pick_bucket(const uint32_t *hist, size_t *need) {
    uint32_t b = 255;
    size_t above = 0;
    for (; b > 0 && above + hist[b] < *need; b--) above += hist[b];
    *need -= above;
    return b;
}

/* The k-th largest magnitude key of the row (1 <= k <= cols) by radix select: a histogram
 * of the exponents over the row, then of the 23 mantissa bits 8, 8 and 7 at a time over the
 * candidates left (compacted into cand, cols entries). *ties says how many entries equal to
 * the result belong to the k (the others are above it). Deterministic, O(cols). */
static uint32_t kth_key(const float *x, size_t cols, size_t k, uint32_t *cand, size_t *ties) {
    uint32_t hist[256];
    size_t need = k;
    memset(hist, 0, sizeof(hist));
    for (size_t c = 0; c < cols; c++) hist[mag_key(x[c]) >> 23]++;
    uint32_t b = pick_bucket(hist, &need);
    uint32_t prefix = b << 23;
    size_t m = 0;
    for (size_t c = 0; c < cols; c++) { /* branch-free compaction */
        uint32_t key = mag_key(x[c]);
        cand[m] = key;
        m += (key >> 23) == b;
    }
    static const int shifts[3] = {15, 7, 0}; /* bits 22..15, 14..7, then 7..0 (bit 7 is fixed) */
    for (int p = 0; p < 3; p++) {
        int sh = shifts[p];
        memset(hist, 0, sizeof(hist));
        for (size_t i = 0; i < m; i++) hist[(cand[i] >> sh) & 0xffu]++;
        b = pick_bucket(hist, &need);
        prefix |= b << sh;
        size_t m2 = 0;
        for (size_t i = 0; i < m; i++) {
            uint32_t key = cand[i];
            cand[m2] = key;
            m2 += ((key >> sh) & 0xffu) == b;
        }
        m = m2;
    }
    *ties = need;
    return prefix;
}

static void put_index(uint8_t *p, size_t w, size_t idx) {
    if (w == 2) {
        uint16_t v = (uint16_t)idx;
        memcpy(p, &v, 2);
    } else {
        uint32_t v = (uint32_t)idx;
        memcpy(p, &v, 4);
    }
}

static size_t get_index(const uint8_t *p, size_t w) {
    if (w == 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Writes row r's k kept entries (index order) at entry j0 of the index and value arrays;
 * w and vw are constants where it is inlined. Returns the saturated FP16 count. */
static inline uint64_t topk_emit(const float *x, size_t cols, uint32_t t, size_t ties, uint8_t *idx, uint8_t *val,
                                 size_t j, size_t w, size_t vw) {
    uint64_t sat = 0;
    for (size_t c = 0; c < cols; c++) {
        uint32_t key = mag_key(x[c]);
        if (key < t || (key == t && ties == 0)) continue;
        ties -= key == t;
        put_index(idx + j * w, w, c);
        if (vw == 2) {
            uint32_t v = f16_from_f32(x[c]);
            uint16_t h = (uint16_t)v;
            sat += v >> 16;
            memcpy(val + 2 * j, &h, 2);
        } else {
            memcpy(val + 4 * j, &x[c], 4);
        }
        j++;
    }
    return sat;
}

static int topk_encode(uint8_t dtype, const float *src, size_t rows, size_t cols, size_t k, uint8_t *dst,
                       sl_codec_stats *st) {
    if (k == 0) return SL_OK;
    size_t w = index_width(cols), vw = dtype == SL_DTYPE_TOPK_F16 ? 2u : 4u;
    uint8_t *idx = dst, *val = dst + rows * k * w;
    uint32_t *cand = sl_alloc(cols * sizeof(uint32_t));
    if (cand == NULL) return SL_ENOMEM;
    uint64_t sat = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        size_t ties = 0, j = r * k;
        uint32_t t = kth_key(x, cols, k, cand, &ties);
        if (w == 2 && vw == 2) sat += topk_emit(x, cols, t, ties, idx, val, j, 2, 2);
        else if (w == 2) sat += topk_emit(x, cols, t, ties, idx, val, j, 2, 4);
        else if (vw == 2) sat += topk_emit(x, cols, t, ties, idx, val, j, 4, 2);
        else sat += topk_emit(x, cols, t, ties, idx, val, j, 4, 4);
    }
    sl_free(cand);
    if (st != NULL) st->s_saturated += sat;
    return SL_OK;
}

static int topk_decode(uint8_t dtype, const uint8_t *src, size_t rows, size_t cols, size_t k, float *dst,
                       const char *what) {
    size_t w = index_width(cols), vw = dtype == SL_DTYPE_TOPK_F16 ? 2u : 4u;
    const uint8_t *idx = src, *val = src + rows * k * w;
    for (size_t r = 0; r < rows; r++) {
        float *y = dst + r * cols;
        memset(y, 0, cols * sizeof(float));
        size_t lo = 0; /* the smallest index allowed next */
        for (size_t j = r * k; j < (r + 1) * k; j++) {
            size_t c = get_index(idx + j * w, w);
            if (c < lo || c >= cols) {
                if (c >= cols)
                    return sl_fail(SL_EFORMAT, "%s: %s index %zu of row %zu (byte %zu): expected < %zu (the row "
                                   "length), found %zu", what, sl_codec_dtype_name(dtype), j - r * k, r, j * w,
                                   cols, c);
                return sl_fail(SL_EFORMAT, "%s: %s index %zu of row %zu (byte %zu): expected > %zu (indices strictly "
                               "increase within a row), found %zu", what, sl_codec_dtype_name(dtype), j - r * k, r,
                               j * w, lo - 1, c);
            }
            if (vw == 2) {
                uint16_t h;
                memcpy(&h, val + 2 * j, 2);
                y[c] = f32_from_f16(h);
            } else {
                memcpy(&y[c], val + 4 * j, 4);
            }
            lo = c + 1;
        }
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- one encoding */

int sl_codec_encode(uint8_t dtype, const float *src, size_t rows, size_t cols, size_t k, void *dst,
                    size_t dst_bytes, sl_codec_stats *stats) {
    size_t need = 0;
    int rc = bytes_of(dtype, rows, cols, k, &need, SL_EINVAL, "encode");
    if (rc != 0) return rc;
    if (dst_bytes != need)
        return sl_fail(SL_EINVAL, "encode: %s of %zu x %zu (k %zu) takes %zu bytes, the buffer has %zu",
                       sl_codec_dtype_name(dtype), rows, cols, k, need, dst_bytes);
    size_t n = rows * cols;
    if (need == 0) return SL_OK;
    switch (dtype) {
    case SL_DTYPE_F32: memcpy(dst, src, need); break;
    case SL_DTYPE_F16:
    case SL_DTYPE_BF16: half_encode(dtype, src, n, dst, stats != NULL ? &stats->s_saturated : NULL); break;
    case SL_DTYPE_I8_ROW: i8_encode(src, rows, cols, dst, stats); break;
    default: return topk_encode(dtype, src, rows, cols, k, dst, stats);
    }
    return SL_OK;
}

static int decode_impl(uint8_t dtype, const void *src, size_t src_bytes, size_t rows, size_t cols, size_t k,
                       float *dst, const char *what) {
    size_t need = 0;
    int rc = bytes_of(dtype, rows, cols, k, &need, SL_EFORMAT, what);
    if (rc != 0) return rc;
    if (src_bytes != need)
        return sl_fail(SL_EFORMAT, "%s: %s of %zu x %zu (k %zu): %zu bytes, expected %zu", what,
                       sl_codec_dtype_name(dtype), rows, cols, dtype >= SL_DTYPE_TOPK_F16 ? k : cols, src_bytes, need);
    size_t n = rows * cols;
    if (need == 0) return SL_OK;
    switch (dtype) {
    case SL_DTYPE_F32: memcpy(dst, src, need); return SL_OK;
    case SL_DTYPE_F16:
    case SL_DTYPE_BF16: half_decode(dtype, src, n, dst); return SL_OK;
    case SL_DTYPE_I8_ROW: return i8_decode(src, rows, cols, dst, what);
    default: return topk_decode(dtype, src, rows, cols, k, dst, what);
    }
}

int sl_codec_decode(uint8_t dtype, const void *src, size_t src_bytes, size_t rows, size_t cols, size_t k,
                    float *dst) {
    return decode_impl(dtype, src, src_bytes, rows, cols, k, dst, "decode");
}

/* ---------------------------------------------------------------- configuration */

int sl_codec_parse(const char *text, sl_codec *out) {
    static const char *forms = "none, fp16, bf16, int8, topk:F or topk32:F with F in (0, 1]";
    memset(out, 0, sizeof(*out));
    if (text == NULL) return sl_fail(SL_EINVAL, "codec: no text, expected %s", forms);
    static const struct {
        const char *name;
        sl_codec_kind kind;
    } plain[] = {{"none", SL_CODEC_NONE}, {"fp16", SL_CODEC_FP16}, {"bf16", SL_CODEC_BF16}, {"int8", SL_CODEC_INT8_ROW}};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (strcmp(text, plain[i].name) == 0) {
            out->c_kind = plain[i].kind;
            return SL_OK;
        }
    const char *f = NULL;
    if (strncmp(text, "topk:", 5) == 0) {
        out->c_kind = SL_CODEC_TOPK_FP16;
        f = text + 5;
    } else if (strncmp(text, "topk32:", 7) == 0) {
        out->c_kind = SL_CODEC_TOPK_F32;
        f = text + 7;
    } else {
        return sl_fail(SL_EINVAL, "codec '%s': expected %s", text, forms);
    }
    char *end = NULL;
    double v = (*f == '\0' || *f == ' ' || *f == '+' || *f == '-') ? NAN : strtod(f, &end);
    if (end == NULL || *end != '\0' || !(v > 0.0 && v <= 1.0)) {
        memset(out, 0, sizeof(*out));
        return sl_fail(SL_EINVAL, "codec '%s': the fraction kept per row must be a number in (0, 1], found '%s'",
                       text, f);
    }
    out->c_fraction = v;
    return SL_OK;
}

void sl_codec_format(const sl_codec *c, char *out, size_t n) {
    if (n == 0) return;
    switch (c->c_kind) {
    case SL_CODEC_NONE: snprintf(out, n, "none"); return;
    case SL_CODEC_FP16: snprintf(out, n, "fp16"); return;
    case SL_CODEC_BF16: snprintf(out, n, "bf16"); return;
    case SL_CODEC_INT8_ROW: snprintf(out, n, "int8"); return;
    case SL_CODEC_TOPK_FP16:
    case SL_CODEC_TOPK_F32: {
        const char *p = c->c_kind == SL_CODEC_TOPK_FP16 ? "topk" : "topk32";
        char num[40];
        for (int digits = 6; digits <= 17; digits++) { /* the shortest text that reads back */
            snprintf(num, sizeof(num), "%.*g", digits, c->c_fraction);
            if (strtod(num, NULL) == c->c_fraction) break;
        }
        snprintf(out, n, "%s:%s", p, num);
        return;
    }
    }
    snprintf(out, n, "codec %d", (int)c->c_kind);
}

uint8_t sl_codec_dtype(const sl_codec *c) {
    switch (c->c_kind) {
    case SL_CODEC_FP16: return SL_DTYPE_F16;
    case SL_CODEC_BF16: return SL_DTYPE_BF16;
    case SL_CODEC_INT8_ROW: return SL_DTYPE_I8_ROW;
    case SL_CODEC_TOPK_FP16: return SL_DTYPE_TOPK_F16;
    case SL_CODEC_TOPK_F32: return SL_DTYPE_TOPK_F32;
    default: return SL_DTYPE_F32;
    }
}

size_t sl_codec_topk_k(const sl_codec *c, size_t cols) {
    if (c->c_kind != SL_CODEC_TOPK_FP16 && c->c_kind != SL_CODEC_TOPK_F32) return cols;
    if (cols == 0) return 0;
    double p = c->c_fraction * (double)cols;
    /* 0.1 x 770 is 77.00000000000001 in binary: a relative 1e-12 below absorbs that. */
    double kd = ceil(p - p * 1e-12);
    if (!(kd >= 1.0)) return 1;
    if (kd >= (double)cols) return cols;
    return (size_t)kd;
}

/* ---------------------------------------------------------------- tensors of a message */

static int wire_parse(uint8_t dtype, int ndim, const uint32_t *shape, sl_codec_wire *out, int code,
                      const char *what) {
    memset(out, 0, sizeof(*out));
    const char *name = sl_codec_dtype_name(dtype);
    if (name == NULL)
        return sl_fail(code, "%s: dtype %u: expected F32 (1), F16 (2), BF16 (3), I8_ROW (%d), TOPK_F16 (%d) or "
                       "TOPK_F32 (%d)", what, dtype, SL_DTYPE_I8_ROW, SL_DTYPE_TOPK_F16, SL_DTYPE_TOPK_F32);
    int topk = dtype == SL_DTYPE_TOPK_F16 || dtype == SL_DTYPE_TOPK_F32;
    int min_ndim = topk ? 2 : dtype == SL_DTYPE_I8_ROW ? 1 : 0;
    if (ndim < min_ndim || ndim > (int)SL_TENSOR_MAX_DIMS)
        return sl_fail(code, "%s: %s with %d dimensions: expected %d..%u%s", what, name, ndim, min_ndim,
                       SL_TENSOR_MAX_DIMS, topk ? " (the logical shape and k)" : "");
    out->w_dtype = dtype;
    out->w_ndim = ndim;
    for (int d = 0; d < ndim; d++) out->w_shape[d] = shape[d];
    int lndim = topk ? ndim - 1 : ndim;
    out->w_lndim = lndim;
    size_t rows = 1;
    for (int d = 0; d + 1 < lndim; d++)
        if (sl_mul_size(rows, shape[d], &rows) != 0)
            return sl_fail(code, "%s: %s: the element count of its shape overflows", what, name);
    size_t cols = lndim > 0 ? shape[lndim - 1] : 1;
    size_t k = topk ? shape[ndim - 1] : cols;
    if (topk && k > cols)
        return sl_fail(code, "%s: %s keeps k = %zu entries per row (its last dimension), expected at most the row's "
                       "%zu", what, name, k, cols);
    out->w_rows = rows;
    out->w_cols = cols;
    out->w_k = k;
    return bytes_of(dtype, rows, cols, k, &out->w_bytes, code, what);
}

int sl_codec_wire_parse(uint8_t dtype, int ndim, const uint32_t *shape, sl_codec_wire *out) {
    return wire_parse(dtype, ndim, shape, out, SL_EFORMAT, "tensor");
}

int sl_codec_wire_bytes(uint8_t dtype, int ndim, const uint32_t *shape, size_t *out) {
    sl_codec_wire w;
    int rc = wire_parse(dtype, ndim, shape, &w, SL_EFORMAT, "tensor");
    *out = rc == 0 ? w.w_bytes : 0;
    return rc;
}

int sl_codec_wire_for(const sl_codec *c, int ndim, const uint32_t *shape, sl_codec_wire *out) {
    memset(out, 0, sizeof(*out));
    if ((int)c->c_kind < SL_CODEC_NONE || c->c_kind > SL_CODEC_TOPK_F32)
        return sl_fail(SL_EINVAL, "codec: unknown kind %d", (int)c->c_kind);
    int topk = c->c_kind == SL_CODEC_TOPK_FP16 || c->c_kind == SL_CODEC_TOPK_F32;
    if (topk && !(c->c_fraction > 0.0 && c->c_fraction <= 1.0))
        return sl_fail(SL_EINVAL, "codec: top-k fraction %g, expected (0, 1]", c->c_fraction);
    int max_ndim = topk ? (int)SL_TENSOR_MAX_DIMS - 1 : (int)SL_TENSOR_MAX_DIMS;
    int min_ndim = c->c_kind == SL_CODEC_INT8_ROW || topk ? 1 : 0;
    if (ndim < min_ndim || ndim > max_ndim) {
        char text[64];
        sl_codec_format(c, text, sizeof(text));
        return sl_fail(SL_EINVAL, "codec %s: a tensor of %d dimensions, expected %d..%d", text, ndim, min_ndim,
                       max_ndim);
    }
    uint32_t wshape[SL_TENSOR_MAX_DIMS] = {0};
    for (int d = 0; d < ndim; d++) wshape[d] = shape[d];
    int wndim = ndim;
    if (topk) wshape[wndim++] = (uint32_t)sl_codec_topk_k(c, shape[ndim - 1]);
    return wire_parse(sl_codec_dtype(c), wndim, wshape, out, SL_EINVAL, "codec");
}

int sl_codec_wire_encode(const sl_codec_wire *w, const float *src, void *dst, sl_codec_stats *stats) {
    return sl_codec_encode(w->w_dtype, src, w->w_rows, w->w_cols, w->w_k, dst, w->w_bytes, stats);
}

int sl_codec_tensor_decode(const sl_tensor *t, float *dst, size_t dst_elements) {
    char what[SL_TENSOR_NAME_MAX + 16];
    snprintf(what, sizeof(what), "tensor '%s'", t->t_name);
    sl_codec_wire w;
    int rc = wire_parse(t->t_dtype, t->t_ndim, t->t_shape, &w, SL_EFORMAT, what);
    if (rc != 0) return rc;
    if (w.w_rows * w.w_cols != dst_elements)
        return sl_fail(SL_EFORMAT, "%s: %s holds %zu x %zu = %zu values, expected %zu", what,
                       sl_codec_dtype_name(t->t_dtype), w.w_rows, w.w_cols, w.w_rows * w.w_cols, dst_elements);
    if (t->t_bytes > 0 && t->t_data == NULL) return sl_fail(SL_EFORMAT, "%s: no data", what);
    return decode_impl(t->t_dtype, t->t_data, t->t_bytes, w.w_rows, w.w_cols, w.w_k, dst, what);
}
