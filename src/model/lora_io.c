/* lora_io.c: adapter files (safetensors), see lora.h for the format. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/lora.h"
#include "util/safetensors.h"

#define LORA_FORMAT "splitllm-lora"
#define LORA_FORMAT_VERSION "1"

int sl_lora_save(const sl_lora *l, const char *path) {
    sl_st_writer *w;
    int rc = sl_st_writer_create(&w);
    if (rc) return rc;
    char name[96], buf[128];
    for (int layer = l->layer_begin; layer < l->layer_end && rc == 0; layer++) {
        for (int t = 0; t < SL_LORA_N_TARGETS && rc == 0; t++) {
            if (!(l->config.targets & (1u << t))) continue;
            int64_t sa[2] = {l->config.rank, l->in_dim[t]}, sb[2] = {l->out_dim[t], l->config.rank};
            snprintf(name, sizeof(name), "lora.%d.%s.A", layer, sl_lora_target_name(t));
            rc = sl_st_writer_add(w, name, SL_ST_F32, 2, sa, sl_lora_A(l, layer, t));
            snprintf(name, sizeof(name), "lora.%d.%s.B", layer, sl_lora_target_name(t));
            if (rc == 0) rc = sl_st_writer_add(w, name, SL_ST_F32, 2, sb, sl_lora_B(l, layer, t));
        }
    }
    const sl_config *mc = &l->model_config;
    struct { const char *key; char value[128]; } meta[] = {
        {"format", LORA_FORMAT}, {"version", LORA_FORMAT_VERSION}, {"arch", ""}, {"n_layers", ""}, {"dim", ""},
        {"rank", ""}, {"alpha", ""}, {"targets", ""}, {"layer_begin", ""}, {"layer_end", ""},
    };
    snprintf(meta[2].value, sizeof(meta[2].value), "%s", sl_arch_name(mc->arch));
    snprintf(meta[3].value, sizeof(meta[3].value), "%d", mc->n_layers);
    snprintf(meta[4].value, sizeof(meta[4].value), "%d", mc->dim);
    snprintf(meta[5].value, sizeof(meta[5].value), "%d", l->config.rank);
    snprintf(meta[6].value, sizeof(meta[6].value), "%.9g", l->config.alpha);
    sl_lora_format_targets(l->config.targets, buf, sizeof(buf));
    snprintf(meta[7].value, sizeof(meta[7].value), "%s", buf);
    snprintf(meta[8].value, sizeof(meta[8].value), "%d", l->layer_begin);
    snprintf(meta[9].value, sizeof(meta[9].value), "%d", l->layer_end);
    for (size_t i = 0; i < sizeof(meta) / sizeof(meta[0]) && rc == 0; i++)
        rc = sl_st_writer_set_metadata(w, meta[i].key, meta[i].value);
    if (rc == 0) rc = sl_st_writer_write(w, path);
    sl_st_writer_free(w);
    return rc;
}

static int meta_int(const sl_st_reader *r, const char *key, int *out) {
    const char *v = sl_st_metadata(r, key);
    char *end = NULL;
    if (v == NULL) return sl_fail(SL_EFORMAT, "%s: metadata '%s' is missing", sl_st_path(r), key);
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < 0 || x > 1 << 20)
        return sl_fail(SL_EFORMAT, "%s: metadata '%s' = '%s', expected a small non-negative integer", sl_st_path(r),
                       key, v);
    *out = (int)x;
    return SL_OK;
}

/* Reads the adapter configuration recorded in an open file and checks it fits mc. */
static int read_header(const sl_st_reader *r, const sl_config *mc, sl_lora_config *lc, int *begin, int *end) {
    const char *path = sl_st_path(r);
    const char *fmt = sl_st_metadata(r, "format");
    if (fmt == NULL || strcmp(fmt, LORA_FORMAT) != 0)
        return sl_fail(SL_EFORMAT, "%s: metadata format = '%s', expected '%s'", path, fmt ? fmt : "(missing)",
                       LORA_FORMAT);
    const char *arch = sl_st_metadata(r, "arch");
    if (arch == NULL || strcmp(arch, sl_arch_name(mc->arch)) != 0)
        return sl_fail(SL_EFORMAT, "%s: adapter for a '%s' model, but the model is '%s'", path, arch ? arch : "?",
                       sl_arch_name(mc->arch));
    int n_layers, dim, rc;
    if ((rc = meta_int(r, "n_layers", &n_layers)) || (rc = meta_int(r, "dim", &dim)) ||
        (rc = meta_int(r, "rank", &lc->rank)) || (rc = meta_int(r, "layer_begin", begin)) ||
        (rc = meta_int(r, "layer_end", end)))
        return rc;
    if (n_layers != mc->n_layers || dim != mc->dim)
        return sl_fail(SL_EFORMAT, "%s: adapter for %d blocks of width %d, but the model has %d blocks of width %d",
                       path, n_layers, dim, mc->n_layers, mc->dim);
    if (lc->rank < 1 || *begin > *end || *end > mc->n_layers)
        return sl_fail(SL_EFORMAT, "%s: metadata rank = %d, layer_begin = %d, layer_end = %d; expected rank >= 1 and "
                       "0 <= layer_begin <= layer_end <= %d", path, lc->rank, *begin, *end, mc->n_layers);
    const char *alpha = sl_st_metadata(r, "alpha"), *targets = sl_st_metadata(r, "targets");
    if (alpha == NULL || targets == NULL)
        return sl_fail(SL_EFORMAT, "%s: metadata 'alpha' or 'targets' is missing", path);
    char *alpha_end = NULL;
    lc->alpha = strtof(alpha, &alpha_end);
    if (alpha_end == alpha || *alpha_end != '\0' || !(lc->alpha > 0.0f) || isinf(lc->alpha))
        return sl_fail(SL_EFORMAT, "%s: metadata 'alpha' = '%s', expected a finite number > 0", path, alpha);
    if ((rc = sl_lora_parse_targets(targets, mc->arch, &lc->targets))) { /* its message speaks of the option */
        char why[512];
        snprintf(why, sizeof(why), "%s", sl_last_error());
        return sl_fail(SL_EFORMAT, "%s: metadata 'targets' = '%s': %s", path, targets, why);
    }
    return SL_OK;
}

static int copy_or_check_tensors(sl_lora *l, const sl_st_reader *r, int begin, int end, int copy) {
    char name[96];
    int from = begin > l->layer_begin ? begin : l->layer_begin;
    int to = end < l->layer_end ? end : l->layer_end;
    for (int layer = from; layer < to; layer++) {
        for (int t = 0; t < SL_LORA_N_TARGETS; t++) {
            if (!(l->config.targets & (1u << t))) continue;
            const sl_st_tensor *ta, *tb;
            int64_t sa[2] = {l->config.rank, l->in_dim[t]}, sb[2] = {l->out_dim[t], l->config.rank};
            int rc;
            snprintf(name, sizeof(name), "lora.%d.%s.A", layer, sl_lora_target_name(t));
            if ((rc = sl_st_get(r, name, SL_ST_F32, 2, sa, &ta))) return rc;
            snprintf(name, sizeof(name), "lora.%d.%s.B", layer, sl_lora_target_name(t));
            if ((rc = sl_st_get(r, name, SL_ST_F32, 2, sb, &tb))) return rc;
            if (!copy) continue;
            memcpy(sl_lora_A(l, layer, t), ta->t_data, ta->t_bytes);
            memcpy(sl_lora_B(l, layer, t), tb->t_data, tb->t_bytes);
        }
    }
    return SL_OK;
}

/* Checks every tensor of the shared blocks first and copies only if all are right, so a
 * failed load leaves l as it was. */
static int copy_tensors(sl_lora *l, const sl_st_reader *r, int begin, int end) {
    int rc = 0;
    for (int copy = 0; copy < 2 && rc == 0; copy++) rc = copy_or_check_tensors(l, r, begin, end, copy);
    return rc;
}

int sl_lora_load(sl_lora *l, const char *path) {
    sl_st_reader *r;
    int rc = sl_st_open(&r, path);
    if (rc) return rc;
    sl_lora_config lc = l->config;
    int begin, end;
    rc = read_header(r, &l->model_config, &lc, &begin, &end);
    if (rc == 0 && (lc.rank != l->config.rank || lc.targets != l->config.targets || lc.alpha != l->config.alpha)) {
        char want[128], got[128];
        sl_lora_format_targets(l->config.targets, want, sizeof(want));
        sl_lora_format_targets(lc.targets, got, sizeof(got));
        rc = sl_fail(SL_EFORMAT, "%s: adapter has rank %d, alpha %g, targets %s; expected rank %d, alpha %g, targets %s",
                     path, lc.rank, lc.alpha, got, l->config.rank, l->config.alpha, want);
    }
    if (rc == 0) rc = copy_tensors(l, r, begin, end);
    sl_st_close(r);
    return rc;
}

int sl_lora_open(sl_lora *l, const sl_config *mc, const char *path) {
    memset(l, 0, sizeof(*l)); /* so that a failed open leaves an adapter sl_lora_free accepts */
    sl_st_reader *r;
    int rc = sl_st_open(&r, path);
    if (rc) return rc;
    sl_lora_config lc = {0};
    int begin, end;
    rc = read_header(r, mc, &lc, &begin, &end);
    if (rc == 0) rc = sl_lora_init(l, mc, &lc, begin, end);
    if (rc == 0) {
        rc = copy_tensors(l, r, begin, end);
        if (rc) sl_lora_free(l);
    }
    sl_st_close(r);
    return rc;
}
