/* tokenizer_impl.h: what tokenizer.c shares with tokenizer_llama2.c and tokenizer_gpt2.c —
 * the tokenizer struct, the piece table with its bytes -> id index, the growing id array, and
 * the pair-merging engine both BPE variants run on. Private to the data layer: nothing outside
 * src/data/tokenizer*.c includes it. Not for: file formats (each kind's own .c reads its files). */
#ifndef SPLITLLM_DATA_TOKENIZER_IMPL_H
#define SPLITLLM_DATA_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer.h"
#include "util/sha256.h"

/* llama2.c fixes these ids (sentencepiece's <unk>, <s>, </s>); byte tokens start after them. */
#define SL_LLAMA2_BOS 1
#define SL_LLAMA2_EOS 2
#define SL_LLAMA2_BYTE_BASE 3
#define SL_BYTE_VALUES 256

/* The pieces of a vocabulary, V of them, back to back in one allocation, and an
 * open-addressing index from piece bytes to id (the first id wins when a piece repeats). */
typedef struct {
    char *v_bytes;     /* all pieces, concatenated */
    uint32_t *v_off;   /* (V+1): piece i is v_bytes[v_off[i] .. v_off[i+1]) */
    int v_n;           /* V */
    uint32_t *v_slots; /* index slots: id + 1, 0 = empty */
    uint32_t v_mask;   /* slot count - 1 (a power of two) */
} sl_vocab;

/* Builds the index over v_bytes/v_off/v_n (already filled). */
int sl_vocab_index(sl_vocab *v);
/* The id of the piece equal to s[0..len), or -1. */
int sl_vocab_find(const sl_vocab *v, const char *s, size_t len);
void sl_vocab_free(sl_vocab *v);
static inline const char *sl_vocab_piece(const sl_vocab *v, int id, size_t *len) {
    *len = v->v_off[id + 1] - v->v_off[id];
    return v->v_bytes + v->v_off[id];
}
/* FNV-1a over bytes: the index hash. */
static inline uint64_t sl_bytes_hash(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

typedef struct sl_llama2_tok sl_llama2_tok;
typedef struct sl_gpt2_tok sl_gpt2_tok;

struct sl_tokenizer {
    sl_tokenizer_kind t_kind;
    uint8_t t_hash[SL_SHA256_BYTES];
    sl_vocab t_vocab;        /* llama2: pieces as stored in tok*.bin; gpt2: raw bytes of each token */
    int t_eot;               /* see sl_tokenizer_eot */
    int t_bos;               /* see sl_tokenizer_bos */
    sl_llama2_tok *t_llama2; /* kind-specific state, exactly one is set */
    sl_gpt2_tok *t_gpt2;
};

/* Kind-specific halves, called by tokenizer.c after it has checked the arguments. */
int sl_llama2_load(sl_tokenizer *t, const char *path, int vocab_size);
void sl_llama2_free(sl_tokenizer *t);
int sl_llama2_encode(const sl_tokenizer *t, const char *text, size_t len, int bos, int **ids, size_t *n_ids,
                     size_t *cap);
int sl_gpt2_load(sl_tokenizer *t, const char *encoder_json_path, const char *vocab_bpe_path);
void sl_gpt2_free(sl_tokenizer *t);
int sl_gpt2_encode(const sl_tokenizer *t, const char *text, size_t len, int **ids, size_t *n_ids, size_t *cap);

/* Makes room for `more` ids after *n_ids in the caller's growing array (sl_alloc'd). */
int sl_ids_reserve(int **ids, size_t *n_ids, size_t *cap, size_t more);

/* The merging engine. A sequence of symbols (token ids) is merged pair by pair: each step
 * merges the adjacent pair with the smallest priority, the leftmost on ties, until no pair
 * can merge. A linked list of symbols and a lazily pruned min-heap of candidate pairs make
 * that O(n log n) instead of the O(n^2) rescans of the reference implementations, with the
 * same result (the heap key is (priority, position of the left symbol)). */

/* Says whether symbols a, b (in this order) merge; if so sets *merged and *priority. */
typedef int (*sl_pair_fn)(void *ctx, int a, int b, int *merged, uint32_t *priority);

typedef struct {
    uint64_t h_key; /* priority << 32 | left position */
    uint32_t h_left, h_right;
    uint32_t h_left_ver, h_right_ver; /* the symbols' versions when queued */
    int h_merged;                     /* the id the pair becomes */
} sl_merge_cand;

/* Work buffers, reused across calls of one encode (grown as needed). */
typedef struct {
    int32_t *w_prev, *w_next;
    uint32_t *w_ver;
    size_t w_cap; /* symbols the arrays above hold */
    sl_merge_cand *w_heap;
    size_t w_heap_n, w_heap_cap;
} sl_merge_work;

/* Merges syms[0..n) in place; *n_out gets the count left. n must be below 2^31. */
int sl_merge_run(sl_merge_work *w, int *syms, size_t n, sl_pair_fn fn, void *ctx, size_t *n_out);
void sl_merge_work_free(sl_merge_work *w);

#endif
