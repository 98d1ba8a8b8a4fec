/* test_safetensors.c: the safetensors reader and writer (src/util/safetensors.c) against
 * (1) themselves — a round trip of every dtype, scalars, empty tensors and awkward
 * metadata; (2) a file written by Python (tests/reference/st_fixture.safetensors, made by
 * make_st_fixture.py) with exact expected values; (3) malformed files, each of which must
 * be rejected with a message naming the tensor or field at fault; (4) the engine's
 * reference files (make_reference.py) read back with every promised tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/common.h"
#include "util/safetensors.h"

static char tmp_dir[] = "/tmp/sl_test_safetensors_XXXXXX";

static int setup_dir(void **state) {
    (void)state;
    return mkdtemp(tmp_dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void tmp_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", tmp_dir, name); }

/* ------------------------------------------------------------------------------------ */

static void test_round_trip(void **state) {
    (void)state;
    const float w[6] = {1.0f, -2.5f, 3.25f, 1e-7f, -0.0f, 65504.0f};
    const int32_t ids[4] = {-7, 0, 1, 2147483647};
    const uint8_t mask[5] = {1, 0, 255, 3, 9}; /* odd size: later tensors start unaligned */
    const int64_t big[1] = {-(INT64_C(1) << 50)};
    const uint16_t half[3] = {0x3c00, 0xb800, 0x0001};   /* 1.0, -0.5, 2^-24 */
    const uint16_t bhalf[3] = {0x3f80, 0x4049, 0xc000}; /* 1.0, 3.140625, -2.0 */
    const int64_t s_w[2] = {2, 3}, s_ids[1] = {4}, s_mask[1] = {5}, s_h[1] = {3}, s_empty[2] = {0, 4};

    sl_st_writer *wr;
    assert_int_equal(sl_st_writer_create(&wr), 0);
    assert_int_equal(sl_st_writer_add(wr, "model.w", SL_ST_F32, 2, s_w, w), 0);
    assert_int_equal(sl_st_writer_add(wr, "ids", SL_ST_I32, 1, s_ids, ids), 0);
    assert_int_equal(sl_st_writer_add(wr, "mask", SL_ST_U8, 1, s_mask, mask), 0);
    assert_int_equal(sl_st_writer_add(wr, "big", SL_ST_I64, 0, NULL, big), 0);
    assert_int_equal(sl_st_writer_add(wr, "half", SL_ST_F16, 1, s_h, half), 0);
    assert_int_equal(sl_st_writer_add(wr, "bf \"quoted\"", SL_ST_BF16, 1, s_h, bhalf), 0);
    assert_int_equal(sl_st_writer_add(wr, "empty", SL_ST_F32, 2, s_empty, NULL), 0);
    assert_int_equal(sl_st_writer_set_metadata(wr, "format", "pt"), 0);
    assert_int_equal(sl_st_writer_set_metadata(wr, "odd", "tab\there \"q\" back\\slash caf\xc3\xa9\n"), 0);
    assert_int_equal(sl_st_writer_set_metadata(wr, "format", "splitllm"), 0); /* replaces */
    assert_int_not_equal(sl_st_writer_add(wr, "__metadata__", SL_ST_F32, 1, s_ids, w), 0);
    char path[256];
    tmp_path(path, sizeof(path), "round.safetensors");
    assert_int_equal(sl_st_writer_write(wr, path), 0);

    /* the header length is a multiple of 8 and the data area is exactly the tensors */
    char *raw;
    size_t raw_bytes;
    assert_int_equal(sl_read_file(path, &raw, &raw_bytes), 0);
    uint64_t n;
    memcpy(&n, raw, 8);
    assert_int_equal(n % 8, 0);
    size_t data_bytes = sizeof(w) + sizeof(ids) + sizeof(mask) + sizeof(big) + sizeof(half) + sizeof(bhalf);
    assert_int_equal(raw_bytes, 8 + n + data_bytes);
    assert_int_equal(raw[8], '{');
    sl_free(raw);

    sl_st_reader *r;
    assert_int_equal(sl_st_open(&r, path), 0);
    assert_int_equal(sl_st_count(r), 7);
    const char *order[7] = {"model.w", "ids", "mask", "big", "half", "bf \"quoted\"", "empty"};
    size_t expect_offset = 8 + n;
    for (size_t i = 0; i < 7; i++) {
        const sl_st_tensor *t = sl_st_tensor_at(r, i);
        assert_string_equal(t->t_name, order[i]);
        assert_int_equal(t->t_file_offset, expect_offset); /* in the order added, no gaps */
        expect_offset += t->t_bytes;
    }
    assert_null(sl_st_tensor_at(r, 7));

    const sl_st_tensor *t;
    assert_int_equal(sl_st_get(r, "model.w", SL_ST_F32, 2, s_w, &t), 0);
    assert_int_equal(t->t_numel, 6);
    assert_true(t->t_aligned);
    assert_memory_equal(t->t_data, w, sizeof(w));
    assert_int_equal(sl_st_get(r, "ids", SL_ST_I32, 1, s_ids, &t), 0);
    assert_memory_equal(t->t_data, ids, sizeof(ids));
    assert_int_equal(sl_st_get(r, "mask", SL_ST_U8, 1, s_mask, &t), 0);
    assert_memory_equal(t->t_data, mask, sizeof(mask));
    assert_int_equal(sl_st_get(r, "big", SL_ST_I64, 0, NULL, &t), 0);
    assert_int_equal(t->t_ndim, 0);
    assert_int_equal(t->t_numel, 1);
    assert_memory_equal(t->t_data, big, sizeof(big));
    assert_false(t->t_aligned); /* after 24 + 16 + 5 bytes */

    float f[3];
    assert_int_equal(sl_st_get(r, "half", SL_ST_F16, 1, s_h, &t), 0);
    assert_int_equal(sl_st_to_f32(t, f), 0);
    assert_true(f[0] == 1.0f && f[1] == -0.5f && f[2] == 0x1p-24f);
    assert_int_equal(sl_st_get(r, "bf \"quoted\"", SL_ST_BF16, 1, s_h, &t), 0);
    assert_int_equal(sl_st_to_f32(t, f), 0);
    assert_true(f[0] == 1.0f && f[1] == 3.140625f && f[2] == -2.0f);
    assert_int_equal(sl_st_get(r, "empty", SL_ST_F32, 2, s_empty, &t), 0);
    assert_int_equal(t->t_numel, 0);
    assert_int_equal(t->t_bytes, 0);

    /* checked lookups name what differs; plain lookups of absent names are quiet */
    assert_int_equal(sl_st_get(r, "ids", SL_ST_F32, 1, s_ids, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "'ids'"));
    assert_non_null(strstr(sl_last_error(), "I32"));
    assert_int_equal(sl_st_get(r, "model.w", SL_ST_F32, 2, s_empty, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "[2, 3]"));
    assert_int_equal(sl_st_get(r, "nope", SL_ST_F32, 0, NULL, &t), SL_EFORMAT);
    assert_non_null(strstr(sl_last_error(), "'nope' is missing"));
    assert_null(sl_st_lookup(r, "nope"));
    assert_int_equal(sl_st_to_f32(sl_st_lookup(r, "ids"), f), SL_EINVAL);

    assert_int_equal(sl_st_metadata_count(r), 2);
    assert_string_equal(sl_st_metadata(r, "format"), "splitllm");
    assert_string_equal(sl_st_metadata(r, "odd"), "tab\there \"q\" back\\slash caf\xc3\xa9\n");
    assert_null(sl_st_metadata(r, "missing"));
    const char *k, *v;
    sl_st_metadata_at(r, 1, &k, &v);
    assert_string_equal(k, "odd");
    sl_st_close(r);

    /* a duplicate name is refused at write time, and nothing is written */
    assert_int_equal(sl_st_writer_add(wr, "ids", SL_ST_I32, 1, s_ids, ids), 0);
    char path2[256];
    tmp_path(path2, sizeof(path2), "dup.safetensors");
    assert_int_equal(sl_st_writer_write(wr, path2), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "'ids'"));
    assert_int_not_equal(access(path2, F_OK), 0);
    sl_st_writer_free(wr);
}

static void test_empty_file_of_tensors(void **state) {
    (void)state;
    sl_st_writer *wr;
    assert_int_equal(sl_st_writer_create(&wr), 0);
    char path[256];
    tmp_path(path, sizeof(path), "none.safetensors");
    assert_int_equal(sl_st_writer_write(wr, path), 0);
    sl_st_writer_free(wr);
    sl_st_reader *r;
    assert_int_equal(sl_st_open(&r, path), 0);
    assert_int_equal(sl_st_count(r), 0);
    assert_int_equal(sl_st_metadata_count(r), 0);
    sl_st_close(r);
}

/* ------------------------------------------------------------------------------------ */

static void test_python_written(void **state) {
    (void)state;
    const char *src = getenv("SPLITLLM_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/reference/st_fixture.safetensors", src ? src : SPLITLLM_SOURCE_DIR);
    sl_st_reader *r;
    int rc = sl_st_open(&r, path);
    if (rc != 0) fail_msg("%s", sl_last_error());
    assert_int_equal(sl_st_count(r), 8);
    const char *header_order[8] = {"weight", "ids", "big", "bytes", "half", "bf", "scalar", "empty"};
    for (size_t i = 0; i < 8; i++) assert_string_equal(sl_st_tensor_at(r, i)->t_name, header_order[i]);

    const sl_st_tensor *t;
    const int64_t s_w[2] = {2, 3};
    assert_int_equal(sl_st_get(r, "weight", SL_ST_F32, 2, s_w, &t), 0);
    assert_false(t->t_aligned); /* the fixture puts it at data offset 9 */
    float w[6];
    assert_int_equal(sl_st_to_f32(t, w), 0);
    const float w_expect[6] = {0.5f, -1.25f, 3.0f, 1e-3f, -7.5f, 100.0f};
    assert_memory_equal(w, w_expect, sizeof(w));

    const int64_t s4[1] = {4}, s2[1] = {2}, s3[1] = {3};
    int32_t ids[4];
    assert_int_equal(sl_st_get(r, "ids", SL_ST_I32, 1, s4, &t), 0);
    memcpy(ids, t->t_data, sizeof(ids));
    assert_int_equal(ids[0], -1);
    assert_int_equal(ids[1], 0);
    assert_int_equal(ids[2], 7);
    assert_int_equal(ids[3], 2147483647);

    int64_t big[2];
    assert_int_equal(sl_st_get(r, "big", SL_ST_I64, 1, s2, &t), 0);
    memcpy(big, t->t_data, sizeof(big));
    assert_true(big[0] == -(INT64_C(1) << 40));
    assert_true(big[1] == (INT64_C(1) << 62));

    assert_int_equal(sl_st_get(r, "bytes", SL_ST_U8, 1, s3, &t), 0);
    const uint8_t *u = t->t_data;
    assert_true(u[0] == 0 && u[1] == 128 && u[2] == 255);
    assert_int_equal(t->t_file_offset, 8 + 0x260); /* first in the data area */

    float h[4];
    assert_int_equal(sl_st_get(r, "half", SL_ST_F16, 1, s4, &t), 0);
    assert_int_equal(sl_st_to_f32(t, h), 0);
    assert_true(h[0] == 1.0f && h[1] == -0.5f && h[2] == 65504.0f && h[3] == 0x1p-24f);

    assert_int_equal(sl_st_get(r, "bf", SL_ST_BF16, 1, s3, &t), 0);
    assert_int_equal(sl_st_to_f32(t, h), 0);
    assert_true(h[0] == 1.0f && h[1] == 3.140625f && h[2] == -2.0f);

    assert_int_equal(sl_st_get(r, "scalar", SL_ST_F32, 0, NULL, &t), 0);
    assert_int_equal(sl_st_to_f32(t, h), 0);
    assert_true(h[0] == 42.0f);

    const int64_t s_empty[2] = {0, 4};
    assert_int_equal(sl_st_get(r, "empty", SL_ST_F32, 2, s_empty, &t), 0);

    assert_string_equal(sl_st_metadata(r, "format"), "pt");
    assert_string_equal(sl_st_metadata(r, "note"), "caf\xc3\xa9 \"quoted\" \\ back");
    sl_st_close(r);
}

/* The engine's PyTorch reference files (make_reference.py) read back through this reader:
 * every tensor the README promises is there with the shape the metadata implies. */
static void check_reference_file(const char *name, int64_t vocab, int64_t C, int64_t KV, int64_t H) {
    const char *src = getenv("SPLITLLM_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/tests/reference/%s", src ? src : SPLITLLM_SOURCE_DIR, name);
    sl_st_reader *r;
    if (sl_st_open(&r, path) != 0) fail_msg("%s", sl_last_error());
    const int64_t bt[2] = {2, 8}, btv[3] = {2, 8, vocab}, one[1] = {1}, three[1] = {3};
    const sl_st_tensor *t;
    assert_int_equal(sl_st_get(r, "tokens", SL_ST_I32, 2, bt, &t), 0);
    for (size_t i = 0; i < t->t_numel; i++) {
        int32_t id;
        memcpy(&id, (const char *)t->t_data + 4 * i, 4);
        assert_true(id >= 0 && id < vocab);
    }
    assert_int_equal(sl_st_get(r, "targets", SL_ST_I32, 2, bt, &t), 0);
    assert_int_equal(sl_st_get(r, "mask", SL_ST_U8, 2, bt, &t), 0);
    assert_int_equal(sl_st_get(r, "logits", SL_ST_F32, 3, btv, &t), 0);
    assert_int_equal(sl_st_get(r, "logits_base", SL_ST_F32, 3, btv, &t), 0);
    float loss, losses[3];
    assert_int_equal(sl_st_get(r, "loss", SL_ST_F32, 1, one, &t), 0);
    assert_int_equal(sl_st_to_f32(t, &loss), 0);
    assert_int_equal(sl_st_get(r, "losses", SL_ST_F32, 1, three, &t), 0);
    assert_int_equal(sl_st_to_f32(t, losses), 0);
    assert_true(loss == losses[0] && losses[2] < losses[1] && losses[1] < losses[0]);

    const char *targets = sl_st_metadata(r, "targets");
    assert_non_null(targets);
    assert_int_equal(atoi(sl_st_metadata(r, "rank")), 4);
    assert_int_equal(atoi(sl_st_metadata(r, "vocab")), (int)vocab);
    const char *keys[] = {"alpha", "lr", "beta1", "beta2", "eps", "weight_decay", "arch", "steps"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) assert_non_null(sl_st_metadata(r, keys[i]));
    size_t count = 0;
    for (int l = 0; l < 2; l++) {
        char list[128];
        snprintf(list, sizeof(list), "%s", targets);
        for (char *tg = strtok(list, ","); tg != NULL; tg = strtok(NULL, ",")) {
            int64_t in = strcmp(tg, "down") == 0 ? H : C;
            int64_t out = strcmp(tg, "down") == 0 ? C
                          : (strcmp(tg, "k") == 0 || strcmp(tg, "v") == 0) ? KV
                          : (strcmp(tg, "up") == 0 || strcmp(tg, "gate") == 0) ? H
                                                                               : C;
            const int64_t sa[2] = {4, in}, sb[2] = {out, 4};
            const char *kinds[4] = {"lora", "grad", "step1", "step3"};
            for (int k = 0; k < 4; k++) {
                char nm[64];
                snprintf(nm, sizeof(nm), "%s.%d.%s.A", kinds[k], l, tg);
                if (sl_st_get(r, nm, SL_ST_F32, 2, sa, &t) != 0) fail_msg("%s", sl_last_error());
                snprintf(nm, sizeof(nm), "%s.%d.%s.B", kinds[k], l, tg);
                if (sl_st_get(r, nm, SL_ST_F32, 2, sb, &t) != 0) fail_msg("%s", sl_last_error());
                count += 2;
            }
        }
    }
    assert_int_equal(sl_st_count(r), 7 + count);
    /* the engine's test reads these through typed pointers: every one must be aligned */
    for (size_t i = 0; i < sl_st_count(r); i++) assert_true(sl_st_tensor_at(r, i)->t_aligned);
    sl_st_close(r);
}

static void test_reference_files(void **state) {
    (void)state;
    check_reference_file("gpt2_tiny_ref.safetensors", 61, 32, 32, 128);
    check_reference_file("llama_tiny_ref.safetensors", 67, 32, 16, 48);
    check_reference_file("llama_tiny_tied_ref.safetensors", 67, 32, 16, 48);
}

/* ------------------------------------------------------------------------------------ */
/* Malformed files. Each is an 8-byte length, a header and data_bytes bytes of data; the
 * length is the header's own unless declared_length is nonzero. */

static void write_raw(const char *name, const char *header, size_t data_bytes, uint64_t declared_length,
                      char *path_out) {
    tmp_path(path_out, 256, name);
    size_t hn = strlen(header);
    uint64_t n = declared_length ? declared_length : hn;
    size_t total = 8 + hn + data_bytes;
    uint8_t *buf = sl_alloc(total);
    assert_non_null(buf);
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hn);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + hn + i] = (uint8_t)i;
    assert_int_equal(sl_write_file_atomic(path_out, buf, total), 0);
    sl_free(buf);
}

/* Opens the file, expects SL_EFORMAT and every needle in the message. */
static void expect_rejected(const char *path, const char *needle1, const char *needle2) {
    sl_st_reader *r = (sl_st_reader *)1;
    int rc = sl_st_open(&r, path);
    if (rc != SL_EFORMAT) fail_msg("%s: expected SL_EFORMAT, got %d (%s)", path, rc, sl_last_error());
    assert_null(r);
    const char *msg = sl_last_error();
    print_message("  rejected: %s\n", msg);
    assert_non_null(strstr(msg, path));
    if (strstr(msg, needle1) == NULL) fail_msg("message lacks \"%s\": %s", needle1, msg);
    if (needle2 && strstr(msg, needle2) == NULL) fail_msg("message lacks \"%s\": %s", needle2, msg);
}

#define GOOD_HEADER "{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"

static void test_good_raw_file_is_accepted(void **state) {
    (void)state;
    char path[256];
    write_raw("good.safetensors", GOOD_HEADER, 24, 0, path); /* header length not a multiple of 8 */
    sl_st_reader *r;
    assert_int_equal(sl_st_open(&r, path), 0);
    assert_int_equal(sl_st_count(r), 1);
    sl_st_close(r);
}

static void test_truncated(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof(path), "short.safetensors");
    assert_int_equal(sl_write_file_atomic(path, "\x10\x00\x00", 3), 0);
    expect_rejected(path, "header length", "3 bytes");
    write_raw("cut.safetensors", GOOD_HEADER, 20, 0, path); /* data cut 4 bytes short */
    expect_rejected(path, "'weight'", "data_offsets");
}

static void test_header_length_beyond_file(void **state) {
    (void)state;
    char path[256];
    write_raw("long.safetensors", GOOD_HEADER, 24, 1000, path);
    expect_rejected(path, "header length", "1000");
    write_raw("huge.safetensors", GOOD_HEADER, 24, UINT64_MAX, path);
    expect_rejected(path, "header length", NULL);
    write_raw("zero.safetensors", GOOD_HEADER, 24, 0, path);
    uint8_t zero[8] = {0};
    sl_mapped_file f;
    assert_int_equal(sl_map_file(&f, path), 0);
    uint8_t *copy = sl_alloc(f.m_bytes);
    memcpy(copy, f.m_data, f.m_bytes);
    memcpy(copy, zero, 8);
    assert_int_equal(sl_write_file_atomic(path, copy, f.m_bytes), 0);
    sl_free(copy);
    sl_unmap_file(&f);
    expect_rejected(path, "header length", NULL);
}

static void test_bad_json(void **state) {
    (void)state;
    char path[256];
    write_raw("json1.safetensors", "{\"weight\":{\"dtype\":\"F32\",", 0, 0, path);
    expect_rejected(path, "JSON", "offset");
    write_raw("json2.safetensors", "[1, 2, 3]", 0, 0, path);
    expect_rejected(path, "JSON", "expected an object");
    write_raw("json3.safetensors", "{} x", 0, 0, path);
    expect_rejected(path, "JSON", "after the object");
    write_raw("json4.safetensors", "{\"weight\": 5}", 0, 0, path);
    expect_rejected(path, "'weight'", "expected an object");
    write_raw("json5.safetensors", "{\"weight\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, path);
    expect_rejected(path, "'weight'", "dtype");
    write_raw("json6.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0, path);
    expect_rejected(path, "'weight'", "shape");
    write_raw("json7.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0, path);
    expect_rejected(path, "'weight'", "data_offsets");
}

static void test_offsets_past_end(void **state) {
    (void)state;
    char path[256];
    write_raw("past.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
              "\"weight\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[16,4016]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "data_offsets");
    write_raw("backwards.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "data_offsets");
    write_raw("negoff.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "data_offsets");
}

static void test_shape_size_mismatch(void **state) {
    (void)state;
    char path[256];
    write_raw("mismatch.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "shape [2, 3]");
    write_raw("negdim.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "shape[1]");
    write_raw("fracdim.safetensors", "{\"weight\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,6]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "shape[0]");
}

static void test_unknown_dtype(void **state) {
    (void)state;
    char path[256];
    write_raw("dtype.safetensors", "{\"weight\":{\"dtype\":\"F8_E9M9\",\"shape\":[2],\"data_offsets\":[0,2]}}", 24, 0,
              path);
    expect_rejected(path, "'weight'", "F8_E9M9");
    write_raw("dtype2.safetensors", "{\"weight\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "dtype");
}

static void test_shape_overflow(void **state) {
    (void)state;
    char path[256];
    /* 2^32 * 2^32 overflows 64 bits */
    write_raw("ovf1.safetensors",
              "{\"weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "shape");
    /* 2^62 elements fit, 2^62 * 4 bytes do not */
    write_raw("ovf2.safetensors",
              "{\"weight\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "shape");
    /* a dimension beyond 2^53 cannot even be represented exactly */
    write_raw("ovf3.safetensors",
              "{\"weight\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "shape[0]");
    write_raw("ovf4.safetensors",
              "{\"weight\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 24, 0, path);
    expect_rejected(path, "'weight'", "dimensions");
}

static void test_bad_metadata_and_duplicates(void **state) {
    (void)state;
    char path[256];
    write_raw("meta.safetensors", "{\"__metadata__\":{\"rank\":4}}", 0, 0, path);
    expect_rejected(path, "__metadata__.rank", "string");
    write_raw("meta2.safetensors", "{\"__metadata__\":[]}", 0, 0, path);
    expect_rejected(path, "__metadata__", "object");
    write_raw("dup.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, 0, path);
    expect_rejected(path, "'w'", "twice");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_file_of_tensors),
        cmocka_unit_test(test_python_written),
        cmocka_unit_test(test_reference_files),
        cmocka_unit_test(test_good_raw_file_is_accepted),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_length_beyond_file),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_offsets_past_end),
        cmocka_unit_test(test_shape_size_mismatch),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_shape_overflow),
        cmocka_unit_test(test_bad_metadata_and_duplicates),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
