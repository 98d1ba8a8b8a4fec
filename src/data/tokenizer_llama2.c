/* tokenizer_llama2.c: llama2.c's tokenizer — reading tok*.bin and encoding exactly as run.c's
 * encode() does (dummy-prefix space, UTF-8 code point lookup with byte fallback, then merging
 * the best-scoring adjacent pair until none merges). Not for: piece/decode (tokenizer.c), the
 * model file, sentencepiece .model files.
 *
 * Where the input is unusual this file defines, and run.c differs: text is len bytes, so a NUL
 * byte is an ordinary byte (byte fallback <0x00>) where run.c stops at it; pieces compare by
 * their full length where run.c's strcmp stops at a NUL inside a piece; when two ids hold the
 * same piece the lower id is found (run.c's bsearch finds either). */
#include <stdio.h>
#include <string.h>

#include "data/tokenizer_impl.h"
#include "util/common.h"

/* File layout: int32 max_token_length, then per token: float32 score, int32 length, bytes. */
#define SL_L2_HEADER_BYTES 4
#define SL_L2_RECORD_HEAD_BYTES 8
/* run.c starts its search for the best pair at this score and merges only above it. */
#define SL_L2_MIN_MERGE_SCORE (-1e10f)
/* run.c groups a leading byte with at most 3 continuation bytes (UTF-8's longest code point). */
#define SL_L2_MAX_CODEPOINT_BYTES 4
#define SL_L2_MIN_VOCAB (SL_LLAMA2_BYTE_BASE + SL_BYTE_VALUES)

struct sl_llama2_tok {
    float *l_scores;            /* (V) */
    uint32_t *l_priority;       /* (V) merge priority, smaller first: the score, order reversed */
    uint8_t *l_mergeable;       /* (V) score > SL_L2_MIN_MERGE_SCORE */
    int l_space_id;             /* the piece " " (the dummy prefix), or -1 */
    uint32_t l_max_piece_bytes; /* the longest piece */
};

static uint32_t read_u32(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* Larger score -> smaller priority; equal scores (0.0 == -0.0 included) -> equal priority,
 * so ties fall to the leftmost pair as in run.c's strict '>' scan. */
static uint32_t score_priority(float score) {
    if (score == 0.0f) score = 0.0f;
    uint32_t u;
    memcpy(&u, &score, sizeof(u));
    uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~ascending;
}

int sl_llama2_load(sl_tokenizer *t, const char *path, int vocab_size) {
    sl_mapped_file f;
    int rc = sl_map_file(&f, path);
    if (rc != 0) return rc;
    const uint8_t *d = f.m_data;
    size_t size = f.m_bytes;
    if (size < SL_L2_HEADER_BYTES) {
        sl_unmap_file(&f);
        return sl_fail(SL_EFORMAT, "%s: %zu bytes, expected at least the %d-byte header (int32 max_token_length)", path,
                       size, SL_L2_HEADER_BYTES);
    }
    int32_t max_len = (int32_t)read_u32(d);
    if (max_len < 1) {
        sl_unmap_file(&f);
        return sl_fail(SL_EFORMAT, "%s: offset 0: max_token_length %d, expected >= 1", path, max_len);
    }
    /* Pass 1: walk the records, checking each, to count tokens and piece bytes. */
    size_t off = SL_L2_HEADER_BYTES, piece_bytes = 0, longest = 0;
    int n = 0;
    while (vocab_size > 0 ? n < vocab_size : off < size) {
        if (size - off < SL_L2_RECORD_HEAD_BYTES) {
            rc = vocab_size > 0 && off == size
                     ? sl_fail(SL_EFORMAT,
                               "%s: truncated: the model's vocabulary has %d tokens, the file ends after %d "
                               "(offset %zu)",
                               path, vocab_size, n, off)
                     : sl_fail(SL_EFORMAT,
                               "%s: truncated at offset %zu: token %d needs an %d-byte score+length, "
                               "%zu bytes left",
                               path, off, n, SL_L2_RECORD_HEAD_BYTES, size - off);
            sl_unmap_file(&f);
            return rc;
        }
        int32_t len = (int32_t)read_u32(d + off + sizeof(float));
        if (len < 0 || len > max_len) {
            sl_unmap_file(&f);
            return sl_fail(SL_EFORMAT, "%s: offset %zu: token %d has length %d, expected 0..%d (max_token_length)",
                           path, off + sizeof(float), n, len, max_len);
        }
        off += SL_L2_RECORD_HEAD_BYTES;
        if (size - off < (size_t)len) {
            sl_unmap_file(&f);
            return sl_fail(SL_EFORMAT, "%s: truncated at offset %zu: token %d needs %d piece bytes, %zu left", path,
                           off, n, len, size - off);
        }
        off += (size_t)len;
        piece_bytes += (size_t)len;
        if ((size_t)len > longest) longest = (size_t)len;
        if (n == INT32_MAX) {
            sl_unmap_file(&f);
            return sl_fail(SL_EFORMAT, "%s: more than %d tokens", path, INT32_MAX);
        }
        n++;
    }
    if (n < SL_L2_MIN_VOCAB) {
        sl_unmap_file(&f);
        return sl_fail(SL_EFORMAT,
                       "%s: %d tokens, expected at least %d (<unk>, <s>, </s> and the %d byte tokens "
                       "that byte fallback uses)%s",
                       path, n, SL_L2_MIN_VOCAB, SL_BYTE_VALUES, vocab_size > 0 ? "" : " — is the file truncated?");
    }
    if (piece_bytes >= UINT32_MAX) {
        sl_unmap_file(&f);
        return sl_fail(SL_EFORMAT, "%s: %zu piece bytes, at most %u", path, piece_bytes, UINT32_MAX - 1);
    }

    sl_llama2_tok *l = sl_alloc(sizeof(sl_llama2_tok));
    t->t_llama2 = l;
    sl_vocab *v = &t->t_vocab;
    v->v_n = n;
    v->v_bytes = sl_alloc(piece_bytes + 1);
    v->v_off = sl_alloc(((size_t)n + 1) * sizeof(uint32_t));
    if (l != NULL) {
        l->l_scores = sl_alloc((size_t)n * sizeof(float));
        l->l_priority = sl_alloc((size_t)n * sizeof(uint32_t));
        l->l_mergeable = sl_alloc((size_t)n);
    }
    if (l == NULL || v->v_bytes == NULL || v->v_off == NULL || l->l_scores == NULL || l->l_priority == NULL ||
        l->l_mergeable == NULL) {
        sl_unmap_file(&f);
        return SL_ENOMEM;
    }
    /* Pass 2: copy (every record was checked above). */
    off = SL_L2_HEADER_BYTES;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        float score;
        memcpy(&score, d + off, sizeof(score));
        uint32_t len = read_u32(d + off + sizeof(float));
        off += SL_L2_RECORD_HEAD_BYTES;
        memcpy(v->v_bytes + at, d + off, len);
        v->v_off[i] = (uint32_t)at;
        at += len;
        off += len;
        l->l_scores[i] = score;
        l->l_priority[i] = score_priority(score);
        l->l_mergeable[i] = score > SL_L2_MIN_MERGE_SCORE;
    }
    v->v_off[n] = (uint32_t)at;
    l->l_max_piece_bytes = (uint32_t)longest;
    sl_sha256(d, size, t->t_hash);
    sl_unmap_file(&f);
    if ((rc = sl_vocab_index(v)) != 0) return rc;
    l->l_space_id = sl_vocab_find(v, " ", 1);
    t->t_bos = SL_LLAMA2_BOS;
    t->t_eot = SL_LLAMA2_EOS;
    return SL_OK;
}

void sl_llama2_free(sl_tokenizer *t) {
    sl_llama2_tok *l = t->t_llama2;
    sl_free(l->l_scores);
    sl_free(l->l_priority);
    sl_free(l->l_mergeable);
    sl_free(l);
    t->t_llama2 = NULL;
}

typedef struct {
    const sl_tokenizer *p_tok;
    char *p_buf; /* 2 * max_token_length bytes: two pieces side by side */
} pair_ctx;

/* run.c's merge test: is the concatenation of the two pieces itself a piece? */
static int llama2_pair(void *vctx, int a, int b, int *merged, uint32_t *priority) {
    pair_ctx *c = vctx;
    const sl_vocab *v = &c->p_tok->t_vocab;
    size_t la, lb;
    const char *pa = sl_vocab_piece(v, a, &la);
    const char *pb = sl_vocab_piece(v, b, &lb);
    memcpy(c->p_buf, pa, la);
    memcpy(c->p_buf + la, pb, lb);
    int id = sl_vocab_find(v, c->p_buf, la + lb);
    if (id < 0 || !c->p_tok->t_llama2->l_mergeable[id]) return 0;
    *merged = id;
    *priority = c->p_tok->t_llama2->l_priority[id];
    return 1;
}

int sl_llama2_encode(const sl_tokenizer *t, const char *text, size_t len, int bos, int **ids, size_t *n_ids,
                     size_t *cap) {
    const sl_llama2_tok *l = t->t_llama2;
    if (len > 0 && l->l_space_id < 0)
        return sl_fail(SL_EFORMAT, "llama2 tokenizer: no piece \" \" for the dummy prefix that encoding non-empty text "
                                   "starts with");
    /* At most one id per byte, plus BOS and the dummy prefix. */
    int rc = sl_ids_reserve(ids, n_ids, cap, len + 2);
    if (rc != 0) return rc;
    int *seq = *ids + *n_ids;
    size_t n = 0;
    if (bos) seq[n++] = SL_LLAMA2_BOS;
    if (len > 0) seq[n++] = l->l_space_id;
    /* A code point: any byte and up to 3 continuation bytes (10xxxxxx) after it. */
    for (size_t i = 0; i < len;) {
        size_t start = i++;
        while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80 && i - start < SL_L2_MAX_CODEPOINT_BYTES) i++;
        int id = sl_vocab_find(&t->t_vocab, text + start, i - start);
        if (id >= 0) {
            seq[n++] = id;
        } else {
            for (size_t k = start; k < i; k++) seq[n++] = (unsigned char)text[k] + SL_LLAMA2_BYTE_BASE;
        }
    }
    pair_ctx ctx = {.p_tok = t, .p_buf = sl_alloc(2 * (size_t)l->l_max_piece_bytes + 1)};
    if (ctx.p_buf == NULL) return SL_ENOMEM;
    sl_merge_work work = {0};
    size_t n_out;
    rc = sl_merge_run(&work, seq, n, llama2_pair, &ctx, &n_out);
    sl_merge_work_free(&work);
    sl_free(ctx.p_buf);
    if (rc != 0) return rc;
    *n_ids += n_out;
    return SL_OK;
}
