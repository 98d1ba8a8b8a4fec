/* protocol.c: see protocol.h. Every header field and shape entry is written and read one
 * at a time in little-endian byte order; tensor data is the host's memory, which is why
 * this file refuses to build on a big-endian host (swapping would have to be added). */
#include "net/protocol.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "net/codec.h"
#include "util/common.h"
#include "util/crc32.h"
#include "util/le.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "protocol.c sends tensor data as host memory: little-endian hosts only"
#endif

/* Header byte offsets (docs/PROTOCOL.md, "Header"). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_TYPE = 6,
    OFF_ROUND = 8,
    OFF_STEP = 12,
    OFF_STREAM = 16,
    OFF_SENDER = 20,
    OFF_SENDER_TIER = 24,
    OFF_RESERVED_A = 25, /* 3 bytes, zero */
    OFF_FLAGS = 28,
    OFF_SEQ = 32,
    OFF_PAYLOAD_BYTES = 40,
    OFF_CHECKSUM = SL_MSG_CHECKSUM_OFFSET,
    OFF_RESERVED_B = 52, /* 4 bytes, zero */
};
#define RESERVED_A_BYTES 3
#define RESERVED_B_BYTES 4
#define N_TENSORS_BYTES 4
#define SHAPE_ENTRY_BYTES 4

_Static_assert(OFF_RESERVED_B + RESERVED_B_BYTES == SL_MSG_HEADER_BYTES, "header layout");

static size_t align_up(size_t off) { return (off + SL_MSG_DATA_ALIGN - 1) & ~(size_t)(SL_MSG_DATA_ALIGN - 1); }

/* ---------------------------------------------------------------- names */

static const char *const type_names[SL_MSG_TYPE_END] = {
    [SL_MSG_HELLO] = "HELLO",
    [SL_MSG_HELLO_OK] = "HELLO_OK",
    [SL_MSG_PART_CHUNK] = "PART_CHUNK",
    [SL_MSG_PART_DATA] = "PART_DATA",
    [SL_MSG_ROUND_POLL] = "ROUND_POLL",
    [SL_MSG_ROUND_TASK] = "ROUND_TASK",
    [SL_MSG_ROUND_WAIT] = "ROUND_WAIT",
    [SL_MSG_ROUND_DONE] = "ROUND_DONE",
    [SL_MSG_FORWARD] = "FORWARD",
    [SL_MSG_BACKWARD] = "BACKWARD",
    [SL_MSG_ROUND_REPORT] = "ROUND_REPORT",
    [SL_MSG_ACK] = "ACK",
    [SL_MSG_ERROR] = "ERROR",
};

const char *sl_msg_type_name(uint16_t type) {
    if (type == 0 || type >= SL_MSG_TYPE_END) return NULL;
    return type_names[type];
}

static const struct {
    const char *name;
    size_t size;
} dtypes[SL_DTYPE_END] = {
    [SL_DTYPE_F32] = {"F32", 4}, [SL_DTYPE_F16] = {"F16", 2}, [SL_DTYPE_BF16] = {"BF16", 2},
    [SL_DTYPE_I8] = {"I8", 1},   [SL_DTYPE_I32] = {"I32", 4}, [SL_DTYPE_U8] = {"U8", 1},
    [SL_DTYPE_U64] = {"U64", 8},
};

/* Plain types are ours; codes 128..255 are compressed encodings, known to net/codec.c. */
static int dtype_compressed(uint8_t dtype) { return dtype >= SL_DTYPE_COMPRESSED_FIRST; }

static int dtype_known(uint8_t dtype) {
    return dtype_compressed(dtype) ? sl_codec_dtype_known(dtype) : sl_dtype_size(dtype) != 0;
}

const char *sl_dtype_name(uint8_t dtype) {
    if (dtype_compressed(dtype)) return sl_codec_dtype_name(dtype);
    if (dtype == 0 || dtype >= SL_DTYPE_END) return NULL;
    return dtypes[dtype].name;
}

size_t sl_dtype_size(uint8_t dtype) {
    if (dtype == 0 || dtype >= SL_DTYPE_END) return 0;
    return dtypes[dtype].size;
}

const char *sl_tier_name(uint8_t tier) {
    switch (tier) {
    case SL_TIER_USER: return "user";
    case SL_TIER_EDGE: return "edge";
    case SL_TIER_CLOUD: return "cloud";
    default: return NULL;
    }
}

int sl_msg_reply_allowed(uint16_t request_type, uint16_t reply_type) {
    switch (request_type) {
    case SL_MSG_HELLO: return reply_type == SL_MSG_HELLO_OK || reply_type == SL_MSG_ERROR;
    case SL_MSG_PART_CHUNK: return reply_type == SL_MSG_PART_DATA || reply_type == SL_MSG_ERROR;
    case SL_MSG_ROUND_POLL:
        return reply_type == SL_MSG_ROUND_TASK || reply_type == SL_MSG_ROUND_WAIT ||
               reply_type == SL_MSG_ROUND_DONE || reply_type == SL_MSG_ERROR;
    case SL_MSG_FORWARD: return reply_type == SL_MSG_BACKWARD || reply_type == SL_MSG_ERROR;
    case SL_MSG_ROUND_REPORT: return reply_type == SL_MSG_ACK || reply_type == SL_MSG_ERROR;
    default: return 0;
    }
}

void sl_msg_describe(const sl_msg_header *h, char *out, size_t n) {
    const char *type = sl_msg_type_name(h->h_type), *tier = sl_tier_name(h->h_sender_tier);
    char type_buf[16], tier_buf[16];
    if (type == NULL) {
        snprintf(type_buf, sizeof(type_buf), "type %u", h->h_type);
        type = type_buf;
    }
    if (tier == NULL) {
        snprintf(tier_buf, sizeof(tier_buf), "tier %u", h->h_sender_tier);
        tier = tier_buf;
    }
    snprintf(out, n, "%s from %s %" PRIu32 " (seq %" PRIu64 ", round %" PRIu32 ", step %" PRIu32 ", stream %" PRIu32 ")",
             type, tier, h->h_sender, h->h_seq, h->h_round, h->h_step, h->h_stream);
}

/* "(4,64,32)"; "()" for a scalar. */
static void format_shape(char *out, size_t n, int ndim, const uint32_t *shape) {
    size_t used = (size_t)snprintf(out, n, "(");
    for (int d = 0; d < ndim && used < n; d++)
        used += (size_t)snprintf(out + used, n - used, d ? ",%" PRIu32 : "%" PRIu32, shape[d]);
    if (used < n) snprintf(out + used, n - used, ")");
}

/* ---------------------------------------------------------------- building */

void sl_msg_init(sl_msg *msg, sl_msg_type type, uint32_t round, uint32_t step, uint32_t stream) {
    memset(msg, 0, sizeof(*msg));
    msg->m_header.h_version = SL_MSG_VERSION;
    msg->m_header.h_type = (uint16_t)type;
    msg->m_header.h_round = round;
    msg->m_header.h_step = step;
    msg->m_header.h_stream = stream;
}

void sl_msg_set_sender(sl_msg *msg, sl_tier tier, uint32_t sender, uint64_t seq) {
    msg->m_header.h_sender_tier = (uint8_t)tier;
    msg->m_header.h_sender = sender;
    msg->m_header.h_seq = seq;
}

/* 0 when name is 1..63 printable ASCII bytes (no space); its length in *len. */
static int name_ok(const char *name, size_t max_scan, size_t *len) {
    size_t n = 0;
    while (n < max_scan && name[n] != '\0') {
        if ((unsigned char)name[n] < 0x21 || (unsigned char)name[n] > 0x7e) return -1;
        n++;
    }
    *len = n;
    return (n == 0 || n > SL_TENSOR_NAME_MAX) ? -1 : 0;
}

/* The codec's message for a shape it refused, without its "tensor: " lead (the caller names
 * the tensor), or "its size overflows" for a plain dtype. */
static const char *size_problem(uint8_t dtype) {
    const char *e = sl_last_error();
    if (!dtype_compressed(dtype)) return "its size overflows";
    return strncmp(e, "tensor: ", 8) == 0 ? e + 8 : e;
}

/* Bytes of a tensor's data: product(shape) x dtype size, or what the encoding of a
 * compressed dtype says; nonzero on overflow or a shape the encoding does not allow
 * (with the codec's message recorded). */
static int tensor_bytes(uint8_t dtype, int ndim, const uint32_t *shape, uint64_t *elements, size_t *bytes) {
    if (dtype_compressed(dtype)) {
        *elements = 0;
        return sl_codec_wire_bytes(dtype, ndim, shape, bytes);
    }
    uint64_t e = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != 0 && e > UINT64_MAX / shape[d]) return SL_EINVAL;
        e *= shape[d];
    }
    size_t size = sl_dtype_size(dtype);
    if (e > SIZE_MAX / size) return SL_EINVAL;
    *elements = e;
    *bytes = (size_t)e * size;
    return SL_OK;
}

int sl_msg_add(sl_msg *msg, const char *name, sl_dtype dtype, int ndim, const uint32_t *shape,
               const void *data) {
    size_t len;
    if (name == NULL || name_ok(name, SL_TENSOR_NAME_MAX + 1, &len) != 0)
        return sl_fail(SL_EINVAL, "tensor name '%.80s' is not 1..%u printable ASCII bytes without spaces",
                       name ? name : "(null)", SL_TENSOR_NAME_MAX);
    if (msg->m_n_tensors >= SL_MSG_MAX_TENSORS)
        return sl_fail(SL_EINVAL, "tensor '%s': the message already has the maximum of %u tensors", name,
                       SL_MSG_MAX_TENSORS);
    if (sl_msg_find(msg, name) != NULL)
        return sl_fail(SL_EINVAL, "tensor '%s' is already in the message", name);
    if (!dtype_known((uint8_t)dtype))
        return sl_fail(SL_EINVAL, "tensor '%s': unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > (int)SL_TENSOR_MAX_DIMS)
        return sl_fail(SL_EINVAL, "tensor '%s': ndim %d, expected 0..%u", name, ndim, SL_TENSOR_MAX_DIMS);
    if (ndim > 0 && shape == NULL) return sl_fail(SL_EINVAL, "tensor '%s': ndim %d but no shape", name, ndim);
    uint64_t elements;
    size_t bytes;
    if (tensor_bytes((uint8_t)dtype, ndim, shape, &elements, &bytes) != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", size_problem((uint8_t)dtype));
        return sl_fail(SL_EINVAL, "tensor '%s': %s", name, why);
    }
    if (bytes > 0 && data == NULL) return sl_fail(SL_EINVAL, "tensor '%s': %zu bytes but no data", name, bytes);
    sl_tensor *t = &msg->m_tensors[msg->m_n_tensors];
    memset(t, 0, sizeof(*t));
    memcpy(t->t_name, name, len);
    t->t_dtype = (uint8_t)dtype;
    t->t_ndim = (uint8_t)ndim;
    for (int d = 0; d < ndim; d++) t->t_shape[d] = shape[d];
    t->t_data = data;
    t->t_bytes = bytes;
    msg->m_n_tensors++;
    return SL_OK;
}

void *sl_msg_alloc(sl_msg *msg, size_t bytes) {
    if (msg->m_n_owned >= SL_MSG_MAX_TENSORS) {
        sl_fail(SL_EINVAL, "message already owns the maximum of %u allocations", SL_MSG_MAX_TENSORS);
        return NULL;
    }
    void *p = sl_alloc(bytes);
    if (p == NULL) return NULL;
    msg->m_owned[msg->m_n_owned++] = p;
    return p;
}

void sl_msg_release(sl_msg *msg) {
    while (msg->m_n_owned > 0) sl_free(msg->m_owned[--msg->m_n_owned]);
    msg->m_n_tensors = 0;
}

int sl_msg_init_error(sl_msg *msg, uint32_t round, uint32_t step, uint32_t stream, const char *text) {
    sl_msg_init(msg, SL_MSG_ERROR, round, step, stream);
    uint32_t len = (uint32_t)strnlen(text, UINT32_MAX);
    return sl_msg_add(msg, "message", SL_DTYPE_U8, 1, &len, text);
}

/* ---------------------------------------------------------------- encoding */

/* Offset after a tensor that starts at off (header + padding + data); SL_EINVAL on overflow. */
static int tensor_end(const sl_tensor *t, size_t off, size_t *end) {
    size_t head = 1 + strlen(t->t_name) + 2 + SHAPE_ENTRY_BYTES * (size_t)t->t_ndim;
    if (off > SIZE_MAX - head - SL_MSG_DATA_ALIGN) return SL_EINVAL;
    size_t data_off = align_up(off + head);
    if (data_off > SIZE_MAX - t->t_bytes) return SL_EINVAL;
    *end = data_off + t->t_bytes;
    return SL_OK;
}

int sl_msg_encoded_bytes(const sl_msg *msg, size_t *out) {
    size_t off = SL_MSG_HEADER_BYTES + N_TENSORS_BYTES;
    for (uint32_t i = 0; i < msg->m_n_tensors; i++)
        if (tensor_end(&msg->m_tensors[i], off, &off) != 0)
            return sl_fail(SL_EINVAL, "message with tensor '%s': encoded size overflows", msg->m_tensors[i].t_name);
    *out = off;
    return SL_OK;
}

static int header_fields_ok(const sl_msg_header *h) {
    char what[160];
    sl_msg_describe(h, what, sizeof(what));
    if (sl_msg_type_name(h->h_type) == NULL)
        return sl_fail(SL_EINVAL, "%s: unknown message type %u", what, h->h_type);
    if (sl_tier_name(h->h_sender_tier) == NULL)
        return sl_fail(SL_EINVAL, "%s: sender tier %u, expected 1 (user), 2 (edge) or 3 (cloud)", what,
                       h->h_sender_tier);
    if ((h->h_flags & ~SL_MSG_FLAGS_KNOWN) != 0)
        return sl_fail(SL_EINVAL, "%s: flags 0x%08" PRIx32 " has bits version %u does not define", what, h->h_flags,
                       SL_MSG_VERSION);
    return SL_OK;
}

int sl_msg_encode_into(sl_msg *msg, void *buf, size_t bytes) {
    size_t need = 0;
    int rc = sl_msg_encoded_bytes(msg, &need);
    if (rc != 0) return rc;
    if (bytes != need) return sl_fail(SL_EINVAL, "encode: buffer of %zu bytes for a message of %zu", bytes, need);
    msg->m_header.h_version = SL_MSG_VERSION;
    rc = header_fields_ok(&msg->m_header);
    if (rc != 0) return rc;
    uint8_t *b = buf;
    const sl_msg_header *h = &msg->m_header;
    memset(b, 0, SL_MSG_HEADER_BYTES); /* reserved bytes and the checksum while it is computed */
    memcpy(b + OFF_MAGIC, SL_MSG_MAGIC, SL_MSG_MAGIC_BYTES);
    sl_put_u16(b + OFF_VERSION, SL_MSG_VERSION);
    sl_put_u16(b + OFF_TYPE, h->h_type);
    sl_put_u32(b + OFF_ROUND, h->h_round);
    sl_put_u32(b + OFF_STEP, h->h_step);
    sl_put_u32(b + OFF_STREAM, h->h_stream);
    sl_put_u32(b + OFF_SENDER, h->h_sender);
    b[OFF_SENDER_TIER] = h->h_sender_tier;
    sl_put_u32(b + OFF_FLAGS, h->h_flags);
    sl_put_u64(b + OFF_SEQ, h->h_seq);
    sl_put_u64(b + OFF_PAYLOAD_BYTES, (uint64_t)(bytes - SL_MSG_HEADER_BYTES));
    size_t off = SL_MSG_HEADER_BYTES;
    sl_put_u32(b + off, msg->m_n_tensors);
    off += N_TENSORS_BYTES;
    for (uint32_t i = 0; i < msg->m_n_tensors; i++) {
        const sl_tensor *t = &msg->m_tensors[i];
        size_t len = strlen(t->t_name);
        b[off++] = (uint8_t)len;
        memcpy(b + off, t->t_name, len);
        off += len;
        b[off++] = t->t_dtype;
        b[off++] = t->t_ndim;
        for (int d = 0; d < t->t_ndim; d++, off += SHAPE_ENTRY_BYTES) sl_put_u32(b + off, t->t_shape[d]);
        size_t data_off = align_up(off);
        memset(b + off, 0, data_off - off);
        if (t->t_bytes > 0) memcpy(b + data_off, t->t_data, t->t_bytes);
        off = data_off + t->t_bytes;
    }
    msg->m_header.h_payload_bytes = bytes - SL_MSG_HEADER_BYTES;
    msg->m_header.h_checksum = sl_crc32c(0, b, bytes);
    sl_put_u32(b + OFF_CHECKSUM, msg->m_header.h_checksum);
    return SL_OK;
}

int sl_msg_encode(sl_msg *msg, uint8_t **out, size_t *out_bytes) {
    *out = NULL;
    size_t bytes = 0;
    int rc = sl_msg_encoded_bytes(msg, &bytes);
    if (rc != 0) return rc;
    uint8_t *buf = sl_alloc(bytes);
    if (buf == NULL) return SL_ENOMEM;
    rc = sl_msg_encode_into(msg, buf, bytes);
    if (rc != 0) {
        sl_free(buf);
        return rc;
    }
    *out = buf;
    *out_bytes = bytes;
    return SL_OK;
}

/* ---------------------------------------------------------------- decoding */

static void read_header(const uint8_t *b, sl_msg_header *h) {
    memset(h, 0, sizeof(*h));
    h->h_version = sl_get_u16(b + OFF_VERSION);
    h->h_type = sl_get_u16(b + OFF_TYPE);
    h->h_round = sl_get_u32(b + OFF_ROUND);
    h->h_step = sl_get_u32(b + OFF_STEP);
    h->h_stream = sl_get_u32(b + OFF_STREAM);
    h->h_sender = sl_get_u32(b + OFF_SENDER);
    h->h_sender_tier = b[OFF_SENDER_TIER];
    h->h_flags = sl_get_u32(b + OFF_FLAGS);
    h->h_seq = sl_get_u64(b + OFF_SEQ);
    h->h_payload_bytes = sl_get_u64(b + OFF_PAYLOAD_BYTES);
    h->h_checksum = sl_get_u32(b + OFF_CHECKSUM);
}

static int check_magic(const uint8_t *b, const char *from) {
    if (memcmp(b + OFF_MAGIC, SL_MSG_MAGIC, SL_MSG_MAGIC_BYTES) == 0) return SL_OK;
    return sl_fail(SL_EFORMAT, "%s: magic at offset 0: expected \"SLLM\" (53 4c 4c 4d), found %02x %02x %02x %02x",
                   from, b[0], b[1], b[2], b[3]);
}

int sl_msg_peek_header(const void *buf, size_t bytes, sl_msg_header *out) {
    if (bytes < SL_MSG_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "message: %zu bytes, shorter than the %u-byte header", bytes, SL_MSG_HEADER_BYTES);
    int rc = check_magic(buf, "message");
    if (rc != 0) return rc;
    read_header(buf, out);
    return SL_OK;
}

/* Validates the header and the checksum; fills msg->m_header. */
static int decode_header(sl_msg *msg, const uint8_t *b, size_t bytes, size_t max_bytes, const char *from) {
    if (bytes > max_bytes)
        return sl_fail(SL_EFORMAT, "%s: %zu bytes, more than the maximum message size %zu", from, bytes, max_bytes);
    if (bytes < SL_MSG_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "%s: truncated: %zu bytes, shorter than the %u-byte header", from, bytes,
                       SL_MSG_HEADER_BYTES);
    int rc = check_magic(b, from);
    if (rc != 0) return rc;
    sl_msg_header *h = &msg->m_header;
    read_header(b, h);
    if (h->h_version != SL_MSG_VERSION)
        return sl_fail(SL_EFORMAT, "%s: version at offset %d: the peer speaks protocol version %u, this build speaks %u",
                       from, OFF_VERSION, h->h_version, SL_MSG_VERSION);
    if (h->h_payload_bytes != (uint64_t)(bytes - SL_MSG_HEADER_BYTES))
        return sl_fail(SL_EFORMAT, "%s: payload_bytes at offset %d says %" PRIu64 " but %zu bytes follow the header "
                       "(truncated or padded)", from, OFF_PAYLOAD_BYTES, h->h_payload_bytes,
                       bytes - SL_MSG_HEADER_BYTES);
    static const uint8_t zero[4] = {0};
    uint32_t crc = sl_crc32c(0, b, OFF_CHECKSUM);
    crc = sl_crc32c(crc, zero, sizeof(zero));
    crc = sl_crc32c(crc, b + OFF_CHECKSUM + 4, bytes - OFF_CHECKSUM - 4);
    if (crc != h->h_checksum)
        return sl_fail(SL_EFORMAT, "%s: checksum at offset %d: computed CRC-32C 0x%08" PRIx32 ", the message says 0x%08"
                       PRIx32 " (corrupted in transit)", from, OFF_CHECKSUM, crc, h->h_checksum);
    if (sl_msg_type_name(h->h_type) == NULL)
        return sl_fail(SL_EFORMAT, "%s: type at offset %d: expected 1..%d, found %u", from, OFF_TYPE,
                       SL_MSG_TYPE_END - 1, h->h_type);
    if (sl_tier_name(h->h_sender_tier) == NULL)
        return sl_fail(SL_EFORMAT, "%s: sender_tier at offset %d: expected 1 (user), 2 (edge) or 3 (cloud), found %u",
                       from, OFF_SENDER_TIER, h->h_sender_tier);
    for (int i = 0; i < RESERVED_A_BYTES; i++)
        if (b[OFF_RESERVED_A + i] != 0)
            return sl_fail(SL_EFORMAT, "%s: reserved byte at offset %d: expected 0, found %u", from, OFF_RESERVED_A + i,
                           b[OFF_RESERVED_A + i]);
    for (int i = 0; i < RESERVED_B_BYTES; i++)
        if (b[OFF_RESERVED_B + i] != 0)
            return sl_fail(SL_EFORMAT, "%s: reserved byte at offset %d: expected 0, found %u", from, OFF_RESERVED_B + i,
                           b[OFF_RESERVED_B + i]);
    if ((h->h_flags & ~SL_MSG_FLAGS_KNOWN) != 0)
        return sl_fail(SL_EFORMAT, "%s: flags at offset %d: 0x%08" PRIx32 " has bits version %u does not define",
                       from, OFF_FLAGS, h->h_flags, SL_MSG_VERSION);
    return SL_OK;
}

/* Fails unless need bytes remain at off. */
static int need_bytes(size_t off, size_t need, size_t bytes, const char *from, const char *what, uint32_t i) {
    if (off <= bytes && need <= bytes - off) return SL_OK;
    return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " %s at offset %zu: needs %zu bytes, only %zu left", from, i,
                   what, off, need, off <= bytes ? bytes - off : 0);
}

/* Decodes tensor i at *off and advances *off past its data. */
static int decode_tensor(sl_msg *msg, uint32_t i, const uint8_t *b, size_t bytes, size_t *off, const char *from) {
    sl_tensor *t = &msg->m_tensors[i];
    size_t o = *off;
    int rc = need_bytes(o, 1, bytes, from, "name length", i);
    if (rc != 0) return rc;
    size_t len = b[o];
    if (len == 0 || len > SL_TENSOR_NAME_MAX)
        return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " name length at offset %zu: expected 1..%u, found %zu",
                       from, i, o, SL_TENSOR_NAME_MAX, len);
    o++;
    if ((rc = need_bytes(o, len, bytes, from, "name", i)) != 0) return rc;
    for (size_t k = 0; k < len; k++)
        if (b[o + k] < 0x21 || b[o + k] > 0x7e)
            return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " name byte at offset %zu: expected printable ASCII "
                           "without spaces, found 0x%02x", from, i, o + k, b[o + k]);
    memcpy(t->t_name, b + o, len);
    t->t_name[len] = '\0';
    for (uint32_t j = 0; j < i; j++)
        if (strcmp(msg->m_tensors[j].t_name, t->t_name) == 0)
            return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " name at offset %zu: '%s' repeats tensor %" PRIu32,
                           from, i, o, t->t_name, j);
    o += len;
    if ((rc = need_bytes(o, 2, bytes, from, "dtype and ndim", i)) != 0) return rc;
    t->t_dtype = b[o];
    if (!dtype_known(t->t_dtype))
        return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " ('%s') dtype at offset %zu: expected 1..%d or a compressed "
                       "encoding %d..%d, found %u", from, i, t->t_name, o, SL_DTYPE_END - 1, SL_DTYPE_I8_ROW,
                       SL_DTYPE_TOPK_F32, t->t_dtype);
    t->t_ndim = b[o + 1];
    if (t->t_ndim > SL_TENSOR_MAX_DIMS)
        return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " ('%s') ndim at offset %zu: expected 0..%u, found %u", from,
                       i, t->t_name, o + 1, SL_TENSOR_MAX_DIMS, t->t_ndim);
    o += 2;
    if ((rc = need_bytes(o, SHAPE_ENTRY_BYTES * (size_t)t->t_ndim, bytes, from, "shape", i)) != 0) return rc;
    for (int d = 0; d < t->t_ndim; d++, o += SHAPE_ENTRY_BYTES) t->t_shape[d] = sl_get_u32(b + o);
    uint64_t elements;
    if (tensor_bytes(t->t_dtype, t->t_ndim, t->t_shape, &elements, &t->t_bytes) != 0) {
        char shape[64], why[256];
        format_shape(shape, sizeof(shape), t->t_ndim, t->t_shape);
        snprintf(why, sizeof(why), "%s", size_problem(t->t_dtype));
        return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " ('%s') shape %s at offset %zu: %s", from, i, t->t_name,
                       shape, o - SHAPE_ENTRY_BYTES * (size_t)t->t_ndim, why);
    }
    size_t data_off = align_up(o);
    if ((rc = need_bytes(o, data_off - o, bytes, from, "padding", i)) != 0) return rc;
    for (; o < data_off; o++)
        if (b[o] != 0)
            return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " ('%s') padding at offset %zu: expected 0, found %u",
                           from, i, t->t_name, o, b[o]);
    if (data_off > bytes || t->t_bytes > bytes - data_off) {
        char shape[64];
        format_shape(shape, sizeof(shape), t->t_ndim, t->t_shape);
        return sl_fail(SL_EFORMAT, "%s: tensor %" PRIu32 " ('%s') data at offset %zu: %s %s needs %zu bytes, only %zu "
                       "left", from, i, t->t_name, data_off, sl_dtype_name(t->t_dtype), shape, t->t_bytes,
                       data_off <= bytes ? bytes - data_off : 0);
    }
    t->t_data = b + data_off;
    *off = data_off + t->t_bytes;
    return SL_OK;
}

int sl_msg_decode(sl_msg *msg, const void *buf, size_t bytes, size_t max_bytes, const char *from) {
    memset(msg, 0, sizeof(*msg));
    if (from == NULL) from = "message";
    if (((uintptr_t)buf % SL_MSG_DATA_ALIGN) != 0)
        return sl_fail(SL_EINVAL, "%s: decode needs a buffer aligned to %u bytes, got %p", from, SL_MSG_DATA_ALIGN,
                       buf);
    const uint8_t *b = buf;
    int rc = decode_header(msg, b, bytes, max_bytes, from);
    if (rc == 0) {
        size_t off = SL_MSG_HEADER_BYTES;
        if (bytes - off < N_TENSORS_BYTES)
            rc = sl_fail(SL_EFORMAT, "%s: n_tensors at offset %zu: needs %d bytes, only %zu left", from, off,
                         N_TENSORS_BYTES, bytes - off);
        uint32_t n = rc == 0 ? sl_get_u32(b + off) : 0;
        if (rc == 0 && n > SL_MSG_MAX_TENSORS)
            rc = sl_fail(SL_EFORMAT, "%s: n_tensors at offset %zu: expected at most %u, found %" PRIu32, from, off,
                         SL_MSG_MAX_TENSORS, n);
        off += N_TENSORS_BYTES;
        for (uint32_t i = 0; rc == 0 && i < n; i++) rc = decode_tensor(msg, i, b, bytes, &off, from);
        if (rc == 0 && off != bytes)
            rc = sl_fail(SL_EFORMAT, "%s: %zu bytes left over at offset %zu after the last of %" PRIu32 " tensors",
                         from, bytes - off, off, n);
        if (rc == 0) msg->m_n_tensors = n;
    }
    if (rc != 0) memset(msg, 0, sizeof(*msg));
    return rc;
}

/* ---------------------------------------------------------------- reading */

const sl_tensor *sl_msg_find(const sl_msg *msg, const char *name) {
    for (uint32_t i = 0; i < msg->m_n_tensors; i++)
        if (strcmp(msg->m_tensors[i].t_name, name) == 0) return &msg->m_tensors[i];
    return NULL;
}

uint64_t sl_tensor_elements(const sl_tensor *t) {
    uint64_t e = 1;
    for (int d = 0; d < t->t_ndim; d++) e *= t->t_shape[d]; /* checked when built or decoded */
    return e;
}

static void format_expected(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(out, n, "(");
    for (int d = 0; d < ndim && used < n; d++) {
        const char *sep = d ? "," : "";
        if (shape == NULL || shape[d] < 0)
            used += (size_t)snprintf(out + used, n - used, "%s*", sep);
        else
            used += (size_t)snprintf(out + used, n - used, "%s%" PRId64, sep, shape[d]);
    }
    if (used < n) snprintf(out + used, n - used, ")");
}

int sl_msg_get(const sl_msg *msg, const char *name, sl_dtype dtype, int ndim, const int64_t *shape,
               const sl_tensor **out) {
    *out = NULL;
    char what[160], want[96];
    sl_msg_describe(&msg->m_header, what, sizeof(what));
    format_expected(want, sizeof(want), ndim, shape);
    const char *want_dtype = sl_dtype_name((uint8_t)dtype) ? sl_dtype_name((uint8_t)dtype) : "?";
    const sl_tensor *t = sl_msg_find(msg, name);
    if (t == NULL) return sl_fail(SL_EFORMAT, "%s: no tensor '%s', expected %s %s", what, name, want_dtype, want);
    int ok = t->t_dtype == (uint8_t)dtype && t->t_ndim == ndim;
    for (int d = 0; ok && shape != NULL && d < ndim; d++)
        if (shape[d] >= 0 && (int64_t)t->t_shape[d] != shape[d]) ok = 0;
    if (!ok) {
        char found[64];
        format_shape(found, sizeof(found), t->t_ndim, t->t_shape);
        const char *found_dtype = sl_dtype_name(t->t_dtype) ? sl_dtype_name(t->t_dtype) : "?";
        return sl_fail(SL_EFORMAT, "%s: tensor '%s' is %s %s, expected %s %s", what, name, found_dtype, found,
                       want_dtype, want);
    }
    *out = t;
    return SL_OK;
}

void sl_msg_error_text(const sl_msg *msg, char *out, size_t n) {
    if (n == 0) return;
    const sl_tensor *t = sl_msg_find(msg, "message");
    if (t == NULL || t->t_dtype != SL_DTYPE_U8) {
        snprintf(out, n, "(no message)");
        return;
    }
    size_t len = t->t_bytes < n - 1 ? t->t_bytes : n - 1;
    const uint8_t *p = t->t_data;
    for (size_t i = 0; i < len; i++) out[i] = (p[i] >= 0x20 && p[i] <= 0x7e) ? (char)p[i] : '?';
    out[len] = '\0';
}
