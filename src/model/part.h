/* part.h: model part files — the piece of the frozen base model that one tier runs (the
 * user: embedding + blocks [0,c1); an edge: blocks [c1,c2); the cloud: blocks [c2,L) +
 * final norm + LM head), so that the cloud can send each edge and user only its part and
 * each process maps only what it runs.
 *
 * A part is a safetensors file (util/safetensors.h), all tensors F32:
 *   "tok_emb" (Vp,C) and, GPT-2, "pos_emb" (maxT,C)          when it has the embedding
 *   "blocks.{l}.{name}" for l in [layer_begin, layer_end)      (table below)
 *   "final_norm_w" (C), GPT-2 "final_norm_b" (C),
 *   "classifier" (V,C)                                         when it has the head
 * The classifier is always stored, also when the model ties it to the embedding (then it is
 * the first V rows of tok_emb), so a cloud part never needs the embedding.
 * Block tensors: norm1_w (C), norm1_b (C), wq (C,C), wk (KV,C), wv (KV,C), bq (C), bk (KV),
 * bv (KV), wo (C,C), bo (C), norm2_w (C), norm2_b (C), w_gate (H,C), w_up (H,C), b_up (H),
 * w_down (C,H), b_down (C) — GPT-2 has all but w_gate, Llama no biases and no norm*_b.
 * Metadata (strings): format "splitllm-part", version "1", arch ("gpt2"/"llama"), n_layers,
 * dim, hidden_dim, n_heads, n_kv_heads, vocab_size, padded_vocab_size, max_seq,
 * shared_classifier, layer_begin, layer_end, has_embedding, has_head.
 *
 * Layout: a block's wq, wk, wv (and bq, bk, bv) are adjacent in the data area exactly when
 * they are adjacent in the model the part was cut from (llm.c's fused qkv: yes; llama2.c:
 * no). The segment runs adjacent q/k/v as one product, so a segment on a part computes
 * bitwise what the same segment computes on the whole model.
 *
 * sl_model_load (model.h) recognises a part and loads it like a whole model: the same
 * sl_model, with the tensors outside the part NULL and part_* telling the range; segments
 * check that the part covers them (sl_model_check_covers).
 *
 * Not for: LoRA adapters (lora.h), shipping files between tiers (the network layer). */
#ifndef SPLITLLM_MODEL_PART_H
#define SPLITLLM_MODEL_PART_H

#include "model/model.h"
#include "util/safetensors.h"

#define SL_PART_FORMAT "splitllm-part"
#define SL_PART_VERSION "1"

/* Writes the part of m holding blocks [layer_begin, layer_end), the embedding when
 * has_embedding (then layer_begin must be 0) and the final norm + LM head when has_head
 * (then layer_end must be L), atomically. m may itself be a part that covers the range. */
int sl_model_write_part(const sl_model *m, int layer_begin, int layer_end, int has_embedding, int has_head,
                        const char *path);

/* For sl_model_load: fills m (whose layers, pointers and config are still empty) from the
 * open part file r, which m->part_reader already owns. Checks the metadata, every tensor's
 * dtype, shape and alignment, and that the file holds exactly the tensors of its range. Does
 * not build the rope tables. */
int sl_model_part_fill(sl_model *m, const sl_st_reader *r);

#endif
