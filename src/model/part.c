/* part.c: see part.h. One table describes a block's tensors (name, member, shape, family);
 * the writer and the loader both walk it, so they cannot disagree. */
#include "model/part.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shapes, in terms of the configuration. */
typedef enum { SH_C, SH_KV, SH_H, SH_CC, SH_KVC, SH_HC, SH_CH } shape_kind;

#define FAM_GPT2 1u
#define FAM_LLAMA 2u
#define FAM_BOTH (FAM_GPT2 | FAM_LLAMA)

typedef struct {
    const char *name;
    size_t member; /* offsetof(sl_layer_weights, ...) */
    shape_kind shape;
    unsigned families;
} block_tensor;

#define BT(n, s, f) {#n, offsetof(sl_layer_weights, n), s, f}
static const block_tensor block_tensors[] = {
    BT(norm1_w, SH_C, FAM_BOTH),  BT(norm1_b, SH_C, FAM_GPT2),    BT(wq, SH_CC, FAM_BOTH),
    BT(wk, SH_KVC, FAM_BOTH),     BT(wv, SH_KVC, FAM_BOTH),       BT(bq, SH_C, FAM_GPT2),
    BT(bk, SH_KV, FAM_GPT2),      BT(bv, SH_KV, FAM_GPT2),        BT(wo, SH_CC, FAM_BOTH),
    BT(bo, SH_C, FAM_GPT2),       BT(norm2_w, SH_C, FAM_BOTH),    BT(norm2_b, SH_C, FAM_GPT2),
    BT(w_gate, SH_HC, FAM_LLAMA), BT(w_up, SH_HC, FAM_BOTH),      BT(b_up, SH_H, FAM_GPT2),
    BT(w_down, SH_CH, FAM_BOTH),  BT(b_down, SH_C, FAM_GPT2),
};
#undef BT
#define N_BLOCK_TENSORS ((int)(sizeof(block_tensors) / sizeof(block_tensors[0])))

/* Order in the file (indices into block_tensors). Fused: the table's order, q/k/v adjacent.
 * Separate: other tensors between wq, wk and wv (and between bq, bk, bv), so that a part
 * cut from a model with separate q/k/v keeps them separate (see part.h, Layout). */
static const int order_fused[N_BLOCK_TENSORS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const int order_separate[N_BLOCK_TENSORS] = {0, 1, 2, 5, 8, 9, 3, 6, 10, 11, 4, 7, 12, 13, 14, 15, 16};

static unsigned family_of(const sl_config *c) { return c->arch == SL_ARCH_GPT2 ? FAM_GPT2 : FAM_LLAMA; }

static int shape_of(const sl_config *c, shape_kind k, int64_t *shape) {
    const int64_t C = c->dim, H = c->hidden_dim, KV = sl_config_kv_dim(c);
    switch (k) {
    case SH_C: shape[0] = C; return 1;
    case SH_KV: shape[0] = KV; return 1;
    case SH_H: shape[0] = H; return 1;
    case SH_CC: shape[0] = C; shape[1] = C; return 2;
    case SH_KVC: shape[0] = KV; shape[1] = C; return 2;
    case SH_HC: shape[0] = H; shape[1] = C; return 2;
    case SH_CH: shape[0] = C; shape[1] = H; return 2;
    }
    return 0;
}

static const float **member_of(sl_layer_weights *w, const block_tensor *bt) {
    return (const float **)((char *)w + bt->member);
}

static const float *member_of_const(const sl_layer_weights *w, const block_tensor *bt) {
    return *(const float *const *)((const char *)w + bt->member);
}

/* Same test as the segment's (segment.c qkv_fused). */
static int qkv_adjacent(const sl_layer_weights *w, const sl_config *c) {
    const size_t C = (size_t)c->dim, KV = (size_t)sl_config_kv_dim(c);
    return w->wk == w->wq + C * C && w->wv == w->wk + KV * C &&
           (w->bq == NULL || (w->bk == w->bq + C && w->bv == w->bk + KV));
}

/* "with the embedding and the head" and its variants. */
static const char *holds_text(int embedding, int head) {
    if (embedding && head) return "with the embedding and the head";
    if (embedding) return "with the embedding, without the head";
    if (head) return "without the embedding, with the head";
    return "without the embedding or the head";
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    const char *key;
    char value[32];
} meta_pair;

int sl_model_write_part(const sl_model *m, int layer_begin, int layer_end, int has_embedding, int has_head,
                        const char *path) {
    const sl_config *c = &m->config;
    const int L = c->n_layers;
    if (layer_begin < 0 || layer_end > L || layer_begin > layer_end)
        return sl_fail(SL_EINVAL, "%s: part blocks [%d,%d) are outside the model's %d blocks", path, layer_begin,
                       layer_end, L);
    if (has_embedding && layer_begin != 0)
        return sl_fail(SL_EINVAL, "%s: a part with the embedding must start at block 0, not %d", path, layer_begin);
    if (has_head && layer_end != L)
        return sl_fail(SL_EINVAL, "%s: a part with the head must end at block %d, not %d", path, L, layer_end);
    if (layer_begin < m->part_layer_begin || layer_end > m->part_layer_end ||
        (has_embedding && !m->part_has_embedding) || (has_head && !m->part_has_head))
        return sl_fail(SL_EINVAL, "%s: cannot cut blocks [%d,%d) %s from model part %s, which holds blocks [%d,%d) %s",
                       path, layer_begin, layer_end, holds_text(has_embedding, has_head), m->file.m_path,
                       m->part_layer_begin, m->part_layer_end,
                       holds_text(m->part_has_embedding, m->part_has_head));
    sl_st_writer *w;
    int rc = sl_st_writer_create(&w);
    if (rc) return rc;
    const int64_t C = c->dim;
    const int gpt2 = c->arch == SL_ARCH_GPT2;
    char name[64];
    if (has_embedding) {
        int64_t se[2] = {c->padded_vocab_size, C}, sp[2] = {c->max_seq, C};
        if (rc == 0) rc = sl_st_writer_add(w, "tok_emb", SL_ST_F32, 2, se, m->tok_emb);
        if (rc == 0 && gpt2) rc = sl_st_writer_add(w, "pos_emb", SL_ST_F32, 2, sp, m->pos_emb);
    }
    const unsigned fam = family_of(c);
    for (int l = layer_begin; l < layer_end && rc == 0; l++) {
        const sl_layer_weights *lw = &m->layers[l];
        const int *order = qkv_adjacent(lw, c) ? order_fused : order_separate;
        for (int k = 0; k < N_BLOCK_TENSORS && rc == 0; k++) {
            const block_tensor *bt = &block_tensors[order[k]];
            if (!(bt->families & fam)) continue;
            const float *data = member_of_const(lw, bt);
            if (data == NULL) {
                rc = sl_fail(SL_EINVAL, "%s: block %d's %s is missing from model %s", path, l, bt->name,
                             m->file.m_path);
                break;
            }
            int64_t shape[2];
            int nd = shape_of(c, bt->shape, shape);
            snprintf(name, sizeof(name), "blocks.%d.%s", l, bt->name);
            rc = sl_st_writer_add(w, name, SL_ST_F32, nd, shape, data);
        }
    }
    if (has_head) {
        int64_t sn[1] = {C}, sc[2] = {c->vocab_size, C};
        if (rc == 0) rc = sl_st_writer_add(w, "final_norm_w", SL_ST_F32, 1, sn, m->final_norm_w);
        if (rc == 0 && gpt2) rc = sl_st_writer_add(w, "final_norm_b", SL_ST_F32, 1, sn, m->final_norm_b);
        /* tied: the first V rows of the embedding */
        if (rc == 0) rc = sl_st_writer_add(w, "classifier", SL_ST_F32, 2, sc, m->classifier);
    }
    meta_pair meta[] = {{"format", SL_PART_FORMAT}, {"version", SL_PART_VERSION}, {"arch", ""},
                        {"n_layers", ""}, {"dim", ""}, {"hidden_dim", ""}, {"n_heads", ""}, {"n_kv_heads", ""},
                        {"vocab_size", ""}, {"padded_vocab_size", ""}, {"max_seq", ""},
                        {"shared_classifier", ""}, {"layer_begin", ""}, {"layer_end", ""},
                        {"has_embedding", ""}, {"has_head", ""}};
    const int ints[] = {c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->vocab_size,
                        c->padded_vocab_size, c->max_seq, c->shared_classifier, layer_begin, layer_end,
                        has_embedding ? 1 : 0, has_head ? 1 : 0};
    snprintf(meta[2].value, sizeof(meta[2].value), "%s", sl_arch_name(c->arch));
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        snprintf(meta[3 + i].value, sizeof(meta[3 + i].value), "%d", ints[i]);
    for (size_t i = 0; i < sizeof(meta) / sizeof(meta[0]) && rc == 0; i++)
        rc = sl_st_writer_set_metadata(w, meta[i].key, meta[i].value);
    if (rc == 0) rc = sl_st_writer_write(w, path);
    sl_st_writer_free(w);
    return rc;
}

/* ---------------------------------------------------------------- loading */

static int meta_int(const sl_st_reader *r, const char *key, long lo, long hi, int *out) {
    const char *v = sl_st_metadata(r, key);
    if (v == NULL)
        return sl_fail(SL_EFORMAT, "%s: metadata '%s' is missing (a %s file must have it)", sl_st_path(r), key,
                       SL_PART_FORMAT);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0)
        return sl_fail(SL_EFORMAT, "%s: metadata '%s' = '%s', expected an integer", sl_st_path(r), key, v);
    if (x < lo || x > hi)
        return sl_fail(SL_EFORMAT, "%s: metadata '%s' = %ld, expected a value in [%ld, %ld]", sl_st_path(r), key, x,
                       lo, hi);
    *out = (int)x;
    return SL_OK;
}

/* The tensor called name, F32 with the given shape, aligned for float reads. */
static int get_tensor(const sl_model *m, const sl_st_reader *r, const char *name, int ndim, const int64_t *shape,
                      const float **out) {
    const char *path = sl_st_path(r);
    if (sl_st_lookup(r, name) == NULL)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s' is missing, but the part's metadata says it holds blocks [%d,%d) %s",
                       path, name, m->part_layer_begin, m->part_layer_end,
                       holds_text(m->part_has_embedding, m->part_has_head));
    const sl_st_tensor *t;
    int rc = sl_st_get(r, name, SL_ST_F32, ndim, shape, &t);
    if (rc) return rc;
    if (!t->t_aligned)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s' starts at file offset %zu, expected a multiple of 4 (float32)",
                       path, name, t->t_file_offset);
    *out = t->t_data;
    return SL_OK;
}

/* Whether a tensor of this name belongs in the part m describes. */
static int expected_name(const sl_model *m, const char *name) {
    const int gpt2 = m->config.arch == SL_ARCH_GPT2;
    if (strcmp(name, "tok_emb") == 0) return m->part_has_embedding;
    if (strcmp(name, "pos_emb") == 0) return m->part_has_embedding && gpt2;
    if (strcmp(name, "final_norm_w") == 0 || strcmp(name, "classifier") == 0) return m->part_has_head;
    if (strcmp(name, "final_norm_b") == 0) return m->part_has_head && gpt2;
    if (strncmp(name, "blocks.", 7) != 0 || name[7] < '0' || name[7] > '9') return 0;
    char *end;
    errno = 0;
    long l = strtol(name + 7, &end, 10);
    if (errno != 0 || *end != '.' || l < m->part_layer_begin || l >= m->part_layer_end) return 0;
    char canon[64];
    snprintf(canon, sizeof(canon), "blocks.%ld.", l);
    if (strncmp(name, canon, strlen(canon)) != 0) return 0; /* "blocks.01.wq" */
    const unsigned fam = family_of(&m->config);
    for (int k = 0; k < N_BLOCK_TENSORS; k++)
        if ((block_tensors[k].families & fam) && strcmp(end + 1, block_tensors[k].name) == 0) return 1;
    return 0;
}

int sl_model_part_fill(sl_model *m, const sl_st_reader *r) {
    const char *path = sl_st_path(r);
    const char *version = sl_st_metadata(r, "version");
    if (version == NULL || strcmp(version, SL_PART_VERSION) != 0)
        return sl_fail(SL_EFORMAT, "%s: metadata 'version' = '%s', expected '%s' (a %s file this build reads)", path,
                       version ? version : "(missing)", SL_PART_VERSION, SL_PART_FORMAT);
    sl_config *c = &m->config;
    const char *arch = sl_st_metadata(r, "arch");
    if (arch != NULL && strcmp(arch, "gpt2") == 0) c->arch = SL_ARCH_GPT2;
    else if (arch != NULL && strcmp(arch, "llama") == 0) c->arch = SL_ARCH_LLAMA;
    else return sl_fail(SL_EFORMAT, "%s: metadata 'arch' = '%s', expected gpt2 or llama", path, arch ? arch : "(missing)");
    int rc;
    const long big = 1L << 30;
    if ((rc = meta_int(r, "n_layers", 1, big, &c->n_layers)) || (rc = meta_int(r, "dim", 1, big, &c->dim)) ||
        (rc = meta_int(r, "hidden_dim", 1, big, &c->hidden_dim)) || (rc = meta_int(r, "n_heads", 1, big, &c->n_heads)) ||
        (rc = meta_int(r, "n_kv_heads", 1, big, &c->n_kv_heads)) ||
        (rc = meta_int(r, "vocab_size", 1, big, &c->vocab_size)) ||
        (rc = meta_int(r, "padded_vocab_size", 1, big, &c->padded_vocab_size)) ||
        (rc = meta_int(r, "max_seq", 1, big, &c->max_seq)) ||
        (rc = meta_int(r, "shared_classifier", 0, 1, &c->shared_classifier)))
        return rc;
    if ((rc = sl_config_validate(c, path))) return rc;
    const int L = c->n_layers;
    if ((rc = meta_int(r, "layer_begin", 0, L, &m->part_layer_begin)) ||
        (rc = meta_int(r, "layer_end", m->part_layer_begin, L, &m->part_layer_end)) ||
        (rc = meta_int(r, "has_embedding", 0, 1, &m->part_has_embedding)) ||
        (rc = meta_int(r, "has_head", 0, 1, &m->part_has_head)))
        return rc;
    if (m->part_has_embedding && m->part_layer_begin != 0)
        return sl_fail(SL_EFORMAT, "%s: metadata says the part has the embedding but starts at block %d, expected 0",
                       path, m->part_layer_begin);
    if (m->part_has_head && m->part_layer_end != L)
        return sl_fail(SL_EFORMAT, "%s: metadata says the part has the head but ends at block %d, expected %d", path,
                       m->part_layer_end, L);
    const int64_t C = c->dim;
    const int gpt2 = c->arch == SL_ARCH_GPT2;
    size_t expected = 0;
    if (m->part_has_embedding) {
        int64_t se[2] = {c->padded_vocab_size, C}, sp[2] = {c->max_seq, C};
        if ((rc = get_tensor(m, r, "tok_emb", 2, se, &m->tok_emb))) return rc;
        if (gpt2 && (rc = get_tensor(m, r, "pos_emb", 2, sp, &m->pos_emb))) return rc;
        expected += gpt2 ? 2 : 1;
    }
    m->layers = sl_alloc((size_t)L * sizeof(sl_layer_weights));
    if (m->layers == NULL) return SL_ENOMEM;
    const unsigned fam = family_of(c);
    char name[64];
    for (int l = m->part_layer_begin; l < m->part_layer_end; l++) {
        for (int k = 0; k < N_BLOCK_TENSORS; k++) {
            const block_tensor *bt = &block_tensors[k];
            if (!(bt->families & fam)) continue;
            int64_t shape[2];
            int nd = shape_of(c, bt->shape, shape);
            snprintf(name, sizeof(name), "blocks.%d.%s", l, bt->name);
            if ((rc = get_tensor(m, r, name, nd, shape, member_of(&m->layers[l], bt)))) return rc;
            expected++;
        }
    }
    if (m->part_has_head) {
        int64_t sn[1] = {C}, sc[2] = {c->vocab_size, C};
        if ((rc = get_tensor(m, r, "final_norm_w", 1, sn, &m->final_norm_w))) return rc;
        if (gpt2 && (rc = get_tensor(m, r, "final_norm_b", 1, sn, &m->final_norm_b))) return rc;
        if ((rc = get_tensor(m, r, "classifier", 2, sc, &m->classifier))) return rc;
        expected += gpt2 ? 3 : 2;
    }
    if (sl_st_count(r) != expected) { /* every expected one is there and names are unique: extras */
        for (size_t i = 0; i < sl_st_count(r); i++) {
            const char *n = sl_st_tensor_at(r, i)->t_name;
            if (!expected_name(m, n))
                return sl_fail(SL_EFORMAT, "%s: tensor '%s' does not belong in this part: its metadata says it holds "
                               "blocks [%d,%d) %s of a %d-block %s model", path, n, m->part_layer_begin,
                               m->part_layer_end, holds_text(m->part_has_embedding, m->part_has_head), L,
                               sl_arch_name(c->arch));
        }
        return sl_fail(SL_EFORMAT, "%s: %zu tensors, expected %zu", path, sl_st_count(r), expected); /* unreachable */
    }
    return SL_OK;
}
