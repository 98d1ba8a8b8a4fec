/* codec.h: lossy compression of float32 tensors for the links — activations (B,T,C) going
 * up and their gradients coming down — as FP16, BF16, INT8 with one scale per row, or top-k
 * sparsification per row. Each encoding turns rows x cols floats (a row is the last
 * dimension) into a byte string whose length depends only on (dtype code, shape), so it
 * travels as one tensor of a message (protocol.h) with its own dtype code; decoding
 * validates the byte count and every index, so malformed input is refused with SL_EFORMAT
 * and never read or written out of bounds.
 * Not for: the message format itself (protocol.h), choosing a codec per link (schemes/),
 * lossless compression.
 *
 * Encodings, their dtype codes and error bounds (x an input, y its decoded value):
 *
 *   code  name      bytes                         bound
 *   1     F32       4 n                           exact (the "none" codec)
 *   2     F16       2 n                           IEEE binary16, round to nearest even:
 *                                                 |y-x| <= 2^-11 |x| for 2^-14 <= |x| <= 65504;
 *                                                 |y-x| <= 2^-25 below (subnormals, step 2^-24)
 *   3     BF16      2 n                           bfloat16, round to nearest even:
 *                                                 |y-x| <= 2^-8 |x| for normal x
 *   128   I8_ROW    4 rows + n                    per row: scale s = max|x|/127 (rounded up to
 *                                                 a float), q = round(x/s) in [-127,127]:
 *                                                 |y-x| <= s/2 (+ float rounding of q*s, i.e.
 *                                                 about 2^-24 |y|): max|row|/254
 *   129   TOPK_F16  rows k (w + 2)                per row the k largest |x| kept (ties: the
 *   130   TOPK_F32  rows k (w + 4)                lower index), as F16 (bound above) or F32
 *                                                 (exact); every other entry decodes to 0
 *
 * with n = rows x cols and w the index width: 2 bytes (u16) when cols <= 65536, else 4 (u32).
 *
 * Wire layouts (little-endian, no header inside the bytes: everything is in the shape):
 *   F16, BF16: n elements, row-major; the tensor's shape is the logical shape.
 *   I8_ROW:    rows x f32 scales, then rows x cols int8 (row-major); shape is the logical
 *              shape (ndim >= 1; rows = product of all but the last dimension, cols = the
 *              last). q = -128 never occurs (refused).
 *   TOPK_*:    rows x k indices (u16 or u32, strictly increasing within a row, < cols), then
 *              rows x k values (f16 or f32) in the same order; shape is the logical shape
 *              with k appended as one more dimension (so logical ndim 1..3).
 *
 * Special values (decided once for all encodings):
 *   - FP16/BF16 saturate: a finite x whose rounded value would overflow becomes the largest
 *     finite value of its sign (65504 / 3.3895e38) and is counted in sl_codec_stats; an
 *     input that is +-inf stays +-inf; NaN stays NaN (quiet, sign and leading payload
 *     bits kept).
 *   - INT8_ROW: a row holding any NaN or inf is stored with scale NaN (all q = 0), so the
 *     whole row decodes to NaN — the receiver sees non-finite values as it would have
 *     without compression — and is counted.
 *   - TOPK: NaN ranks above every number, so a NaN is kept (and decodes to NaN); inf is
 *     kept as inf.
 *   - Subnormal float32 inputs are handled exactly as the IEEE rounding says (no flushing).
 *
 * Speed: every loop is branch-free and vectorises; FP16 uses the F16C instructions when
 * the CPU has them (checked at run time), else the portable path, which gives the same
 * bits (tests run both). */
#ifndef SPLITLLM_NET_CODEC_H
#define SPLITLLM_NET_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "net/protocol.h"

/* Compressed dtype codes (the reserved 128..255 range of protocol.h's sl_dtype). */
enum {
    SL_DTYPE_I8_ROW = 128,   /* int8 with a float32 scale per row */
    SL_DTYPE_TOPK_F16 = 129, /* top-k per row, FP16 values */
    SL_DTYPE_TOPK_F32 = 130, /* top-k per row, F32 values */
};

/* What a link is configured with. */
typedef enum {
    SL_CODEC_NONE = 0,  /* F32, as is */
    SL_CODEC_FP16,      /* "fp16" */
    SL_CODEC_BF16,      /* "bf16" */
    SL_CODEC_INT8_ROW,  /* "int8" */
    SL_CODEC_TOPK_FP16, /* "topk:F": keep the fraction F of each row, FP16 values */
    SL_CODEC_TOPK_F32,  /* "topk32:F": the same with exact F32 values */
} sl_codec_kind;

typedef struct {
    sl_codec_kind c_kind;
    double c_fraction; /* top-k only: in (0, 1] */
} sl_codec;

/* What an encode did to special values (any pointer argument may be NULL to ignore). */
typedef struct {
    uint64_t s_saturated;     /* FP16/BF16 values (also top-k FP16 values) clamped to max finite */
    uint64_t s_nonfinite_rows; /* INT8 rows stored as NaN because they held NaN or inf */
} sl_codec_stats;

/* ---------------------------------------------------------------- configuration */

/* Parses "none", "fp16", "bf16", "int8", "topk:F" or "topk32:F" (F a decimal fraction in
 * (0, 1], e.g. "topk:0.1"). SL_EINVAL naming the text and the accepted forms otherwise. */
int sl_codec_parse(const char *text, sl_codec *out);
/* The text sl_codec_parse reads back to the same codec ("topk:0.1"), into out (n bytes). */
void sl_codec_format(const sl_codec *c, char *out, size_t n);
/* The dtype code the codec sends: SL_DTYPE_F32, _F16, _BF16, SL_DTYPE_I8_ROW, _TOPK_F16/F32. */
uint8_t sl_codec_dtype(const sl_codec *c);
/* Entries kept per row of cols: ceil(fraction x cols) within [1, cols] (0 when cols is 0);
 * cols for a codec that is not top-k. */
size_t sl_codec_topk_k(const sl_codec *c, size_t cols);

/* ---------------------------------------------------------------- one encoding */

/* The codes this file can decode: 1 (F32), 2 (F16), 3 (BF16), 128, 129, 130. */
int sl_codec_dtype_known(uint8_t dtype);
/* "F32", "F16", "BF16", "I8_ROW", "TOPK_F16", "TOPK_F32"; NULL for other codes. */
const char *sl_codec_dtype_name(uint8_t dtype);

/* Bytes of rows x cols floats in encoding dtype (k: entries kept per row, top-k only;
 * ignored otherwise). SL_EINVAL for an unknown dtype, k > cols, top-k rows longer than
 * UINT32_MAX, or a size that overflows. */
int sl_codec_bytes(uint8_t dtype, size_t rows, size_t cols, size_t k, size_t *out);
/* Encodes src (rows x cols, row-major) into dst, which holds exactly sl_codec_bytes bytes
 * (any alignment). stats (may be NULL) is added to, not reset. SL_EINVAL for a wrong size;
 * SL_ENOMEM when top-k cannot get its cols x 4-byte scratch. */
int sl_codec_encode(uint8_t dtype, const float *src, size_t rows, size_t cols, size_t k, void *dst,
                    size_t dst_bytes, sl_codec_stats *stats);
/* Decodes src (src_bytes bytes, any alignment) into dst (rows x cols floats). SL_EFORMAT,
 * naming what was wrong and where, for a byte count other than sl_codec_bytes, a negative
 * or infinite INT8 scale, q = -128, a top-k index >= cols or not above the previous one in
 * its row. dst is unspecified after a failure. */
int sl_codec_decode(uint8_t dtype, const void *src, size_t src_bytes, size_t rows, size_t cols, size_t k,
                    float *dst);

/* ---------------------------------------------------------------- tensors of a message */

/* How a logical F32 tensor travels: its dtype code, the shape to put in the message and
 * the byte count; rows/cols/k as the encoders take them. */
typedef struct {
    uint8_t w_dtype;
    int w_ndim;                           /* the shape in the message */
    uint32_t w_shape[SL_TENSOR_MAX_DIMS];
    int w_lndim;                          /* the logical shape: w_shape's first w_lndim */
    size_t w_bytes;
    size_t w_rows, w_cols, w_k;           /* w_k is w_cols unless top-k */
} sl_codec_wire;

/* The wire form of a tensor of logical shape (ndim, shape) under codec c. SL_EINVAL for a
 * bad codec, ndim 0 with INT8/top-k, ndim 4 with top-k (no room for k), or an overflow.
 * Sending, e.g.:
 *     sl_codec_wire w;  sl_codec_wire_for(&codec, 3, shape, &w);
 *     void *buf = sl_msg_alloc(&msg, w.w_bytes);
 *     sl_codec_encode(w.w_dtype, act, w.w_rows, w.w_cols, w.w_k, buf, w.w_bytes, &stats);
 *     sl_msg_add(&msg, "act", w.w_dtype, w.w_ndim, w.w_shape, buf);
 * (sl_codec_wire_encode does the middle step.) */
int sl_codec_wire_for(const sl_codec *c, int ndim, const uint32_t *shape, sl_codec_wire *out);
int sl_codec_wire_encode(const sl_codec_wire *w, const float *src, void *dst, sl_codec_stats *stats);

/* For a received tensor with dtype code and wire shape: its byte count. SL_EFORMAT for an
 * unknown code, a shape the code does not allow (I8_ROW ndim 0; top-k ndim < 2 or k >
 * cols) or an overflow. This is the rule a message decoder needs for codes 128..130. */
int sl_codec_wire_bytes(uint8_t dtype, int ndim, const uint32_t *shape, size_t *out);
/* The same tensor's wire form: bytes, rows, cols, k and the logical shape (w_lndim: the
 * wire shape less top-k's trailing k). SL_EFORMAT as above. */
int sl_codec_wire_parse(uint8_t dtype, int ndim, const uint32_t *shape, sl_codec_wire *out);

/* Decodes a received tensor (any of the known codes) into dst, which holds dst_elements
 * floats: SL_EFORMAT, naming the tensor, unless dst_elements is its logical element count
 * and its bytes are well formed. */
int sl_codec_tensor_decode(const sl_tensor *t, float *dst, size_t dst_elements);

/* ---------------------------------------------------------------- element conversions */

/* Round to nearest even, saturating finite overflow (counted in *saturated, may be NULL). */
void sl_f32_to_f16(const float *src, size_t n, uint16_t *dst, uint64_t *saturated);
void sl_f16_to_f32(const uint16_t *src, size_t n, float *dst);
void sl_f32_to_bf16(const float *src, size_t n, uint16_t *dst, uint64_t *saturated);
void sl_bf16_to_f32(const uint16_t *src, size_t n, float *dst);

/* 1 when the FP16 conversions use F16C instructions on this CPU. */
int sl_codec_f16c_available(void);
/* Tests and benchmarks: on != 0 forces the portable FP16 path (process-wide, not thread-safe
 * to change while conversions run). Returns the previous setting. */
int sl_codec_force_portable(int on);

#endif
