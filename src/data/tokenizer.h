/* tokenizer.h: one interface over the tokenizers splitllm reads — GPT-2 byte-level BPE
 * (encoder.json + vocab.bpe) and llama2.c's tok*.bin. Text in, token ids out, and back.
 * Not for: model files, datasets (see shard.h). */
#ifndef SPLITLLM_DATA_TOKENIZER_H
#define SPLITLLM_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/sha256.h"

typedef enum { SL_TOKENIZER_GPT2 = 1, SL_TOKENIZER_LLAMA2 = 2 } sl_tokenizer_kind;

typedef struct sl_tokenizer sl_tokenizer;

/* path: a llama2.c tok*.bin file, or GPT-2's encoder.json (vocab.bpe beside it), or a
 * folder holding encoder.json + vocab.bpe. The kind is detected from the file. */
int sl_tokenizer_load(sl_tokenizer **out, const char *path);
/* A llama2.c tok*.bin whose vocabulary size the model states (llama2.c reads exactly that many
 * tokens and ignores what follows). vocab_size 0: infer it, as sl_tokenizer_load does, by
 * reading tokens to the end of the file, which must end exactly after the last one. */
int sl_tokenizer_load_llama2(sl_tokenizer **out, const char *path, int vocab_size);
void sl_tokenizer_free(sl_tokenizer *t);

sl_tokenizer_kind sl_tokenizer_get_kind(const sl_tokenizer *t);
int sl_tokenizer_vocab_size(const sl_tokenizer *t);
/* Token that separates documents and ends a completion: GPT-2 <|endoftext|> (50256),
 * llama2.c EOS (2). */
int sl_tokenizer_eot(const sl_tokenizer *t);
/* Token that starts a sequence, or -1 where there is none (GPT-2): llama2.c BOS (1). */
int sl_tokenizer_bos(const sl_tokenizer *t);
/* SHA-256 over the tokenizer's file bytes; shards record it. */
const uint8_t *sl_tokenizer_hash(const sl_tokenizer *t);

/* Encodes len bytes of text. The ids are appended to *ids (sl_alloc'd, grown as needed,
 * *n_ids counts them, *cap its capacity; pass *ids = NULL, *n_ids = *cap = 0 to start).
 * bos: prepend BOS where the tokenizer has one. llama2.c semantics (dummy prefix space,
 * byte fallback) for that kind; GPT-2 semantics (no prefix) for the other, where the text
 * "<|endoftext|>" becomes the one token 50256. Any bytes are accepted (invalid UTF-8, NUL).
 * Safe to call from several threads at once on one tokenizer. */
int sl_tokenizer_encode(const sl_tokenizer *t, const char *text, size_t len, int bos, int **ids,
                        size_t *n_ids, size_t *cap);

/* The bytes of one token as generation prints it after prev_token (llama2.c strips the
 * space after BOS and maps <0xXX> pieces to their byte). Sets *out and *out_len; the
 * bytes belong to the tokenizer or to buf (at least 8 bytes). */
int sl_tokenizer_piece(const sl_tokenizer *t, int prev_token, int token, char *buf, const char **out,
                       size_t *out_len);

/* llama2.c's safe_printf rule: 0 for a piece that should not be printed (empty, or a single
 * byte that is neither printable nor whitespace, e.g. a control code), 1 otherwise. */
int sl_tokenizer_piece_printable(const char *piece, size_t len);

/* Decodes ids into text (sl_alloc'd, NUL-terminated, *out_len bytes not counting NUL), so
 * that decode(encode(s)) == s for any bytes s. llama2.c: the pieces as sl_tokenizer_piece
 * gives them, the first as if after BOS (the dummy-prefix space goes), BOS and EOS print
 * nothing. GPT-2: the bytes of each token (50256 as "<|endoftext|>"). An id outside the
 * vocabulary is an error naming its position. */
int sl_tokenizer_decode(const sl_tokenizer *t, const int *ids, size_t n_ids, char **out, size_t *out_len);

#endif
