/* model.c: see model.h. The two loaders check the header, every size against the file
 * length (with overflow checks), and point the weight struct into the mapping. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/part.h"
#include "util/safetensors.h"

/* Upper bounds that keep all size arithmetic far from overflow and reject garbage headers. */
#define MAX_DIM (1 << 16)
#define MAX_LAYERS 1024
#define MAX_VOCAB (1 << 22)
#define MAX_SEQ (1 << 20)

const char *sl_arch_name(sl_arch a) { return a == SL_ARCH_GPT2 ? "gpt2" : a == SL_ARCH_LLAMA ? "llama" : "?"; }

int sl_arch_parse(const char *name, sl_arch *out) {
    if (strcmp(name, "gpt2") == 0) *out = SL_ARCH_GPT2;
    else if (strcmp(name, "llama") == 0) *out = SL_ARCH_LLAMA;
    else return sl_fail(SL_EINVAL, "--arch: expected gpt2 or llama, got '%s'", name);
    return SL_OK;
}

static int check_range(const char *what, const char *field, long v, long lo, long hi) {
    if (v < lo || v > hi)
        return sl_fail(SL_EFORMAT, "%s: %s = %ld, expected a value in [%ld, %ld]", what, field, v, lo, hi);
    return SL_OK;
}

int sl_config_validate(const sl_config *c, const char *what) {
    int rc;
    if ((rc = check_range(what, "n_layers", c->n_layers, 1, MAX_LAYERS))) return rc;
    if ((rc = check_range(what, "dim", c->dim, 1, MAX_DIM))) return rc;
    if ((rc = check_range(what, "hidden_dim", c->hidden_dim, 1, 16 * MAX_DIM))) return rc;
    if ((rc = check_range(what, "n_heads", c->n_heads, 1, c->dim))) return rc;
    if ((rc = check_range(what, "n_kv_heads", c->n_kv_heads, 1, c->n_heads))) return rc;
    if ((rc = check_range(what, "vocab_size", c->vocab_size, 1, MAX_VOCAB))) return rc;
    if ((rc = check_range(what, "padded_vocab_size", c->padded_vocab_size, c->vocab_size, MAX_VOCAB))) return rc;
    if ((rc = check_range(what, "max_seq", c->max_seq, 1, MAX_SEQ))) return rc;
    if (c->dim % c->n_heads != 0)
        return sl_fail(SL_EFORMAT, "%s: dim %d is not a multiple of n_heads %d", what, c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return sl_fail(SL_EFORMAT, "%s: n_heads %d is not a multiple of n_kv_heads %d", what, c->n_heads,
                       c->n_kv_heads);
    if (c->arch == SL_ARCH_LLAMA && (c->dim / c->n_heads) % 2 != 0)
        return sl_fail(SL_EFORMAT, "%s: head size %d must be even for rotary embeddings", what,
                       c->dim / c->n_heads);
    return SL_OK;
}

int sl_config_file_floats(const sl_config *c, size_t *out) {
    /* Bounds from sl_config_validate keep every product below 2^62. */
    size_t L = (size_t)c->n_layers, C = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)sl_config_kv_dim(c), Vp = (size_t)c->padded_vocab_size, V = (size_t)c->vocab_size;
    size_t T = (size_t)c->max_seq;
    if (c->arch == SL_ARCH_GPT2) {
        *out = Vp * C + T * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + H * C + H + C * H + C) + 2 * C;
    } else {
        size_t hs = C / (size_t)c->n_heads;
        *out = V * C + L * C + L * C * C + 2 * L * KV * C + L * C * C + L * C + 3 * L * H * C + C + T * hs +
               (c->shared_classifier ? 0 : V * C);
    }
    return SL_OK;
}

static int setup_rope(sl_model *m) {
    const sl_config *c = &m->config;
    int hs = sl_config_head_size(c);
    size_t n = (size_t)c->max_seq * (size_t)(hs / 2);
    m->rope_cos = sl_alloc(n * sizeof(float));
    m->rope_sin = sl_alloc(n * sizeof(float));
    if (m->rope_cos == NULL || m->rope_sin == NULL) return SL_ENOMEM;
    rope_table(m->rope_cos, m->rope_sin, c->max_seq, hs, SL_ROPE_THETA);
    return SL_OK;
}

static int load_gpt2(sl_model *m, const int32_t *hdr) {
    const char *path = m->file.m_path;
    if (hdr[1] != SL_GPT2_VERSION_FP32)
        return sl_fail(SL_EFORMAT, "%s: llm.c checkpoint version %d, expected %d (float32)%s", path, hdr[1],
                       SL_GPT2_VERSION_FP32, hdr[1] == 5 ? "; version 5 is bfloat16, not supported" : "");
    sl_config *c = &m->config;
    c->arch = SL_ARCH_GPT2;
    c->max_seq = hdr[2];
    c->vocab_size = hdr[3];
    c->n_layers = hdr[4];
    c->n_heads = hdr[5];
    c->n_kv_heads = hdr[5];
    c->dim = hdr[6];
    c->padded_vocab_size = hdr[7];
    c->shared_classifier = 1;
    if (c->dim > 0 && c->dim <= MAX_DIM) c->hidden_dim = 4 * c->dim;
    int rc = sl_config_validate(c, path);
    if (rc) return rc;
    size_t floats;
    sl_config_file_floats(c, &floats);
    size_t expect = SL_GPT2_HEADER_INTS * sizeof(int32_t) + floats * sizeof(float);
    if (m->file.m_bytes != expect)
        return sl_fail(SL_EFORMAT, "%s: file is %zu bytes, expected %zu for the header's configuration "
                       "(L=%d C=%d NH=%d V=%d Vp=%d maxT=%d)%s", path, m->file.m_bytes, expect, c->n_layers,
                       c->dim, c->n_heads, c->vocab_size, c->padded_vocab_size, c->max_seq,
                       m->file.m_bytes < expect ? ": truncated" : "");
    size_t L = (size_t)c->n_layers, C = (size_t)c->dim, H = (size_t)c->hidden_dim;
    const float *p = (const float *)((const char *)m->file.m_data + SL_GPT2_HEADER_INTS * sizeof(int32_t));
    m->tok_emb = p; p += (size_t)c->padded_vocab_size * C;
    m->pos_emb = p; p += (size_t)c->max_seq * C;
    const float *ln1w = p; p += L * C;
    const float *ln1b = p; p += L * C;
    const float *qkvw = p; p += L * 3 * C * C;
    const float *qkvb = p; p += L * 3 * C;
    const float *projw = p; p += L * C * C;
    const float *projb = p; p += L * C;
    const float *ln2w = p; p += L * C;
    const float *ln2b = p; p += L * C;
    const float *fcw = p; p += L * H * C;
    const float *fcb = p; p += L * H;
    const float *fcprojw = p; p += L * C * H;
    const float *fcprojb = p; p += L * C;
    m->final_norm_w = p; p += C;
    m->final_norm_b = p; p += C;
    m->classifier = m->tok_emb;
    m->layers = sl_alloc(L * sizeof(sl_layer_weights));
    if (m->layers == NULL) return SL_ENOMEM;
    for (size_t l = 0; l < L; l++) {
        sl_layer_weights *w = &m->layers[l];
        w->norm1_w = ln1w + l * C;
        w->norm1_b = ln1b + l * C;
        w->wq = qkvw + l * 3 * C * C;
        w->wk = w->wq + C * C;
        w->wv = w->wk + C * C;
        w->bq = qkvb + l * 3 * C;
        w->bk = w->bq + C;
        w->bv = w->bk + C;
        w->wo = projw + l * C * C;
        w->bo = projb + l * C;
        w->norm2_w = ln2w + l * C;
        w->norm2_b = ln2b + l * C;
        w->w_up = fcw + l * H * C;
        w->b_up = fcb + l * H;
        w->w_down = fcprojw + l * C * H;
        w->b_down = fcprojb + l * C;
    }
    return SL_OK;
}

static int load_llama(sl_model *m, const int32_t *hdr) {
    const char *path = m->file.m_path;
    sl_config *c = &m->config;
    c->arch = SL_ARCH_LLAMA;
    c->dim = hdr[0];
    c->hidden_dim = hdr[1];
    c->n_layers = hdr[2];
    c->n_heads = hdr[3];
    c->n_kv_heads = hdr[4];
    if (hdr[5] == 0 || hdr[5] < -MAX_VOCAB || hdr[5] > MAX_VOCAB) /* report the field as the file has it */
        return sl_fail(SL_EFORMAT, "%s: vocab_size = %d, expected a value in [1, %d] (negated: separate classifier)",
                       path, hdr[5], MAX_VOCAB);
    c->shared_classifier = hdr[5] > 0;
    c->vocab_size = hdr[5] > 0 ? hdr[5] : -hdr[5];
    c->padded_vocab_size = c->vocab_size;
    c->max_seq = hdr[6];
    int rc = sl_config_validate(c, path);
    if (rc) return rc;
    size_t floats;
    sl_config_file_floats(c, &floats);
    size_t expect = SL_LLAMA_HEADER_INTS * sizeof(int32_t) + floats * sizeof(float);
    if (m->file.m_bytes != expect)
        return sl_fail(SL_EFORMAT, "%s: file is %zu bytes, expected %zu for the header's configuration "
                       "(dim=%d hidden=%d L=%d NH=%d NKV=%d V=%d%s seq=%d)%s", path, m->file.m_bytes, expect,
                       c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                       c->shared_classifier ? "" : " unshared", c->max_seq,
                       m->file.m_bytes < expect ? ": truncated" : "");
    size_t L = (size_t)c->n_layers, C = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)sl_config_kv_dim(c), hs = C / (size_t)c->n_heads;
    const float *p = (const float *)((const char *)m->file.m_data + SL_LLAMA_HEADER_INTS * sizeof(int32_t));
    m->tok_emb = p; p += (size_t)c->vocab_size * C;
    const float *rms_att = p; p += L * C;
    const float *wq = p; p += L * C * C;
    const float *wk = p; p += L * KV * C;
    const float *wv = p; p += L * KV * C;
    const float *wo = p; p += L * C * C;
    const float *rms_ffn = p; p += L * C;
    const float *w1 = p; p += L * H * C;
    const float *w2 = p; p += L * C * H;
    const float *w3 = p; p += L * H * C;
    m->final_norm_w = p; p += C;
    p += (size_t)c->max_seq * hs; /* freq_cis_real and _imag: unused, recomputed as run.c does */
    m->classifier = c->shared_classifier ? m->tok_emb : p;
    m->layers = sl_alloc(L * sizeof(sl_layer_weights));
    if (m->layers == NULL) return SL_ENOMEM;
    for (size_t l = 0; l < L; l++) {
        sl_layer_weights *w = &m->layers[l];
        w->norm1_w = rms_att + l * C;
        w->wq = wq + l * C * C;
        w->wk = wk + l * KV * C;
        w->wv = wv + l * KV * C;
        w->wo = wo + l * C * C;
        w->norm2_w = rms_ffn + l * C;
        w->w_gate = w1 + l * H * C;
        w->w_down = w2 + l * C * H;
        w->w_up = w3 + l * H * C;
    }
    return setup_rope(m);
}

/* A safetensors file's opening: little-endian u64 header length that fits the file, then '{'. */
static int looks_like_safetensors(const sl_mapped_file *f) {
    if (f->m_bytes < 9) return 0;
    uint64_t n;
    memcpy(&n, f->m_data, sizeof(n));
    return n >= 2 && n <= f->m_bytes - 8 && ((const char *)f->m_data)[8] == '{';
}

/* A model part (part.h). Returns 1 and sets *rc when the file is one; 0 otherwise, with a
 * note on what the safetensors file was, for the message should the other formats fail. */
static int load_part(sl_model *m, int *rc, char *note, size_t note_bytes) {
    sl_st_reader *r;
    int st = sl_st_open(&r, m->file.m_path);
    if (st) {
        snprintf(note, note_bytes, "it looks like safetensors but does not open as such: %s", sl_last_error());
        return 0;
    }
    const char *format = sl_st_metadata(r, "format");
    if (format == NULL || strcmp(format, SL_PART_FORMAT) != 0) {
        snprintf(note, note_bytes, "it is a safetensors file whose metadata 'format' is %s%s%s, not '%s'",
                 format ? "'" : "", format ? format : "missing", format ? "'" : "", SL_PART_FORMAT);
        sl_st_close(r);
        return 0;
    }
    m->part_reader = r;
    *rc = sl_model_part_fill(m, r);
    if (*rc == 0 && m->config.arch == SL_ARCH_LLAMA) *rc = setup_rope(m);
    return 1;
}

int sl_model_load(sl_model *m, const char *path) {
    memset(m, 0, sizeof(*m));
    int rc = sl_map_file(&m->file, path);
    if (rc) return rc;
    char st_note[1200] = "";
    if (looks_like_safetensors(&m->file) && load_part(m, &rc, st_note, sizeof(st_note))) {
        if (rc) sl_model_free(m);
        return rc;
    }
    const int32_t *hdr = m->file.m_data;
    if (m->file.m_bytes >= sizeof(int32_t) && m->file.m_bytes < SL_GPT2_HEADER_INTS * sizeof(int32_t) &&
        hdr[0] == SL_GPT2_MAGIC) { /* not a llama2.c file either: its dim would be out of range */
        rc = sl_fail(SL_EFORMAT, "%s: %zu bytes, but an llm.c checkpoint (magic %d) needs at least its %zu-byte "
                     "header: truncated", path, m->file.m_bytes, SL_GPT2_MAGIC,
                     (size_t)SL_GPT2_HEADER_INTS * sizeof(int32_t));
    } else if (m->file.m_bytes >= SL_GPT2_HEADER_INTS * sizeof(int32_t) && hdr[0] == SL_GPT2_MAGIC) {
        rc = load_gpt2(m, hdr);
    } else if (m->file.m_bytes >= SL_LLAMA_HEADER_INTS * sizeof(int32_t)) {
        rc = load_llama(m, hdr);
        if (rc == SL_EFORMAT && hdr[0] != SL_GPT2_MAGIC) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", sl_last_error());
            rc = sl_fail(rc, "%s (not an llm.c checkpoint: magic %d, expected %d; read as a llama2.c .bin)", msg,
                         hdr[0], SL_GPT2_MAGIC);
        }
    } else {
        rc = sl_fail(SL_EFORMAT, "%s: %zu bytes is too short for a model header (llm.c: %zu bytes, llama2.c: %zu)",
                     path, m->file.m_bytes, (size_t)SL_GPT2_HEADER_INTS * 4, (size_t)SL_LLAMA_HEADER_INTS * 4);
    }
    if (rc && st_note[0] != '\0') {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", sl_last_error());
        rc = sl_fail(rc, "%s (%s)", msg, st_note);
    }
    if (rc) sl_model_free(m);
    else {
        m->part_layer_begin = 0;
        m->part_layer_end = m->config.n_layers;
        m->part_has_embedding = 1;
        m->part_has_head = 1;
    }
    return rc;
}

int sl_model_check_covers(const sl_model *m, int begin, int end, int embedding, int head) {
    const int L = m->config.n_layers;
    if (begin < 0 || end > L || begin > end)
        return sl_fail(SL_EINVAL, "blocks [%d,%d) are outside the model's %d blocks (%s)", begin, end, L,
                       m->file.m_path);
    if (begin >= m->part_layer_begin && end <= m->part_layer_end && (!embedding || m->part_has_embedding) &&
        (!head || m->part_has_head))
        return SL_OK;
    const int he = m->part_has_embedding, hh = m->part_has_head;
    return sl_fail(SL_EINVAL, "model part %s holds blocks [%d,%d) %s; the segment needs blocks [%d,%d)%s%s%s",
                   m->file.m_path, m->part_layer_begin, m->part_layer_end,
                   he && hh ? "with the embedding and the head" : he ? "with the embedding, without the head"
                   : hh ? "without the embedding, with the head" : "without the embedding or the head",
                   begin, end, embedding || head ? " with the " : "",
                   embedding ? (head ? "embedding and the head" : "embedding") : "", !embedding && head ? "head" : "");
}

void sl_model_free(sl_model *m) {
    sl_st_close(m->part_reader);
    sl_free(m->layers);
    sl_free(m->rope_cos);
    sl_free(m->rope_sin);
    sl_unmap_file(&m->file);
    memset(m, 0, sizeof(*m));
}

int sl_config_preset(sl_config *c, sl_arch arch, const char *preset) {
    memset(c, 0, sizeof(*c));
    c->arch = arch;
    c->shared_classifier = 1;
    if (strcmp(preset, "tiny") == 0) {
        c->n_layers = 4; c->dim = 64; c->n_heads = 4; c->vocab_size = 512; c->max_seq = 128;
        c->n_kv_heads = arch == SL_ARCH_LLAMA ? 2 : 4;
        c->hidden_dim = arch == SL_ARCH_LLAMA ? 172 : 256;
    } else if (strcmp(preset, "124M") == 0) {
        /* GPT-2 small; the Llama preset is the same width and depth with Llama's blocks. */
        c->n_layers = 12; c->dim = 768; c->n_heads = 12; c->n_kv_heads = 12; c->max_seq = 1024;
        c->vocab_size = arch == SL_ARCH_GPT2 ? 50257 : 32000;
        c->hidden_dim = arch == SL_ARCH_GPT2 ? 3072 : 2048;
    } else {
        return sl_fail(SL_EINVAL, "--preset: expected tiny or 124M, got '%s'", preset);
    }
    c->padded_vocab_size = c->vocab_size;
    if (arch == SL_ARCH_GPT2) { /* llm.c pads the vocabulary to a multiple of 128 */
        c->padded_vocab_size = (c->vocab_size + 127) / 128 * 128;
    }
    return SL_OK;
}

/* Fills n floats: N(0, std) when std > 0, else the constant -std (1 for norms, 0 for biases). */
static void fill(float *p, size_t n, float std, sl_rng *rng) {
    for (size_t i = 0; i < n; i++) p[i] = std > 0.0f ? std * sl_rng_normal(rng) : -std;
}

#define INIT_STD 0.02f

int sl_model_write_random(const sl_config *cfg, uint64_t seed, const char *path) {
    sl_config c = *cfg;
    if (c.arch == SL_ARCH_GPT2) {
        c.hidden_dim = c.dim > 0 && c.dim <= MAX_DIM ? 4 * c.dim : 0; /* else validate names dim; no int overflow */
        c.n_kv_heads = c.n_heads;
        c.shared_classifier = 1;
    } else {
        c.padded_vocab_size = c.vocab_size;
    }
    int rc = sl_config_validate(&c, "init-model");
    if (rc) return rc;
    size_t floats;
    sl_config_file_floats(&c, &floats);
    size_t bytes;
    if (sl_mul_size(floats, sizeof(float), &bytes)) return sl_fail(SL_EINVAL, "init-model: model too large");
    float *w = sl_alloc(bytes);
    if (w == NULL) return SL_ENOMEM;
    size_t L = (size_t)c.n_layers, C = (size_t)c.dim, H = (size_t)c.hidden_dim, KV = (size_t)sl_config_kv_dim(&c);
    const float resid_std = INIT_STD / sqrtf(2.0f * (float)L);
    sl_rng rng;
    sl_rng_init(&rng, seed, 0);
    float *p = w;
#define FILL(n, std) do { fill(p, (n), (std), &rng); p += (n); } while (0)
    int32_t hdr[SL_GPT2_HEADER_INTS];
    memset(hdr, 0, sizeof(hdr));
    size_t hdr_bytes;
    if (c.arch == SL_ARCH_GPT2) {
        hdr[0] = SL_GPT2_MAGIC; hdr[1] = SL_GPT2_VERSION_FP32; hdr[2] = c.max_seq; hdr[3] = c.vocab_size;
        hdr[4] = c.n_layers; hdr[5] = c.n_heads; hdr[6] = c.dim; hdr[7] = c.padded_vocab_size;
        hdr_bytes = SL_GPT2_HEADER_INTS * sizeof(int32_t);
        FILL((size_t)c.vocab_size * C, INIT_STD);
        p += (size_t)(c.padded_vocab_size - c.vocab_size) * C; /* padding rows stay zero, as in llm.c */
        FILL((size_t)c.max_seq * C, INIT_STD);
        FILL(L * C, -1.0f); FILL(L * C, -0.0f);                  /* ln1 */
        FILL(L * 3 * C * C, INIT_STD); FILL(L * 3 * C, -0.0f);   /* qkv */
        FILL(L * C * C, resid_std); FILL(L * C, -0.0f);          /* attn proj */
        FILL(L * C, -1.0f); FILL(L * C, -0.0f);                  /* ln2 */
        FILL(L * H * C, INIT_STD); FILL(L * H, -0.0f);           /* fc */
        FILL(L * C * H, resid_std); FILL(L * C, -0.0f);          /* fc proj */
        FILL(C, -1.0f); FILL(C, -0.0f);                          /* ln_f */
    } else {
        hdr[0] = c.dim; hdr[1] = c.hidden_dim; hdr[2] = c.n_layers; hdr[3] = c.n_heads; hdr[4] = c.n_kv_heads;
        hdr[5] = c.shared_classifier ? c.vocab_size : -c.vocab_size; hdr[6] = c.max_seq;
        hdr_bytes = SL_LLAMA_HEADER_INTS * sizeof(int32_t);
        size_t hs = C / (size_t)c.n_heads;
        FILL((size_t)c.vocab_size * C, INIT_STD);
        FILL(L * C, -1.0f);
        FILL(L * C * C, INIT_STD); FILL(L * KV * C, INIT_STD); FILL(L * KV * C, INIT_STD);
        FILL(L * C * C, resid_std);
        FILL(L * C, -1.0f);
        FILL(L * H * C, INIT_STD); FILL(L * C * H, resid_std); FILL(L * H * C, INIT_STD);
        FILL(C, -1.0f);
        /* freq_cis tables, as llama2.c's export writes them */
        for (size_t t = 0; t < (size_t)c.max_seq; t++)
            for (size_t i = 0; i < hs / 2; i++)
                p[t * (hs / 2) + i] = cosf((float)t / powf(SL_ROPE_THETA, (float)(2 * i) / (float)hs));
        p += (size_t)c.max_seq * (hs / 2);
        for (size_t t = 0; t < (size_t)c.max_seq; t++)
            for (size_t i = 0; i < hs / 2; i++)
                p[t * (hs / 2) + i] = sinf((float)t / powf(SL_ROPE_THETA, (float)(2 * i) / (float)hs));
        p += (size_t)c.max_seq * (hs / 2);
        if (!c.shared_classifier) FILL((size_t)c.vocab_size * C, INIT_STD);
    }
#undef FILL
    sl_atomic_file af;
    rc = sl_atomic_open(&af, path);
    if (rc == 0) rc = sl_atomic_write(&af, hdr, hdr_bytes);
    if (rc == 0) rc = sl_atomic_write(&af, w, bytes);
    if (rc == 0) rc = sl_atomic_commit(&af);
    else sl_atomic_abort(&af);
    sl_free(w);
    return rc;
}

size_t sl_model_resident_bytes(const sl_model *m) {
    if (m->part_reader != NULL) {
        const void *data;
        size_t bytes;
        sl_st_mapping(m->part_reader, &data, &bytes);
        return sl_resident_bytes(data, bytes);
    }
    return sl_resident_bytes(m->file.m_data, m->file.m_bytes);
}
