/* test_protocol.c: the message format (src/net/protocol.c) and its checksum
 * (src/util/crc32.c) — CRC-32C against the published check value and a bitwise reference;
 * the exact bytes of a small message against a hand-computed layout (docs/PROTOCOL.md);
 * round trips of every dtype and rank; every malformation a decoder must refuse, each
 * with a message naming what was wrong (every truncated prefix, every flipped bit, each
 * header and tensor field); the compressed dtypes of net/codec.h carried with their byte
 * counts; lookups naming both shapes; and 10,000 random mutations that
 * must each be refused or decode to something that re-encodes to the same bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/codec.h"
#include "net/protocol.h"
#include "util/common.h"
#include "util/crc32.h"

#define MAX_BYTES ((size_t)1 << 20) /* decoder limit in these tests */
#define FUZZ_ITERATIONS 10000

/* ---------------------------------------------------------------- helpers */

/* CRC-32C one bit at a time: the definition, independent of both implementations. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1u) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Makes payload_bytes and the checksum agree with the bytes, so that a test reaches the
 * check behind them. */
static void fix_header(uint8_t *b, size_t n) {
    put_le(b + 40, n - SL_MSG_HEADER_BYTES, 8);
    put_le(b + 48, 0, 4);
    put_le(b + 48, crc32c_bitwise(b, n), 4);
}

/* Test data, fixed values. */
static float act[2 * 3 * 4];
static int32_t targets[2 * 3];
static uint8_t mask[2 * 3] = {1, 1, 0, 1, 0, 1};
static float loss = 2.5f;
static uint64_t counts[2] = {7, UINT64_MAX};
static uint8_t q8[2 * 4 + 2 * 3]; /* I8_ROW (2,3): 2 f32 scales, then 6 int8 */

static void build_sample(sl_msg *m) {
    for (int i = 0; i < 24; i++) act[i] = 0.25f * (float)i - 3.0f;
    for (int i = 0; i < 6; i++) targets[i] = 100 * i - 7;
    sl_msg_init(m, SL_MSG_FORWARD, 3, 2, 1);
    sl_msg_set_sender(m, SL_TIER_EDGE, 1, 12);
    const uint32_t s_act[3] = {2, 3, 4}, s_tg[2] = {2, 3}, s_cnt[1] = {2};
    assert_int_equal(sl_msg_add(m, "act", SL_DTYPE_F32, 3, s_act, act), 0);
    assert_int_equal(sl_msg_add(m, "targets", SL_DTYPE_I32, 2, s_tg, targets), 0);
    assert_int_equal(sl_msg_add(m, "mask", SL_DTYPE_U8, 2, s_tg, mask), 0);
    assert_int_equal(sl_msg_add(m, "loss", SL_DTYPE_F32, 0, NULL, &loss), 0);
    assert_int_equal(sl_msg_add(m, "counts", SL_DTYPE_U64, 1, s_cnt, counts), 0);
    for (size_t i = 0; i < sizeof(q8); i++) q8[i] = (uint8_t)(i + 1);
    assert_int_equal(sl_msg_add(m, "q", (sl_dtype)SL_DTYPE_I8_ROW, 2, s_tg, q8), 0); /* compressed */
}

/* The sample message encoded (sl_free it). */
static uint8_t *encode_sample(size_t *n) {
    sl_msg m;
    build_sample(&m);
    uint8_t *b;
    assert_int_equal(sl_msg_encode(&m, &b, n), 0);
    return b;
}

/* Decodes n bytes of b copied into an aligned buffer; expects failure with code and a
 * message containing want (NULL: any). */
static void expect_reject(const uint8_t *b, size_t n, size_t max_bytes, int code, const char *want) {
    uint8_t *copy = sl_alloc(n);
    memcpy(copy, b, n);
    sl_msg m;
    sl_clear_error();
    int rc = sl_msg_decode(&m, copy, n, max_bytes, "edge 1 at inproc://test");
    if (rc != code || (want != NULL && strstr(sl_last_error(), want) == NULL))
        fail_msg("expected code %d with '%s', got %d: %s", code, want ? want : "", rc, sl_last_error());
    assert_non_null(strstr(sl_last_error(), "edge 1 at inproc://test"));
    assert_int_equal(m.m_n_tensors, 0);
    sl_free(copy);
}

/* ---------------------------------------------------------------- checksum */

static void test_crc32c(void **state) {
    (void)state;
    assert_int_equal(sl_crc32c(0, "123456789", 9), 0xE3069283u); /* the published check value */
    assert_int_equal(sl_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(sl_crc32c(0, "", 0), 0);
    uint8_t buf[300];
    sl_rng r;
    sl_rng_init(&r, 5, 0);
    for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)sl_rng_u64(&r);
    for (size_t start = 0; start < 9; start++) /* every alignment of the fast path */
        for (size_t n = 0; n + start <= sizeof(buf); n += 7) {
            uint32_t want = crc32c_bitwise(buf + start, n);
            assert_int_equal(sl_crc32c(0, buf + start, n), want);
            assert_int_equal(sl_crc32c_portable(0, buf + start, n), want);
            size_t half = n / 2; /* continuing a CRC */
            assert_int_equal(sl_crc32c(sl_crc32c(0, buf + start, half), buf + start + half, n - half), want);
        }
}

/* ---------------------------------------------------------------- exact bytes */

static void test_exact_bytes(void **state) {
    (void)state;
    const uint8_t data[3] = {9, 8, 7};
    const uint32_t shape[1] = {3};
    sl_msg m;
    sl_msg_init(&m, SL_MSG_PART_DATA, 0x01020304u, 5, 6);
    sl_msg_set_sender(&m, SL_TIER_CLOUD, 0x0a0b0c0du, 0x1122334455667788ull);
    assert_int_equal(sl_msg_add(&m, "bytes", SL_DTYPE_U8, 1, shape, data), 0);
    uint8_t *b;
    size_t n;
    assert_int_equal(sl_msg_encode(&m, &b, &n), 0);
    /* header 56 + n_tensors 4 + name 1+5 + dtype 1 + ndim 1 + shape 4 = 72 (aligned) + data 3 */
    assert_int_equal(n, 75);
    const uint8_t header[SL_MSG_HEADER_BYTES] = {
        'S', 'L', 'L', 'M', 1, 0, 4, 0,                  /* magic, version 1, type PART_DATA */
        4, 3, 2, 1, 5, 0, 0, 0, 6, 0, 0, 0,              /* round, step, stream */
        0x0d, 0x0c, 0x0b, 0x0a, 3, 0, 0, 0, 0, 0, 0, 0, /* sender, tier cloud, reserved, flags */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  /* seq */
        19, 0, 0, 0, 0, 0, 0, 0,                         /* payload_bytes */
        0, 0, 0, 0, 0, 0, 0, 0,                          /* checksum (compared below), reserved */
    };
    uint8_t zeroed[75];
    memcpy(zeroed, b, n);
    memset(zeroed + 48, 0, 4);
    assert_memory_equal(zeroed, header, SL_MSG_HEADER_BYTES);
    assert_int_equal(get_le(b + 48, 4), crc32c_bitwise(zeroed, n));
    assert_int_equal(get_le(b + 48, 4), m.m_header.h_checksum);
    const uint8_t payload[19] = {1, 0, 0, 0, 5, 'b', 'y', 't', 'e', 's', SL_DTYPE_U8, 1, 3, 0, 0, 0, 9, 8, 7};
    assert_memory_equal(b + 56, payload, 19);
    sl_free(b);
}

/* ---------------------------------------------------------------- round trips */

static void check_same(const sl_msg *a, const sl_msg *b) {
    assert_int_equal(a->m_header.h_type, b->m_header.h_type);
    assert_int_equal(a->m_header.h_round, b->m_header.h_round);
    assert_int_equal(a->m_header.h_step, b->m_header.h_step);
    assert_int_equal(a->m_header.h_stream, b->m_header.h_stream);
    assert_int_equal(a->m_header.h_sender, b->m_header.h_sender);
    assert_int_equal(a->m_header.h_sender_tier, b->m_header.h_sender_tier);
    assert_true(a->m_header.h_seq == b->m_header.h_seq);
    assert_int_equal(a->m_n_tensors, b->m_n_tensors);
    for (uint32_t i = 0; i < a->m_n_tensors; i++) {
        const sl_tensor *x = &a->m_tensors[i], *y = &b->m_tensors[i];
        assert_string_equal(x->t_name, y->t_name);
        assert_int_equal(x->t_dtype, y->t_dtype);
        assert_int_equal(x->t_ndim, y->t_ndim);
        for (int d = 0; d < x->t_ndim; d++) assert_int_equal(x->t_shape[d], y->t_shape[d]);
        assert_int_equal(x->t_bytes, y->t_bytes);
        if (x->t_bytes > 0) assert_memory_equal(x->t_data, y->t_data, x->t_bytes);
        assert_int_equal((uintptr_t)y->t_data % SL_MSG_DATA_ALIGN, 0); /* readable in place */
    }
}

/* Encodes, decodes, compares, re-encodes and compares bytes. */
static void round_trip(sl_msg *m) {
    uint8_t *b, *b2;
    size_t n, n2;
    assert_int_equal(sl_msg_encode(m, &b, &n), 0);
    sl_msg d;
    if (sl_msg_decode(&d, b, n, MAX_BYTES, NULL) != 0) fail_msg("decode: %s", sl_last_error());
    check_same(m, &d);
    assert_int_equal(d.m_header.h_payload_bytes, n - SL_MSG_HEADER_BYTES);
    assert_int_equal(sl_msg_encode(&d, &b2, &n2), 0);
    assert_int_equal(n, n2);
    assert_memory_equal(b, b2, n);
    sl_free(b2);
    sl_free(b);
}

static void test_round_trip_every_dtype_and_rank(void **state) {
    (void)state;
    uint8_t data[8 * 2 * 3 * 2 * 1 * 3];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)(i * 37 + 11);
    const uint32_t shapes[][SL_TENSOR_MAX_DIMS] = {{2, 3, 2, 1}, {1, 1, 1, 1}, {0, 5, 1, 1}};
    for (uint8_t dt = 1; dt < SL_DTYPE_END; dt++)
        for (int ndim = 0; ndim <= (int)SL_TENSOR_MAX_DIMS; ndim++)
            for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
                sl_msg m;
                sl_msg_init(&m, SL_MSG_ROUND_REPORT, 1, 2, 3);
                sl_msg_set_sender(&m, SL_TIER_USER, 4, 5);
                assert_int_equal(sl_msg_add(&m, "t", (sl_dtype)dt, ndim, shapes[s], data), 0);
                /* a second tensor after an odd-sized one: its data must still be aligned */
                const uint32_t one = 1;
                assert_int_equal(sl_msg_add(&m, "after", SL_DTYPE_U64, 1, &one, data), 0);
                round_trip(&m);
            }
    sl_msg m; /* every type, no tensors */
    for (uint16_t t = 1; t < SL_MSG_TYPE_END; t++) {
        sl_msg_init(&m, (sl_msg_type)t, UINT32_MAX, 0, 7);
        sl_msg_set_sender(&m, SL_TIER_CLOUD, UINT32_MAX, UINT64_MAX);
        round_trip(&m);
    }
    build_sample(&m);
    round_trip(&m);
    /* the most tensors allowed, with the longest names */
    sl_msg_init(&m, SL_MSG_HELLO, 0, 0, 0);
    sl_msg_set_sender(&m, SL_TIER_USER, 1, 1);
    char names[SL_MSG_MAX_TENSORS][SL_TENSOR_NAME_MAX + 1];
    for (uint32_t i = 0; i < SL_MSG_MAX_TENSORS; i++) {
        memset(names[i], 'a' + (int)(i % 26), SL_TENSOR_NAME_MAX);
        names[i][SL_TENSOR_NAME_MAX] = '\0';
        char prefix[8];
        int k = snprintf(prefix, sizeof(prefix), "n%u_", i);
        memcpy(names[i], prefix, (size_t)k); /* unique, 63 bytes */
        assert_int_equal(sl_msg_add(&m, names[i], SL_DTYPE_I8, 1, &(uint32_t){i % 5}, data), 0);
    }
    round_trip(&m);
}

static void test_decoded_points_into_buffer(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = encode_sample(&n);
    sl_msg d;
    assert_int_equal(sl_msg_decode(&d, b, n, MAX_BYTES, NULL), 0);
    for (uint32_t i = 0; i < d.m_n_tensors; i++) {
        const uint8_t *p = d.m_tensors[i].t_data;
        assert_true(p >= b && p + d.m_tensors[i].t_bytes <= b + n); /* no copy */
    }
    const sl_tensor *t;
    assert_int_equal(sl_msg_get(&d, "act", SL_DTYPE_F32, 3, (const int64_t[]){2, 3, 4}, &t), 0);
    assert_true(((const float *)t->t_data)[5] == act[5]);
    assert_int_equal(sl_tensor_elements(t), 24);
    /* a misaligned buffer is a caller error */
    uint8_t *shifted = sl_alloc(n + 4);
    memcpy(shifted + 4, b, n);
    assert_int_equal(sl_msg_decode(&d, shifted + 4, n, MAX_BYTES, NULL), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "aligned"));
    sl_free(shifted);
    sl_free(b);
}

/* ---------------------------------------------------------------- malformed */

static void test_every_truncation(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = encode_sample(&n);
    for (size_t len = 0; len < n; len++)
        expect_reject(b, len, MAX_BYTES, SL_EFORMAT, len < SL_MSG_HEADER_BYTES ? "truncated" : "payload_bytes");
    /* and one byte too many */
    uint8_t *longer = sl_alloc(n + 1);
    memcpy(longer, b, n);
    expect_reject(longer, n + 1, MAX_BYTES, SL_EFORMAT, "payload_bytes");
    sl_free(longer);
    sl_free(b);
}

static void test_every_bit_flip(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = encode_sample(&n);
    for (size_t bit = 0; bit < 8 * n; bit++) {
        size_t at = bit / 8;
        b[at] ^= (uint8_t)(1u << (bit % 8));
        const char *want = "checksum";
        if (at < 4) want = "magic";
        else if (at < 6) want = "version";
        else if (at >= 40 && at < 48) want = "payload_bytes";
        expect_reject(b, n, MAX_BYTES, SL_EFORMAT, want);
        b[at] ^= (uint8_t)(1u << (bit % 8));
    }
    sl_free(b);
}

/* Sets a header field to v (n bytes at off), fixes the checksum, expects want. */
static void reject_header_field(size_t off, int n, uint64_t v, const char *want) {
    size_t len;
    uint8_t *b = encode_sample(&len);
    put_le(b + off, v, n);
    fix_header(b, len);
    expect_reject(b, len, MAX_BYTES, SL_EFORMAT, want);
    sl_free(b);
}

static void test_header_malformations(void **state) {
    (void)state;
    reject_header_field(0, 4, 0x4d4c4c54, "magic at offset 0: expected \"SLLM\"");  /* "TLLM" */
    reject_header_field(4, 2, 2, "peer speaks protocol version 2, this build speaks 1");
    reject_header_field(4, 2, 0, "version 0");
    reject_header_field(6, 2, 0, "type at offset 6: expected 1..13, found 0");
    reject_header_field(6, 2, SL_MSG_TYPE_END, "type at offset 6");
    reject_header_field(6, 2, 0xffff, "found 65535");
    reject_header_field(24, 1, 0, "sender_tier at offset 24");
    reject_header_field(24, 1, 4, "found 4");
    reject_header_field(25, 1, 1, "reserved byte at offset 25");
    reject_header_field(27, 1, 0x80, "reserved byte at offset 27");
    reject_header_field(52, 4, 1, "reserved byte at offset 52");
    reject_header_field(28, 4, 1, "flags at offset 28");
    /* payload_bytes lying, both ways, checksum right for the lie */
    size_t n;
    uint8_t *b = encode_sample(&n);
    put_le(b + 40, n - SL_MSG_HEADER_BYTES + 1, 8);
    expect_reject(b, n, MAX_BYTES, SL_EFORMAT, "payload_bytes at offset 40 says");
    put_le(b + 40, n - SL_MSG_HEADER_BYTES - 1, 8);
    expect_reject(b, n, MAX_BYTES, SL_EFORMAT, "payload_bytes at offset 40 says");
    put_le(b + 40, UINT64_MAX, 8);
    expect_reject(b, n, MAX_BYTES, SL_EFORMAT, "18446744073709551615");
    sl_free(b);
}

static void test_oversized(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = encode_sample(&n);
    char want[96];
    snprintf(want, sizeof(want), "%zu bytes, more than the maximum message size %zu", n, n - 1);
    expect_reject(b, n, n - 1, SL_EFORMAT, want);
    sl_msg d;
    assert_int_equal(sl_msg_decode(&d, b, n, n, NULL), 0); /* exactly the maximum is fine */
    sl_free(b);
}

/* A message with one tensor whose encoded payload is given byte by byte (after n_tensors
 * = n_tensors), headers fixed; expects want. */
static void reject_payload(uint32_t n_tensors, const uint8_t *payload, size_t n, const char *want) {
    size_t len = SL_MSG_HEADER_BYTES + 4 + n;
    uint8_t *b = sl_alloc(len);
    size_t hn;
    uint8_t *h = encode_sample(&hn);
    memcpy(b, h, SL_MSG_HEADER_BYTES);
    sl_free(h);
    put_le(b + SL_MSG_HEADER_BYTES, n_tensors, 4);
    memcpy(b + SL_MSG_HEADER_BYTES + 4, payload, n);
    fix_header(b, len);
    expect_reject(b, len, MAX_BYTES, SL_EFORMAT, want);
    sl_free(b);
}

static void test_payload_malformations(void **state) {
    (void)state;
    /* a valid one-tensor payload: "ab" U8 (3) at offset 60; data at 72 (aligned) */
    const uint8_t ok[] = {2, 'a', 'b', SL_DTYPE_U8, 1, 3, 0, 0, 0, 0, 0, 0, 1, 2, 3};
    {
        uint8_t b[SL_MSG_HEADER_BYTES + 4 + sizeof(ok)];
        size_t hn;
        uint8_t *h = encode_sample(&hn);
        memcpy(b, h, SL_MSG_HEADER_BYTES);
        sl_free(h);
        put_le(b + SL_MSG_HEADER_BYTES, 1, 4);
        memcpy(b + SL_MSG_HEADER_BYTES + 4, ok, sizeof(ok));
        fix_header(b, sizeof(b));
        uint8_t *a = sl_alloc(sizeof(b));
        memcpy(a, b, sizeof(b));
        sl_msg d;
        if (sl_msg_decode(&d, a, sizeof(b), MAX_BYTES, NULL) != 0) fail_msg("%s", sl_last_error());
        assert_string_equal(d.m_tensors[0].t_name, "ab");
        assert_int_equal(((const uint8_t *)d.m_tensors[0].t_data)[2], 3);
        sl_free(a);
    }
    uint8_t p[64];
    reject_payload(SL_MSG_MAX_TENSORS + 1, ok, sizeof(ok), "n_tensors at offset 56: expected at most 64, found 65");
    reject_payload(2, ok, sizeof(ok), "tensor 1 name length at offset 75: needs 1 bytes, only 0 left");
    reject_payload(0, ok, sizeof(ok), "15 bytes left over at offset 60");  /* trailing bytes */
    reject_payload(1, ok, sizeof(ok) - 1, "tensor 0 ('ab') data at offset 72: U8 (3) needs 3 bytes, only 2");
    memcpy(p, ok, sizeof(ok));
    p[sizeof(ok)] = 0xee;
    reject_payload(1, p, sizeof(ok) + 1, "1 bytes left over at offset 75");
    memcpy(p, ok, sizeof(ok));
    p[0] = 0;
    reject_payload(1, p, sizeof(ok), "name length at offset 60: expected 1..63, found 0");
    p[0] = 64;
    reject_payload(1, p, sizeof(ok), "found 64");
    p[0] = 40; /* claims a name running past the end */
    reject_payload(1, p, 10, "tensor 0 name at offset 61: needs 40 bytes");
    memcpy(p, ok, sizeof(ok));
    p[2] = ' ';
    reject_payload(1, p, sizeof(ok), "name byte at offset 62: expected printable ASCII without spaces, found 0x20");
    p[2] = 0;
    reject_payload(1, p, sizeof(ok), "found 0x00");
    memcpy(p, ok, sizeof(ok));
    p[3] = 0;
    reject_payload(1, p, sizeof(ok), "tensor 0 ('ab') dtype at offset 63: expected 1..7 or a compressed encoding "
                   "128..130, found 0");
    p[3] = 131; /* past the compressed encodings net/codec.h defines */
    reject_payload(1, p, sizeof(ok), "found 131");
    p[3] = 200; /* reserved for compressed encodings, none defined yet */
    reject_payload(1, p, sizeof(ok), "found 200");
    memcpy(p, ok, sizeof(ok));
    p[4] = 5;
    reject_payload(1, p, sizeof(ok), "tensor 0 ('ab') ndim at offset 64: expected 0..4, found 5");
    memcpy(p, ok, sizeof(ok));
    p[11] = 1;
    reject_payload(1, p, sizeof(ok), "tensor 0 ('ab') padding at offset 71: expected 0, found 1");
    /* shape product overflow: U64 (2^32-1)^4 */
    const uint8_t huge[] = {1, 'h', SL_DTYPE_U64, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    reject_payload(1, huge, sizeof(huge), "tensor 0 ('h') shape (4294967295,4294967295,4294967295,4294967295) at "
                   "offset 64: its size overflows");
    /* no overflow in elements, but in bytes: U64 (2^32-1, 2^32-1) x 8 > 2^64 */
    const uint8_t huge2[] = {1, 'h', SL_DTYPE_U64, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    reject_payload(1, huge2, sizeof(huge2), "its size overflows");
    /* a big but representable size: data past the end */
    const uint8_t big[] = {1, 'h', SL_DTYPE_F32, 2, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    reject_payload(1, big, sizeof(big), "tensor 0 ('h') data at offset 72: F32 (65536,65536) needs 17179869184 bytes, only 8 left");
    /* a shape cut short */
    const uint8_t cut[] = {1, 'h', SL_DTYPE_F32, 3, 1, 0, 0, 0, 1, 0};
    reject_payload(1, cut, sizeof(cut), "tensor 0 shape at offset 64: needs 12 bytes, only 6 left");
    /* duplicate names */
    uint8_t dup[2 * sizeof(ok) + 1];
    memcpy(dup, ok, sizeof(ok));
    dup[sizeof(ok)] = 2; /* second tensor at 75: name length, "ab", U8 (3), padding to 88 */
    const uint8_t second[] = {'a', 'b', SL_DTYPE_U8, 1, 3, 0, 0, 0};
    memcpy(dup + sizeof(ok) + 1, second, sizeof(second));
    reject_payload(2, dup, sizeof(ok) + 1 + sizeof(second), "tensor 1 name at offset 76: 'ab' repeats tensor 0");
}

/* Codes 128..130 (net/codec.h) travel with the byte counts their encodings give a shape. */
static void test_compressed_dtypes(void **state) {
    (void)state;
    static uint8_t data[64];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = (uint8_t)(3 * i);
    const uint32_t s_i8[2] = {2, 3}, s_topk[3] = {2, 5, 2};
    sl_msg m;
    sl_msg_init(&m, SL_MSG_FORWARD, 1, 0, 0);
    sl_msg_set_sender(&m, SL_TIER_USER, 1, 1);
    assert_int_equal(sl_msg_add(&m, "i8", (sl_dtype)SL_DTYPE_I8_ROW, 2, s_i8, data), 0);
    assert_int_equal(m.m_tensors[0].t_bytes, 2 * 4 + 6);           /* scales + int8 */
    assert_int_equal(sl_msg_add(&m, "tk", (sl_dtype)SL_DTYPE_TOPK_F16, 3, s_topk, data), 0);
    assert_int_equal(m.m_tensors[1].t_bytes, 2 * 2 * (2 + 2));     /* rows k (u16 index + f16) */
    assert_string_equal(sl_dtype_name(SL_DTYPE_TOPK_F16), "TOPK_F16");
    assert_int_equal(sl_dtype_size(SL_DTYPE_I8_ROW), 0);
    round_trip(&m);
    /* shapes an encoding does not allow */
    const uint32_t k_too_big[3] = {2, 3, 4};
    assert_int_equal(sl_msg_add(&m, "bad", (sl_dtype)SL_DTYPE_TOPK_F32, 3, k_too_big, data), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "tensor 'bad': TOPK_F32 keeps"));
    assert_non_null(strstr(sl_last_error(), "k = 4"));
    assert_int_equal(sl_msg_add(&m, "bad", (sl_dtype)SL_DTYPE_TOPK_F32, 1, k_too_big, data), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "bad", (sl_dtype)SL_DTYPE_I8_ROW, 0, NULL, data), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "bad", (sl_dtype)131, 1, s_i8, data), SL_EINVAL);
    /* and on the wire: TOPK_F32 (2,3,4) at offset 60 */
    const uint8_t tk[] = {1, 'h', SL_DTYPE_TOPK_F32, 3, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0};
    reject_payload(1, tk, sizeof(tk), "tensor 0 ('h') shape (2,3,4) at offset 64: TOPK_F32 keeps k = 4 entries per row");
    /* I8_ROW (2,3) needs 14 bytes, 6 given */
    const uint8_t i8[] = {1, 'h', SL_DTYPE_I8_ROW, 2, 2, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 4, 5, 6};
    reject_payload(1, i8, sizeof(i8), "tensor 0 ('h') data at offset 72: I8_ROW (2,3) needs 14 bytes, only 6 left");
}

static void test_builder_errors(void **state) {
    (void)state;
    sl_msg m;
    uint8_t x[8] = {0};
    const uint32_t one = 1, shape5[5] = {1, 1, 1, 1, 1}, big[2] = {UINT32_MAX, UINT32_MAX};
    sl_msg_init(&m, SL_MSG_FORWARD, 0, 0, 0);
    assert_int_equal(sl_msg_add(&m, "", SL_DTYPE_U8, 1, &one, x), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "has space", SL_DTYPE_U8, 1, &one, x), SL_EINVAL);
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    assert_int_equal(sl_msg_add(&m, long_name, SL_DTYPE_U8, 1, &one, x), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "1..63"));
    long_name[63] = '\0';
    assert_int_equal(sl_msg_add(&m, long_name, SL_DTYPE_U8, 1, &one, x), 0);
    assert_int_equal(sl_msg_add(&m, long_name, SL_DTYPE_U8, 1, &one, x), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "already in the message"));
    assert_int_equal(sl_msg_add(&m, "d", (sl_dtype)0, 1, &one, x), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "d", SL_DTYPE_END, 1, &one, x), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "n", SL_DTYPE_U8, 5, shape5, x), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "ndim 5"));
    assert_int_equal(sl_msg_add(&m, "n", SL_DTYPE_U8, -1, shape5, x), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "o", SL_DTYPE_U64, 2, big, x), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "overflows"));
    assert_int_equal(sl_msg_add(&m, "z", SL_DTYPE_U8, 1, &one, NULL), SL_EINVAL);
    assert_int_equal(sl_msg_add(&m, "e", SL_DTYPE_U8, 1, &(uint32_t){0}, NULL), 0); /* empty is fine */
    assert_int_equal(m.m_n_tensors, 2);
    /* no sender tier: not encodable */
    uint8_t *b;
    size_t n;
    assert_int_equal(sl_msg_encode(&m, &b, &n), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "sender tier 0"));
    /* too many tensors */
    sl_msg_init(&m, SL_MSG_FORWARD, 0, 0, 0);
    char name[8];
    for (uint32_t i = 0; i < SL_MSG_MAX_TENSORS; i++) {
        snprintf(name, sizeof(name), "t%u", i);
        assert_int_equal(sl_msg_add(&m, name, SL_DTYPE_U8, 0, NULL, x), 0);
    }
    assert_int_equal(sl_msg_add(&m, "more", SL_DTYPE_U8, 0, NULL, x), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "maximum of 64"));
    /* owned scratch memory */
    sl_msg_init(&m, SL_MSG_BACKWARD, 0, 0, 0);
    float *g = sl_msg_alloc(&m, 4 * sizeof(float));
    assert_non_null(g);
    assert_int_equal(sl_msg_add(&m, "grad", SL_DTYPE_F32, 1, &(uint32_t){4}, g), 0);
    sl_msg_release(&m); /* ASan checks the free */
    assert_int_equal(m.m_n_owned, 0);
    assert_int_equal(m.m_n_tensors, 0);
}

static void test_get_names_both_shapes(void **state) {
    (void)state;
    size_t n;
    uint8_t *b = encode_sample(&n);
    sl_msg d;
    assert_int_equal(sl_msg_decode(&d, b, n, MAX_BYTES, NULL), 0);
    const sl_tensor *t;
    assert_int_equal(sl_msg_get(&d, "act", SL_DTYPE_F32, 3, (const int64_t[]){-1, 3, -1}, &t), 0);
    assert_int_equal(sl_msg_get(&d, "act", SL_DTYPE_F32, 3, NULL, &t), 0);
    assert_int_equal(sl_msg_get(&d, "loss", SL_DTYPE_F32, 0, NULL, &t), 0);
    assert_true(*(const float *)t->t_data == 2.5f);
    assert_int_equal(sl_msg_get(&d, "act", SL_DTYPE_F32, 3, (const int64_t[]){2, 3, 8}, &t), SL_EFORMAT);
    assert_null(t);
    assert_string_equal(sl_last_error(), "FORWARD from edge 1 (seq 12, round 3, step 2, stream 1): tensor 'act' is "
                                         "F32 (2,3,4), expected F32 (2,3,8)");
    assert_int_equal(sl_msg_get(&d, "targets", SL_DTYPE_F32, 2, (const int64_t[]){-1, 3}, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "tensor 'targets' is I32 (2,3), expected F32 (*,3)"));
    assert_int_equal(sl_msg_get(&d, "mask", SL_DTYPE_U8, 1, NULL, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "is U8 (2,3), expected U8 (*)"));
    assert_int_equal(sl_msg_get(&d, "grad", SL_DTYPE_F32, 3, NULL, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "no tensor 'grad', expected F32 (*,*,*)"));
    assert_null(sl_msg_find(&d, "grad"));
    assert_non_null(sl_msg_find(&d, "counts"));
    sl_free(b);
}

static void test_error_message(void **state) {
    (void)state;
    sl_msg m, d;
    assert_int_equal(sl_msg_init_error(&m, 1, 2, 3, "bad \x01 thing"), 0);
    sl_msg_set_sender(&m, SL_TIER_CLOUD, 0, 9);
    uint8_t *b;
    size_t n;
    assert_int_equal(sl_msg_encode(&m, &b, &n), 0);
    assert_int_equal(sl_msg_decode(&d, b, n, MAX_BYTES, NULL), 0);
    assert_int_equal(d.m_header.h_type, SL_MSG_ERROR);
    char text[64];
    sl_msg_error_text(&d, text, sizeof(text));
    assert_string_equal(text, "bad ? thing");
    sl_msg_error_text(&d, text, 4);
    assert_string_equal(text, "bad");
    sl_msg_init(&m, SL_MSG_ERROR, 0, 0, 0);
    sl_msg_error_text(&m, text, sizeof(text));
    assert_string_equal(text, "(no message)");
    sl_free(b);
}

static void test_names_and_reply_table(void **state) {
    (void)state;
    for (uint16_t t = 1; t < SL_MSG_TYPE_END; t++) {
        assert_non_null(sl_msg_type_name(t));
        assert_true(sl_msg_reply_allowed(t, SL_MSG_ERROR) || sl_msg_reply_allowed(t, SL_MSG_ACK) == 0);
    }
    assert_null(sl_msg_type_name(0));
    assert_null(sl_msg_type_name(SL_MSG_TYPE_END));
    assert_true(sl_msg_reply_allowed(SL_MSG_FORWARD, SL_MSG_BACKWARD));
    assert_false(sl_msg_reply_allowed(SL_MSG_FORWARD, SL_MSG_ACK));
    assert_true(sl_msg_reply_allowed(SL_MSG_ROUND_POLL, SL_MSG_ROUND_WAIT));
    assert_false(sl_msg_reply_allowed(SL_MSG_BACKWARD, SL_MSG_ERROR)); /* a reply is not a request */
    assert_int_equal(sl_dtype_size(SL_DTYPE_BF16), 2);
    assert_int_equal(sl_dtype_size(SL_DTYPE_U64), 8);
    assert_int_equal(sl_dtype_size(0), 0);
    assert_string_equal(sl_tier_name(SL_TIER_EDGE), "edge");
}

/* ---------------------------------------------------------------- fuzz */

static void test_random_mutations(void **state) {
    (void)state;
    size_t n;
    uint8_t *base = encode_sample(&n);
    const size_t cap = n + 64;
    uint8_t *b = sl_alloc(cap);
    sl_rng r;
    sl_rng_init(&r, 2024, 7);
    int decoded = 0, rejected = 0;
    const uint64_t interesting[] = {0, 1, 4, 63, 64, 65, 255, 0x7fffffff, 0xffffffff, UINT64_MAX};
    for (int it = 0; it < FUZZ_ITERATIONS; it++) {
        memcpy(b, base, n);
        size_t len = n;
        int edits = 1 + (int)(sl_rng_u64(&r) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(sl_rng_u64(&r) % len);
            switch (sl_rng_u64(&r) % 6) {
            case 0: b[at] ^= (uint8_t)(1u << (sl_rng_u64(&r) % 8)); break;
            case 1: b[at] = (uint8_t)sl_rng_u64(&r); break;
            case 2: { /* an interesting number, 1, 2, 4 or 8 bytes wide */
                int w = 1 << (sl_rng_u64(&r) % 4);
                if (at + (size_t)w <= len) put_le(b + at, interesting[sl_rng_u64(&r) % 10], w);
                break;
            }
            case 3: len = at; break; /* truncate */
            case 4: { /* append random bytes */
                size_t more = (size_t)(sl_rng_u64(&r) % 16);
                if (len + more > cap) more = cap - len;
                for (size_t k = 0; k < more; k++) b[len + k] = (uint8_t)sl_rng_u64(&r);
                len += more;
                break;
            }
            default: /* delete a byte in the middle */
                memmove(b + at, b + at + 1, len - at - 1);
                len--;
                break;
            }
            if (len == 0) len = 1;
        }
        /* half the time make the outer checks pass, so the tensor parser is exercised */
        if (len >= SL_MSG_HEADER_BYTES && (sl_rng_u64(&r) & 1)) fix_header(b, len);
        sl_msg d;
        sl_clear_error();
        int rc = sl_msg_decode(&d, b, len, MAX_BYTES, NULL);
        if (rc == 0) {
            uint8_t *again;
            size_t again_n;
            assert_int_equal(sl_msg_encode(&d, &again, &again_n), 0);
            assert_int_equal(again_n, len);
            assert_memory_equal(again, b, len);
            sl_free(again);
            decoded++;
        } else {
            assert_int_equal(rc, SL_EFORMAT);
            assert_true(strlen(sl_last_error()) > 10);
            rejected++;
        }
    }
    /* both outcomes occur, or the test exercised less than it claims */
    assert_true(decoded > 100);
    assert_true(rejected > 1000);
    sl_free(b);
    sl_free(base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_round_trip_every_dtype_and_rank),
        cmocka_unit_test(test_decoded_points_into_buffer),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_header_malformations),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_payload_malformations),
        cmocka_unit_test(test_compressed_dtypes),
        cmocka_unit_test(test_builder_errors),
        cmocka_unit_test(test_get_names_both_shapes),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_names_and_reply_table),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
