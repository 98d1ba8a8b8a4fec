/* test_shard.c: the shard file — exact bytes of a small shard written field by field
 * (checked against a hand-computed layout), round trip, and every malformed file a reader
 * must refuse with a message naming the file and the offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "data/shard.h"
#include "util/common.h"
#include "util/sha256.h"

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sl_test_shard_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

static void fake_hash(uint8_t h[SL_SHA256_BYTES], uint8_t base) {
    for (int i = 0; i < SL_SHA256_BYTES; i++) h[i] = (uint8_t)(base + i);
}

/* Two samples: {1, 2, 3} (mask 1 1 1 -> stored 0 1 1) and {4, 5} (mask 0 1 -> 0 1). */
static void make_small(sl_shard *s) {
    uint8_t h[SL_SHA256_BYTES];
    fake_hash(h, 10);
    assert_int_equal(sl_shard_init(s, h, 7, 9), 0);
    int32_t a[] = {1, 2, 3}, b[] = {4, 5};
    uint8_t ma[] = {1, 1, 1}, mb[] = {0, 1};
    assert_int_equal(sl_shard_append(s, a, ma, 3), 0);
    assert_int_equal(sl_shard_append(s, b, mb, 2), 0);
}

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static void test_exact_bytes(void **state) {
    (void)state;
    sl_shard s;
    make_small(&s);
    assert_int_equal(sl_shard_mask_tokens(&s), 3);
    char p[128];
    path_of(p, sizeof(p), "small.shard");
    assert_int_equal(sl_shard_write(&s, p), 0);
    char *buf;
    size_t n;
    assert_int_equal(sl_read_file(p, &buf, &n), 0);
    /* 72 header + 3 offsets * 8 + 5 tokens * 4 + 5 mask + 32 trailer */
    assert_int_equal(n, 72 + 24 + 20 + 5 + 32);
    const uint8_t *b = (const uint8_t *)buf;
    assert_memory_equal(b, "SLSHARD\0", 8);
    const uint8_t version_le[4] = {1, 0, 0, 0}, header_le[4] = {72, 0, 0, 0}, vocab_le[4] = {7, 0, 0, 0},
                  max_le[4] = {9, 0, 0, 0};
    assert_memory_equal(b + 8, version_le, 4);
    assert_memory_equal(b + 12, header_le, 4);
    for (int i = 0; i < 32; i++) assert_int_equal(b[16 + i], 10 + i);
    assert_memory_equal(b + 48, vocab_le, 4);
    assert_memory_equal(b + 52, max_le, 4);
    const uint8_t counts[16] = {2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(b + 56, counts, 16);
    const uint8_t offsets[24] = {0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(b + 72, offsets, 24);
    const uint8_t tokens[20] = {1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0};
    assert_memory_equal(b + 96, tokens, 20);
    const uint8_t mask[5] = {0, 1, 1, 0, 1};
    assert_memory_equal(b + 116, mask, 5);
    uint8_t digest[32];
    sl_sha256(b, 121, digest);
    assert_memory_equal(b + 121, digest, 32);
    sl_free(buf);
    sl_shard_free(&s);
}

static void test_round_trip(void **state) {
    (void)state;
    sl_shard s, r;
    make_small(&s);
    char p[128];
    path_of(p, sizeof(p), "rt.shard");
    assert_int_equal(sl_shard_write(&s, p), 0);
    assert_int_equal(sl_shard_read(&r, p), 0);
    assert_int_equal(r.sh_n_samples, 2);
    assert_int_equal(r.sh_n_tokens, 5);
    assert_int_equal(r.sh_vocab_size, 7);
    assert_int_equal(r.sh_max_sample_tokens, 9);
    assert_memory_equal(r.sh_tokenizer_sha256, s.sh_tokenizer_sha256, 32);
    assert_memory_equal(r.sh_offsets, s.sh_offsets, 3 * sizeof(uint64_t));
    assert_memory_equal(r.sh_tokens, s.sh_tokens, 5 * sizeof(int32_t));
    assert_memory_equal(r.sh_mask, s.sh_mask, 5);
    assert_int_equal(sl_shard_sample_len(&r, 1), 2);
    assert_string_equal(r.sh_path, p);
    /* no temp files left beside it */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "test $(ls %s | grep -c tmp) -eq 0", dir);
    assert_int_equal(system(cmd), 0);
    sl_shard_free(&r);
    sl_shard_free(&s);
}

static void test_empty_shard_round_trip(void **state) {
    (void)state;
    uint8_t h[32];
    fake_hash(h, 0);
    sl_shard s, r;
    assert_int_equal(sl_shard_init(&s, h, 512, 0), 0);
    char p[128];
    path_of(p, sizeof(p), "empty.shard");
    assert_int_equal(sl_shard_write(&s, p), 0);
    assert_int_equal(sl_shard_read(&r, p), 0);
    assert_int_equal(r.sh_n_samples, 0);
    assert_int_equal(r.sh_n_tokens, 0);
    sl_shard_free(&r);
    sl_shard_free(&s);
}

static void test_append_rejects(void **state) {
    (void)state;
    sl_shard s;
    make_small(&s);
    int32_t bad[] = {1, 7};
    uint8_t m[] = {1, 1}, m2[] = {1, 2};
    int32_t ok[] = {1, 2};
    assert_int_equal(sl_shard_append(&s, bad, m, 2), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "is 7, expected 0..6"));
    assert_int_equal(sl_shard_append(&s, ok, m2, 2), SL_EINVAL);
    assert_int_equal(sl_shard_append(&s, ok, m, 0), SL_EINVAL);
    assert_int_equal(s.sh_n_samples, 2);
    sl_shard_free(&s);
}

/* Writes the small shard's bytes changed by edit, the trailer recomputed when rehash. */
static void write_edited(const char *p, void (*edit)(uint8_t *, size_t *), int rehash) {
    sl_shard s;
    make_small(&s);
    assert_int_equal(sl_shard_write(&s, p), 0);
    sl_shard_free(&s);
    char *buf;
    size_t n;
    assert_int_equal(sl_read_file(p, &buf, &n), 0);
    edit((uint8_t *)buf, &n);
    if (rehash) sl_sha256(buf, n - 32, (uint8_t *)buf + n - 32);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    sl_free(buf);
}

static void edit_magic(uint8_t *b, size_t *n) { (void)n, b[0] = 'X'; }
static void edit_version(uint8_t *b, size_t *n) { (void)n, b[8] = 2; }
static void edit_truncate(uint8_t *b, size_t *n) { (void)b, *n -= 1; }
static void edit_flip_token(uint8_t *b, size_t *n) { (void)n, b[96] ^= 1; }
static void edit_token_range(uint8_t *b, size_t *n) { (void)n, b[100] = 7; } /* token 1: 2 -> 7, vocab 7 */
static void edit_offsets(uint8_t *b, size_t *n) { (void)n, b[80] = 6; }      /* offset 1: 3 -> 6 > 5 */
static void edit_mask(uint8_t *b, size_t *n) { (void)n, b[117] = 2; }

static void expect_read_error(void (*edit)(uint8_t *, size_t *), int rehash, const char *want) {
    char p[128];
    path_of(p, sizeof(p), "bad.shard");
    write_edited(p, edit, rehash);
    sl_shard r;
    assert_int_equal(sl_shard_read(&r, p), SL_EFORMAT);
    if (strstr(sl_last_error(), want) == NULL || strstr(sl_last_error(), p) == NULL)
        fail_msg("message '%s' lacks '%s' or the path", sl_last_error(), want);
    assert_null(r.sh_tokens);
}

static void test_malformed(void **state) {
    (void)state;
    expect_read_error(edit_magic, 0, "offset 0: expected magic");
    expect_read_error(edit_version, 0, "offset 8: expected shard version 1, found 2");
    expect_read_error(edit_truncate, 0, "need 153 bytes, the file has 152");
    expect_read_error(edit_flip_token, 0, "offset 121: trailer SHA-256 does not match");
    expect_read_error(edit_token_range, 1, "offset 100: token 1 is 7, expected 0..6");
    expect_read_error(edit_offsets, 1, "offset 80: sample offset 1 is 6");
    expect_read_error(edit_mask, 1, "offset 117: mask of token 1 is 2");
    char p[128];
    path_of(p, sizeof(p), "missing.shard");
    sl_shard r;
    assert_int_equal(sl_shard_read(&r, p), SL_EIO);
    assert_non_null(strstr(sl_last_error(), "missing.shard"));
}

static void test_tokenizer_check(void **state) {
    (void)state;
    sl_shard s;
    make_small(&s);
    uint8_t same[32], other[32];
    fake_hash(same, 10);
    fake_hash(other, 11);
    assert_int_equal(sl_shard_check_tokenizer(&s, same, "tok.bin"), 0);
    assert_int_equal(sl_shard_check_tokenizer(&s, other, "tok.bin"), SL_EFORMAT);
    char want[65], got[65];
    sl_sha256_hex(same, want);
    sl_sha256_hex(other, got);
    const char *msg = sl_last_error();
    assert_non_null(strstr(msg, want));
    assert_non_null(strstr(msg, got));
    assert_non_null(strstr(msg, "tok.bin"));
    sl_shard_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),     cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_shard_round_trip), cmocka_unit_test(test_append_rejects),
        cmocka_unit_test(test_malformed),       cmocka_unit_test(test_tokenizer_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
