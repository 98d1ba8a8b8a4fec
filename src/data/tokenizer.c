/* tokenizer.c: the common half of the tokenizers — finding out which kind a path holds,
 * argument checks, the piece table and its index, piece/decode, and the pair-merging engine
 * that tokenizer_llama2.c and tokenizer_gpt2.c both run. Not for: either file format or
 * either encoding algorithm (see those two files). */
#include "data/tokenizer.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "data/tokenizer_impl.h"
#include "util/common.h"

/* A llama2.c tok*.bin starts with int32 max_token_length (little-endian, far below 2^24, so its
 * fourth byte is 0); JSON text never holds a NUL byte. That byte tells the kinds apart. */
#define SL_TOK_SNIFF_BYTES 4
#define SL_TOK_PATH_BYTES 1024
/* Index slots per piece: at most half full keeps probe chains short. */
#define SL_VOCAB_SLOTS_PER_PIECE 2
#define SL_VOCAB_MIN_SLOTS 16
#define SL_IDS_MIN_CAP 16
#define SL_HEX_DIGITS_PER_BYTE 2

/* ---- the piece table ---------------------------------------------------------------- */

int sl_vocab_index(sl_vocab *v) {
    uint64_t slots = SL_VOCAB_MIN_SLOTS;
    while (slots < (uint64_t)v->v_n * SL_VOCAB_SLOTS_PER_PIECE) slots <<= 1;
    if (slots > UINT32_MAX) return sl_fail(SL_EINVAL, "tokenizer: %d pieces are too many to index", v->v_n);
    v->v_slots = sl_alloc(slots * sizeof(uint32_t));
    if (v->v_slots == NULL) return SL_ENOMEM;
    v->v_mask = (uint32_t)(slots - 1);
    for (int id = 0; id < v->v_n; id++) {
        size_t len;
        const char *p = sl_vocab_piece(v, id, &len);
        if (sl_vocab_find(v, p, len) >= 0) continue; /* a repeated piece: the first id keeps it */
        uint32_t s = (uint32_t)sl_bytes_hash(p, len) & v->v_mask;
        while (v->v_slots[s] != 0) s = (s + 1) & v->v_mask;
        v->v_slots[s] = (uint32_t)id + 1;
    }
    return SL_OK;
}

int sl_vocab_find(const sl_vocab *v, const char *s, size_t len) {
    uint32_t slot = (uint32_t)sl_bytes_hash(s, len) & v->v_mask;
    for (;;) {
        uint32_t e = v->v_slots[slot];
        if (e == 0) return -1;
        int id = (int)(e - 1);
        size_t plen;
        const char *p = sl_vocab_piece(v, id, &plen);
        if (plen == len && memcmp(p, s, len) == 0) return id;
        slot = (slot + 1) & v->v_mask;
    }
}

void sl_vocab_free(sl_vocab *v) {
    sl_free(v->v_bytes);
    sl_free(v->v_off);
    sl_free(v->v_slots);
    memset(v, 0, sizeof(*v));
}

int sl_ids_reserve(int **ids, size_t *n_ids, size_t *cap, size_t more) {
    if (*n_ids + more <= *cap) return SL_OK;
    size_t want = *cap * 2;
    if (want < *n_ids + more) want = *n_ids + more;
    if (want < SL_IDS_MIN_CAP) want = SL_IDS_MIN_CAP;
    size_t bytes;
    if (sl_mul_size(want, sizeof(int), &bytes) != 0)
        return sl_fail(SL_EINVAL, "tokenizer: %zu token ids do not fit in memory", want);
    int *p = sl_alloc(bytes);
    if (p == NULL) return SL_ENOMEM;
    if (*n_ids > 0) memcpy(p, *ids, *n_ids * sizeof(int));
    sl_free(*ids);
    *ids = p;
    *cap = want;
    return SL_OK;
}

/* ---- the merging engine ------------------------------------------------------------- */

static int merge_work_reserve(sl_merge_work *w, size_t n) {
    if (n <= w->w_cap) return SL_OK;
    size_t want = w->w_cap * 2 > n ? w->w_cap * 2 : n;
    sl_free(w->w_prev);
    sl_free(w->w_next);
    sl_free(w->w_ver);
    w->w_prev = sl_alloc(want * sizeof(int32_t));
    w->w_next = sl_alloc(want * sizeof(int32_t));
    w->w_ver = sl_alloc(want * sizeof(uint32_t));
    w->w_cap = want;
    if (w->w_prev == NULL || w->w_next == NULL || w->w_ver == NULL) {
        w->w_cap = 0;
        return SL_ENOMEM;
    }
    return SL_OK;
}

static int heap_push(sl_merge_work *w, sl_merge_cand c) {
    if (w->w_heap_n == w->w_heap_cap) {
        size_t want = w->w_heap_cap ? w->w_heap_cap * 2 : SL_IDS_MIN_CAP;
        sl_merge_cand *h = sl_alloc(want * sizeof(sl_merge_cand));
        if (h == NULL) return SL_ENOMEM;
        if (w->w_heap_n) memcpy(h, w->w_heap, w->w_heap_n * sizeof(sl_merge_cand));
        sl_free(w->w_heap);
        w->w_heap = h;
        w->w_heap_cap = want;
    }
    size_t i = w->w_heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (w->w_heap[parent].h_key <= c.h_key) break;
        w->w_heap[i] = w->w_heap[parent];
        i = parent;
    }
    w->w_heap[i] = c;
    return SL_OK;
}

static sl_merge_cand heap_pop(sl_merge_work *w) {
    sl_merge_cand top = w->w_heap[0];
    sl_merge_cand last = w->w_heap[--w->w_heap_n];
    size_t n = w->w_heap_n, i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && w->w_heap[child + 1].h_key < w->w_heap[child].h_key) child++;
        if (last.h_key <= w->w_heap[child].h_key) break;
        w->w_heap[i] = w->w_heap[child];
        i = child;
    }
    if (n > 0) w->w_heap[i] = last;
    return top;
}

/* Queues the pair (left, right) if it merges. */
static int push_pair(sl_merge_work *w, const int *syms, uint32_t left, uint32_t right, sl_pair_fn fn, void *ctx) {
    int merged;
    uint32_t priority;
    if (!fn(ctx, syms[left], syms[right], &merged, &priority)) return SL_OK;
    sl_merge_cand c = {.h_key = (uint64_t)priority << 32 | left,
                       .h_left = left,
                       .h_right = right,
                       .h_left_ver = w->w_ver[left],
                       .h_right_ver = w->w_ver[right],
                       .h_merged = merged};
    return heap_push(w, c);
}

int sl_merge_run(sl_merge_work *w, int *syms, size_t n, sl_pair_fn fn, void *ctx, size_t *n_out) {
    *n_out = n;
    if (n < 2) return SL_OK;
    if (n >= INT32_MAX)
        return sl_fail(SL_EINVAL, "tokenizer: %zu symbols in one merge run, at most %d", n, INT32_MAX - 1);
    int rc = merge_work_reserve(w, n);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; i++) {
        w->w_prev[i] = (int32_t)i - 1;
        w->w_next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        w->w_ver[i] = 0;
    }
    w->w_heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if ((rc = push_pair(w, syms, (uint32_t)i, (uint32_t)i + 1, fn, ctx)) != 0) return rc;
    while (w->w_heap_n > 0) {
        sl_merge_cand c = heap_pop(w);
        /* A symbol's version changes when it merges or dies, so a stale pair fails here. */
        if (w->w_ver[c.h_left] != c.h_left_ver || w->w_ver[c.h_right] != c.h_right_ver) continue;
        syms[c.h_left] = c.h_merged;
        w->w_ver[c.h_left]++;
        w->w_ver[c.h_right]++;
        int32_t after = w->w_next[c.h_right];
        w->w_next[c.h_left] = after;
        if (after >= 0) w->w_prev[after] = (int32_t)c.h_left;
        int32_t before = w->w_prev[c.h_left];
        if (before >= 0 && (rc = push_pair(w, syms, (uint32_t)before, c.h_left, fn, ctx)) != 0) return rc;
        if (after >= 0 && (rc = push_pair(w, syms, c.h_left, (uint32_t)after, fn, ctx)) != 0) return rc;
    }
    /* Symbol 0 is never the right half of a pair, so the list starts there. */
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = w->w_next[i]) syms[k++] = syms[i];
    *n_out = k;
    return SL_OK;
}

void sl_merge_work_free(sl_merge_work *w) {
    sl_free(w->w_prev);
    sl_free(w->w_next);
    sl_free(w->w_ver);
    sl_free(w->w_heap);
    memset(w, 0, sizeof(*w));
}

/* ---- loading ------------------------------------------------------------------------ */

static int join_path(char *out, const char *dir, size_t dir_len, const char *name) {
    int n = snprintf(out, SL_TOK_PATH_BYTES, "%.*s%s%s", (int)dir_len, dir,
                     dir_len > 0 && dir[dir_len - 1] != '/' ? "/" : "", name);
    if (n < 0 || n >= SL_TOK_PATH_BYTES)
        return sl_fail(SL_EINVAL, "%.*s/%s: path longer than %d bytes", (int)dir_len, dir, name, SL_TOK_PATH_BYTES - 1);
    return SL_OK;
}

static int load_kind(sl_tokenizer **out, const char *path, int llama2_vocab_size) {
    *out = NULL;
    if (path == NULL) return sl_fail(SL_EINVAL, "tokenizer: no path given");
    struct stat st;
    if (stat(path, &st) != 0) return sl_fail(SL_EIO, "%s: no such tokenizer file or folder", path);
    char enc[SL_TOK_PATH_BYTES], bpe[SL_TOK_PATH_BYTES];
    int is_gpt2;
    int rc;
    if (S_ISDIR(st.st_mode)) {
        if ((rc = join_path(enc, path, strlen(path), "encoder.json")) != 0) return rc;
        if ((rc = join_path(bpe, path, strlen(path), "vocab.bpe")) != 0) return rc;
        is_gpt2 = 1;
    } else {
        unsigned char head[SL_TOK_SNIFF_BYTES];
        FILE *fp = fopen(path, "rb");
        if (fp == NULL) return sl_fail(SL_EIO, "%s: cannot open", path);
        size_t got = fread(head, 1, sizeof(head), fp);
        fclose(fp);
        if (got < sizeof(head))
            return sl_fail(SL_EFORMAT,
                           "%s: %zu bytes, too short to be a tokenizer (a tok*.bin starts with a %d-byte "
                           "header; encoder.json is a JSON object)",
                           path, got, SL_TOK_SNIFF_BYTES);
        is_gpt2 = head[SL_TOK_SNIFF_BYTES - 1] != 0;
        if (is_gpt2) {
            const char *slash = strrchr(path, '/');
            size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
            if (snprintf(enc, sizeof(enc), "%s", path) >= (int)sizeof(enc))
                return sl_fail(SL_EINVAL, "%s: path longer than %d bytes", path, SL_TOK_PATH_BYTES - 1);
            if ((rc = join_path(bpe, path, dir_len, "vocab.bpe")) != 0) return rc;
        }
    }
    if (is_gpt2 && llama2_vocab_size > 0)
        return sl_fail(SL_EINVAL,
                       "%s: a vocabulary size was given for a llama2.c tokenizer, but this is GPT-2's "
                       "encoder.json",
                       path);
    sl_tokenizer *t = sl_alloc(sizeof(sl_tokenizer));
    if (t == NULL) return SL_ENOMEM;
    t->t_kind = is_gpt2 ? SL_TOKENIZER_GPT2 : SL_TOKENIZER_LLAMA2;
    rc = is_gpt2 ? sl_gpt2_load(t, enc, bpe) : sl_llama2_load(t, path, llama2_vocab_size);
    if (rc != 0) {
        sl_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return SL_OK;
}

int sl_tokenizer_load(sl_tokenizer **out, const char *path) { return load_kind(out, path, 0); }

int sl_tokenizer_load_llama2(sl_tokenizer **out, const char *path, int vocab_size) {
    if (vocab_size < 0)
        return sl_fail(SL_EINVAL, "%s: vocabulary size %d, expected > 0 (or 0 to infer)", path, vocab_size);
    return load_kind(out, path, vocab_size);
}

void sl_tokenizer_free(sl_tokenizer *t) {
    if (t == NULL) return;
    if (t->t_llama2) sl_llama2_free(t);
    if (t->t_gpt2) sl_gpt2_free(t);
    sl_vocab_free(&t->t_vocab);
    sl_free(t);
}

/* ---- queries ------------------------------------------------------------------------ */

sl_tokenizer_kind sl_tokenizer_get_kind(const sl_tokenizer *t) { return t->t_kind; }
int sl_tokenizer_vocab_size(const sl_tokenizer *t) { return t->t_vocab.v_n; }
int sl_tokenizer_eot(const sl_tokenizer *t) { return t->t_eot; }
int sl_tokenizer_bos(const sl_tokenizer *t) { return t->t_bos; }
const uint8_t *sl_tokenizer_hash(const sl_tokenizer *t) { return t->t_hash; }

/* ---- text <-> ids ------------------------------------------------------------------- */

int sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t len, int bos, int **ids, size_t *n_ids,
                        size_t *cap) {
    if (t == NULL || ids == NULL || n_ids == NULL || cap == NULL || (text == NULL && len > 0))
        return sl_fail(SL_EINVAL, "sl_tokenizer_encode: NULL argument");
    if (*n_ids > *cap || (*ids == NULL && *cap != 0))
        return sl_fail(SL_EINVAL, "sl_tokenizer_encode: id array holds %zu of capacity %zu", *n_ids, *cap);
    if (t->t_kind == SL_TOKENIZER_LLAMA2) return sl_llama2_encode(t, text, len, bos, ids, n_ids, cap);
    return sl_gpt2_encode(t, text, len, ids, n_ids, cap);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int sl_tokenizer_piece(const sl_tokenizer *t, int prev_token, int token, char *buf, const char **out, size_t *out_len) {
    if (token < 0 || token >= t->t_vocab.v_n)
        return sl_fail(SL_EINVAL, "tokenizer: token id %d is outside the vocabulary [0, %d)", token, t->t_vocab.v_n);
    size_t len;
    const char *p = sl_vocab_piece(&t->t_vocab, token, &len);
    if (t->t_kind == SL_TOKENIZER_LLAMA2) {
        /* llama2.c decode(): after BOS, sentencepiece strips the piece's leading space. */
        if (prev_token == SL_LLAMA2_BOS && len > 0 && p[0] == ' ') {
            p++;
            len--;
        }
        /* "<0xXX>" stands for the raw byte XX; like llama2.c's sscanf("<0x%02hhX>"), one or
         * two hex digits after "<0x" are enough. */
        static const char byte_prefix[] = "<0x";
        size_t pre = sizeof(byte_prefix) - 1;
        if (len > pre && memcmp(p, byte_prefix, pre) == 0 && hex_value(p[pre]) >= 0) {
            int value = hex_value(p[pre]);
            for (size_t k = pre + 1; k < pre + SL_HEX_DIGITS_PER_BYTE && k < len && hex_value(p[k]) >= 0; k++)
                value = value * 16 + hex_value(p[k]);
            buf[0] = (char)value;
            buf[1] = '\0';
            p = buf;
            len = 1;
        }
    }
    *out = p;
    *out_len = len;
    return SL_OK;
}

int sl_tokenizer_piece_printable(const char *piece, size_t len) {
    if (len == 0) return 0;
    if (len == 1) {
        unsigned char c = (unsigned char)piece[0];
        return isprint(c) || isspace(c);
    }
    return 1;
}

int sl_tokenizer_decode(const sl_tokenizer *t, const int *ids, size_t n_ids, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    char buf[8];
    size_t total = 0;
    /* Two passes: the length, then the bytes. The text starts as if after BOS, so llama2's
     * dummy-prefix space goes away as sentencepiece's decoder drops it. */
    for (int pass = 0; pass < 2; pass++) {
        int prev = t->t_kind == SL_TOKENIZER_LLAMA2 ? SL_LLAMA2_BOS : -1;
        size_t at = 0;
        for (size_t i = 0; i < n_ids; i++) {
            int id = ids[i];
            if (id < 0 || id >= t->t_vocab.v_n) {
                sl_free(*out);
                *out = NULL;
                return sl_fail(SL_EINVAL, "tokenizer: token %zu has id %d, outside the vocabulary [0, %d)", i, id,
                               t->t_vocab.v_n);
            }
            /* llama2's BOS and EOS are control tokens: they print nothing. */
            int control = t->t_kind == SL_TOKENIZER_LLAMA2 && (id == SL_LLAMA2_BOS || id == SL_LLAMA2_EOS);
            if (!control) {
                const char *p;
                size_t len;
                sl_tokenizer_piece(t, prev, id, buf, &p, &len);
                if (pass == 1) memcpy(*out + at, p, len);
                at += len;
            }
            prev = id;
        }
        if (pass == 0) {
            total = at;
            *out = sl_alloc(total + 1);
            if (*out == NULL) return SL_ENOMEM;
        }
    }
    (*out)[total] = '\0';
    *out_len = total;
    return SL_OK;
}
