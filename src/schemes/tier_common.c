/* tier_common.c: see tier_common.h. */
#include "schemes/tier_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "util/common.h"

void sl_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void hex_of(const uint8_t d[SL_SHA256_BYTES], char out[65]) { sl_sha256_hex(d, out); }

static int unhex(const char *s, uint8_t out[SL_SHA256_BYTES]) {
    if (s == NULL || strlen(s) != 2 * SL_SHA256_BYTES) return -1;
    for (int i = 0; i < SL_SHA256_BYTES; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

int sl_tier_config_to_json(const sl_tier_config *c, char **out) {
    cJSON *j = cJSON_CreateObject();
    char targets[128], hex[65];
    cJSON_AddStringToObject(j, "scheme", c->scheme);
    char codec[64];
    sl_codec_format(&c->compress, codec, sizeof(codec));
    cJSON_AddStringToObject(j, "compress", codec);
    cJSON_AddNumberToObject(j, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "dim", c->dim);
    cJSON_AddNumberToObject(j, "cut1", c->cut1);
    cJSON_AddNumberToObject(j, "cut2", c->cut2);
    cJSON_AddNumberToObject(j, "batch", c->batch);
    cJSON_AddNumberToObject(j, "seq", c->seq);
    cJSON_AddNumberToObject(j, "packing", c->packing);
    cJSON_AddNumberToObject(j, "rounds", c->rounds);
    cJSON_AddNumberToObject(j, "local_steps", c->local_steps);
    char seed[32];
    snprintf(seed, sizeof(seed), "%llu", (unsigned long long)c->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "lora_rank", c->lora.rank);
    cJSON_AddNumberToObject(j, "lora_alpha", c->lora.alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", c->lora.dropout);
    sl_lora_format_targets(c->lora.targets, targets, sizeof(targets));
    cJSON_AddStringToObject(j, "lora_targets", targets);
    snprintf(seed, sizeof(seed), "%llu", (unsigned long long)c->lora.seed);
    cJSON_AddStringToObject(j, "lora_seed", seed);
    cJSON_AddNumberToObject(j, "lr", c->optim.lr);
    cJSON_AddNumberToObject(j, "beta1", c->optim.beta1);
    cJSON_AddNumberToObject(j, "beta2", c->optim.beta2);
    cJSON_AddNumberToObject(j, "eps", c->optim.eps);
    cJSON_AddNumberToObject(j, "weight_decay", c->optim.weight_decay);
    cJSON_AddNumberToObject(j, "grad_clip", c->optim.grad_clip);
    cJSON_AddNumberToObject(j, "warmup_steps", c->optim.warmup_steps);
    cJSON_AddNumberToObject(j, "total_steps", c->optim.total_steps);
    cJSON_AddNumberToObject(j, "min_lr_ratio", c->optim.min_lr_ratio);
    hex_of(c->edge_part_sha256, hex);
    cJSON_AddStringToObject(j, "edge_part_sha256", hex);
    cJSON_AddNumberToObject(j, "edge_part_bytes", (double)c->edge_part_bytes);
    hex_of(c->user_part_sha256, hex);
    cJSON_AddStringToObject(j, "user_part_sha256", hex);
    cJSON_AddNumberToObject(j, "user_part_bytes", (double)c->user_part_bytes);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (text == NULL) return sl_fail(SL_ENOMEM, "tier configuration: out of memory");
    size_t n = strlen(text);
    *out = sl_alloc(n + 1);
    if (*out) memcpy(*out, text, n + 1);
    free(text);
    return *out ? SL_OK : SL_ENOMEM;
}

/* Reads number field name of j into *out; a missing or non-number field is an error. */
static int num(const cJSON *j, const char *name, const char *from, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsNumber(v)) return sl_fail(SL_EFORMAT, "%s: configuration field '%s' missing or not a number", from, name);
    *out = v->valuedouble;
    return SL_OK;
}

static int text_field(const cJSON *j, const char *name, const char *from, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsString(v)) return sl_fail(SL_EFORMAT, "%s: configuration field '%s' missing or not a string", from, name);
    *out = v->valuestring;
    return SL_OK;
}

int sl_tier_config_from_json(const char *text, size_t bytes, const char *from, sl_tier_config *out) {
    memset(out, 0, sizeof(*out));
    cJSON *j = cJSON_ParseWithLength(text, bytes);
    if (j == NULL || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return sl_fail(SL_EFORMAT, "%s: the configuration is not a JSON object", from);
    }
    double v[24];
    const char *names[] = {"n_layers", "dim", "cut1", "cut2", "batch", "seq", "packing", "rounds", "local_steps",
                           "lora_rank", "lora_alpha", "lora_dropout", "lr", "beta1", "beta2", "eps", "weight_decay",
                           "grad_clip", "warmup_steps", "total_steps", "min_lr_ratio", "edge_part_bytes",
                           "user_part_bytes"};
    int rc = SL_OK;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && rc == 0; i++) rc = num(j, names[i], from, &v[i]);
    const char *seed = NULL, *lora_seed = NULL, *targets = NULL, *edge_sha = NULL, *user_sha = NULL, *scheme = NULL;
    if (rc == 0) rc = text_field(j, "scheme", from, &scheme);
    if (rc == 0 && strlen(scheme) >= sizeof(out->scheme))
        rc = sl_fail(SL_EFORMAT, "%s: configuration field 'scheme' = '%s' is too long", from, scheme);
    if (rc == 0) snprintf(out->scheme, sizeof(out->scheme), "%s", scheme);
    const char *compress = NULL;
    if (rc == 0) rc = text_field(j, "compress", from, &compress);
    if (rc == 0) rc = sl_codec_parse(compress, &out->compress);
    if (rc == 0) rc = text_field(j, "seed", from, &seed);
    if (rc == 0) rc = text_field(j, "lora_seed", from, &lora_seed);
    if (rc == 0) rc = text_field(j, "lora_targets", from, &targets);
    if (rc == 0) rc = text_field(j, "edge_part_sha256", from, &edge_sha);
    if (rc == 0) rc = text_field(j, "user_part_sha256", from, &user_sha);
    if (rc == 0) {
        out->n_layers = (int)v[0];
        out->dim = (int)v[1];
        out->cut1 = (int)v[2];
        out->cut2 = (int)v[3];
        out->batch = (int)v[4];
        out->seq = (int)v[5];
        out->packing = (int)v[6];
        out->rounds = (int)v[7];
        out->local_steps = (int)v[8];
        out->lora.rank = (int)v[9];
        out->lora.alpha = (float)v[10];
        out->lora.dropout = (float)v[11];
        out->optim.lr = (float)v[12];
        out->optim.beta1 = (float)v[13];
        out->optim.beta2 = (float)v[14];
        out->optim.eps = (float)v[15];
        out->optim.weight_decay = (float)v[16];
        out->optim.grad_clip = (float)v[17];
        out->optim.warmup_steps = (int)v[18];
        out->optim.total_steps = (int)v[19];
        out->optim.min_lr_ratio = (float)v[20];
        out->edge_part_bytes = (uint64_t)v[21];
        out->user_part_bytes = (uint64_t)v[22];
        out->seed = strtoull(seed, NULL, 10);
        out->lora.seed = strtoull(lora_seed, NULL, 10);
        /* the family is not known here: accept any target name; segments check them */
        rc = sl_lora_parse_targets(targets, SL_ARCH_LLAMA, &out->lora.targets);
        if (rc == 0 && (unhex(edge_sha, out->edge_part_sha256) || unhex(user_sha, out->user_part_sha256)))
            rc = sl_fail(SL_EFORMAT, "%s: a part SHA-256 is not 64 hex digits", from);
        if (rc == 0 && (out->n_layers < 1 || out->cut1 < 0 || out->cut1 > out->cut2 || out->cut2 > out->n_layers ||
                        out->batch < 1 || out->seq < 1 || out->rounds < 1 || out->local_steps < 1))
            rc = sl_fail(SL_EFORMAT, "%s: configuration out of range (L=%d cuts %d,%d B=%d T=%d R=%d E=%d)", from,
                         out->n_layers, out->cut1, out->cut2, out->batch, out->seq, out->rounds, out->local_steps);
    }
    cJSON_Delete(j);
    return rc;
}

int sl_fetch_part(sl_link *link, const char *part_name, const uint8_t sha256[SL_SHA256_BYTES], uint64_t bytes,
                  const char *path) {
    uint8_t have[SL_SHA256_BYTES];
    if (sl_sha256_file(path, have) == 0 && memcmp(have, sha256, SL_SHA256_BYTES) == 0) return SL_OK;
    sl_clear_error();
    sl_atomic_file af;
    int rc = sl_atomic_open(&af, path);
    if (rc) return rc;
    uint64_t offset = 0;
    uint32_t name_shape[1] = {(uint32_t)strlen(part_name)};
    while (rc == 0 && offset < bytes) {
        sl_msg req;
        sl_msg_init(&req, SL_MSG_PART_CHUNK, 0, 0, 0);
        rc = sl_msg_add(&req, "part", SL_DTYPE_U8, 1, name_shape, part_name);
        if (rc == 0) rc = sl_msg_add(&req, "offset", SL_DTYPE_U64, 0, NULL, &offset);
        const sl_msg *reply = NULL;
        if (rc == 0) rc = sl_link_call(link, &req, &reply);
        const sl_tensor *data = NULL;
        if (rc == 0) rc = sl_msg_get(reply, "bytes", SL_DTYPE_U8, 1, NULL, &data);
        if (rc == 0 && (data->t_bytes == 0 || offset + data->t_bytes > bytes))
            rc = sl_fail(SL_EFORMAT, "%s: part '%s' chunk at offset %llu has %zu bytes, the part has %llu",
                         sl_link_peer(link), part_name, (unsigned long long)offset, data->t_bytes,
                         (unsigned long long)bytes);
        if (rc == 0) rc = sl_atomic_write(&af, data->t_data, data->t_bytes);
        if (rc == 0) offset += data->t_bytes;
        sl_msg_release(&req);
    }
    if (rc) {
        sl_atomic_abort(&af);
        return rc;
    }
    if ((rc = sl_atomic_commit(&af))) return rc;
    if ((rc = sl_sha256_file(path, have))) return rc;
    if (memcmp(have, sha256, SL_SHA256_BYTES) != 0) {
        char want_hex[65], got_hex[65];
        sl_sha256_hex(sha256, want_hex);
        sl_sha256_hex(have, got_hex);
        remove(path);
        return sl_fail(SL_EFORMAT, "%s: part '%s' received from %s has SHA-256 %s, expected %s", path, part_name,
                       sl_link_peer(link), got_hex, want_hex);
    }
    return SL_OK;
}

int sl_serve_part_chunk(const sl_msg *request, sl_msg *reply, const char *part_name, const void *data,
                        uint64_t bytes) {
    const sl_tensor *name, *off;
    int rc = sl_msg_get(request, "part", SL_DTYPE_U8, 1, NULL, &name);
    if (rc == 0) rc = sl_msg_get(request, "offset", SL_DTYPE_U64, 0, NULL, &off);
    if (rc) return rc;
    if (name->t_bytes != strlen(part_name) || memcmp(name->t_data, part_name, name->t_bytes) != 0)
        return sl_fail(SL_EINVAL, "PART_CHUNK asks for part '%.*s', this tier serves '%s'", (int)name->t_bytes,
                       (const char *)name->t_data, part_name);
    uint64_t offset;
    memcpy(&offset, off->t_data, sizeof(offset));
    if (offset >= bytes)
        return sl_fail(SL_EINVAL, "PART_CHUNK offset %llu is past the end of part '%s' (%llu bytes)",
                       (unsigned long long)offset, part_name, (unsigned long long)bytes);
    uint64_t n = bytes - offset < SL_PART_CHUNK_BYTES ? bytes - offset : SL_PART_CHUNK_BYTES;
    sl_msg_init(reply, SL_MSG_PART_DATA, request->m_header.h_round, request->m_header.h_step,
                request->m_header.h_stream);
    uint32_t shape[1] = {(uint32_t)n};
    uint64_t *total = sl_msg_alloc(reply, sizeof(uint64_t));
    if (total == NULL) return SL_ENOMEM;
    *total = bytes;
    rc = sl_msg_add(reply, "bytes", SL_DTYPE_U8, 1, shape, (const uint8_t *)data + offset);
    if (rc == 0) rc = sl_msg_add(reply, "total", SL_DTYPE_U64, 0, NULL, total);
    return rc;
}

int sl_add_activation(sl_msg *msg, const char *name, const sl_codec *codec, int B, int T, int C, const float *data) {
    uint32_t shape[3] = {(uint32_t)B, (uint32_t)T, (uint32_t)C};
    if (codec->c_kind == SL_CODEC_NONE) return sl_msg_add(msg, name, SL_DTYPE_F32, 3, shape, data);
    sl_codec_wire w;
    int rc = sl_codec_wire_for(codec, 3, shape, &w);
    if (rc) return rc;
    void *buf = sl_msg_alloc(msg, w.w_bytes);
    if (buf == NULL) return SL_ENOMEM;
    if ((rc = sl_codec_wire_encode(&w, data, buf, NULL))) return rc;
    return sl_msg_add(msg, name, (sl_dtype)w.w_dtype, w.w_ndim, w.w_shape, buf);
}

int sl_get_activation(const sl_msg *msg, const char *name, int B, int T, int C, float *scratch, const float **out) {
    const sl_tensor *t = sl_msg_find(msg, name);
    const int64_t shape[3] = {B, T, C};
    if (t != NULL && t->t_dtype == SL_DTYPE_F32) {
        const sl_tensor *checked;
        int rc = sl_msg_get(msg, name, SL_DTYPE_F32, 3, shape, &checked);
        if (rc == 0) *out = checked->t_data;
        return rc;
    }
    if (t == NULL) return sl_msg_get(msg, name, SL_DTYPE_F32, 3, shape, &t); /* the error names it */
    int rc = sl_codec_tensor_decode(t, scratch, (size_t)B * T * C);
    if (rc == 0) *out = scratch;
    return rc;
}

int sl_apply_shaping(sl_link *link, const sl_msg *hello_ok) {
    if (sl_msg_find(hello_ok, "shape") == NULL) return SL_OK;
    const int64_t four[1] = {4};
    const sl_tensor *t;
    int rc = sl_msg_get(hello_ok, "shape", SL_DTYPE_F32, 1, four, &t);
    if (rc) return rc;
    float v[4];
    memcpy(v, t->t_data, sizeof(v));
    sl_link_set_shaping(link, v[0], v[1], v[2], v[3]);
    return SL_OK;
}

int sl_tier_link_open(sl_link **out, const char *url, const char *peer, sl_tier tier, int id, int timeout_ms) {
    sl_link_config lc;
    sl_link_config_default(&lc);
    lc.lc_url = url;
    lc.lc_peer = peer;
    lc.lc_tier = tier;
    lc.lc_sender = (uint32_t)id;
    if (timeout_ms > 0) lc.lc_send_timeout_ms = lc.lc_recv_timeout_ms = timeout_ms;
    return sl_link_open(out, &lc);
}
