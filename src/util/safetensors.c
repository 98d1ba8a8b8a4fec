/* safetensors.c: see safetensors.h. */
#include "util/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format's byte order)"
#endif

/* Bytes of the little-endian header length that opens every file. */
#define ST_PREFIX_BYTES 8
/* The header (and with it the data area) is padded to this multiple, so that tensors of
 * up to 8-byte elements can stay aligned in a page-aligned mapping. */
#define ST_HEADER_ALIGN 8
/* Shape entries and offsets are JSON numbers, which cJSON holds as doubles: integers above
 * 2^53 cannot be represented exactly, so they are refused rather than silently rounded. */
#define ST_MAX_EXACT_INT 9007199254740992.0
#define ST_METADATA_KEY "__metadata__"

static const struct {
    const char *name;
    size_t bytes;
} st_dtypes[SL_ST_NUM_DTYPES] = {
    [SL_ST_F32] = {"F32", 4}, [SL_ST_F16] = {"F16", 2}, [SL_ST_BF16] = {"BF16", 2}, [SL_ST_F64] = {"F64", 8},
    [SL_ST_I64] = {"I64", 8}, [SL_ST_I32] = {"I32", 4}, [SL_ST_I16] = {"I16", 2},   [SL_ST_I8] = {"I8", 1},
    [SL_ST_U8] = {"U8", 1},   [SL_ST_BOOL] = {"BOOL", 1},
};

const char *sl_st_dtype_name(sl_st_dtype dtype) {
    return (unsigned)dtype < SL_ST_NUM_DTYPES ? st_dtypes[dtype].name : "?";
}

size_t sl_st_dtype_bytes(sl_st_dtype dtype) {
    return (unsigned)dtype < SL_ST_NUM_DTYPES ? st_dtypes[dtype].bytes : 0;
}

int sl_st_dtype_parse(const char *name, sl_st_dtype *out) {
    for (int i = 0; i < SL_ST_NUM_DTYPES; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *out = (sl_st_dtype)i;
            return SL_OK;
        }
    }
    return SL_EFORMAT;
}

/* "[2, 3]" into buf (truncated if it does not fit). */
static void st_format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* ------------------------------------------------------------------------------------ */
/* Reader */

struct sl_st_reader {
    sl_mapped_file rd_file;
    cJSON *rd_json; /* the parsed header; names and metadata strings point into it */
    size_t rd_header_bytes;
    const uint8_t *rd_data; /* start of the data area */
    size_t rd_data_bytes;
    sl_st_tensor *rd_tensors; /* header order */
    size_t rd_count;
    const sl_st_tensor **rd_by_name; /* sorted by name, for lookup */
    const char **rd_meta_keys;
    const char **rd_meta_values;
    size_t rd_meta_count;
};

static const char *st_json_kind(const cJSON *v) {
    if (v == NULL) return "nothing";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

/* A JSON number that is a non-negative integer small enough to be exact. */
static int st_json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_EXACT_INT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int st_cmp_tensor_ptr(const void *a, const void *b) {
    const sl_st_tensor *ta = *(const sl_st_tensor *const *)a;
    const sl_st_tensor *tb = *(const sl_st_tensor *const *)b;
    return strcmp(ta->t_name, tb->t_name);
}

/* Fills t from one header entry; the message names the file and the tensor. */
static int st_parse_tensor(const sl_st_reader *r, const cJSON *entry, sl_st_tensor *t) {
    const char *path = r->rd_file.m_path;
    const char *name = entry->string;
    memset(t, 0, sizeof(*t));
    t->t_name = name;
    if (!cJSON_IsObject(entry))
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': expected an object with dtype, shape and data_offsets, found %s",
                       path, name, st_json_kind(entry));

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field dtype: expected a string, found %s", path, name,
                       st_json_kind(dtype));
    if (sl_st_dtype_parse(dtype->valuestring, &t->t_dtype) != 0)
        return sl_fail(SL_EFORMAT,
                       "%s: tensor '%s': field dtype: unknown dtype \"%s\" (expected F32, F16, BF16, F64, I64, I32, "
                       "I16, I8, U8 or BOOL)",
                       path, name, dtype->valuestring);
    size_t elem_bytes = sl_st_dtype_bytes(t->t_dtype);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field shape: expected an array, found %s", path, name,
                       st_json_kind(shape));
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > SL_ST_MAX_DIMS)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field shape: %d dimensions, at most %d supported", path, name,
                       ndim, SL_ST_MAX_DIMS);
    t->t_ndim = ndim;
    size_t numel = 1;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t n;
        if (st_json_uint(dim, &n) != 0)
            return sl_fail(SL_EFORMAT,
                           "%s: tensor '%s': field shape[%d]: expected an integer in [0, 2^53], found %s (%.17g)", path,
                           name, d, st_json_kind(dim), cJSON_IsNumber(dim) ? dim->valuedouble : 0.0);
        t->t_shape[d] = (int64_t)n;
        if (sl_mul_size(numel, (size_t)n, &numel) != 0)
            return sl_fail(SL_EFORMAT, "%s: tensor '%s': field shape: the element count overflows at shape[%d] = %llu",
                           path, name, d, (unsigned long long)n);
        d++;
    }
    size_t bytes;
    if (sl_mul_size(numel, elem_bytes, &bytes) != 0)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field shape: %zu elements of %s overflow a byte count", path,
                       name, numel, dtype->valuestring);
    t->t_numel = numel;
    t->t_bytes = bytes;

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsArray(offsets))
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field data_offsets: expected an array [begin, end], found %s",
                       path, name, st_json_kind(offsets));
    if (cJSON_GetArraySize(offsets) != 2)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field data_offsets: expected 2 entries [begin, end], found %d",
                       path, name, cJSON_GetArraySize(offsets));
    uint64_t be[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetArrayItem(offsets, i);
        if (st_json_uint(v, &be[i]) != 0)
            return sl_fail(SL_EFORMAT,
                           "%s: tensor '%s': field data_offsets[%d]: expected an integer in [0, 2^53], found %s (%.17g)",
                           path, name, i, st_json_kind(v), cJSON_IsNumber(v) ? v->valuedouble : 0.0);
    }
    uint64_t begin = be[0], end = be[1];
    if (begin > end)
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': field data_offsets: begin %llu is after end %llu", path, name,
                       (unsigned long long)begin, (unsigned long long)end);
    if (end > r->rd_data_bytes)
        return sl_fail(SL_EFORMAT,
                       "%s: tensor '%s': field data_offsets: end %llu is past the end of the data area (%zu bytes at "
                       "file offset %zu; file truncated?)",
                       path, name, (unsigned long long)end, r->rd_data_bytes, ST_PREFIX_BYTES + r->rd_header_bytes);
    if (end - begin != bytes) {
        char s[160];
        st_format_shape(s, sizeof(s), ndim, t->t_shape);
        return sl_fail(SL_EFORMAT,
                       "%s: tensor '%s': field data_offsets [%llu, %llu] span %llu bytes, but shape %s of %s needs %zu",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin), s, dtype->valuestring, bytes);
    }
    t->t_data = r->rd_data + begin;
    t->t_file_offset = ST_PREFIX_BYTES + r->rd_header_bytes + (size_t)begin;
    t->t_aligned = ((uintptr_t)t->t_data % elem_bytes) == 0;
    return SL_OK;
}

static int st_parse_metadata(sl_st_reader *r, const cJSON *meta) {
    const char *path = r->rd_file.m_path;
    if (!cJSON_IsObject(meta))
        return sl_fail(SL_EFORMAT, "%s: field __metadata__: expected an object of strings, found %s", path,
                       st_json_kind(meta));
    size_t n = (size_t)cJSON_GetArraySize(meta);
    r->rd_meta_keys = sl_alloc(n * sizeof(char *));
    r->rd_meta_values = sl_alloc(n * sizeof(char *));
    if (r->rd_meta_keys == NULL || r->rd_meta_values == NULL) return SL_ENOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return sl_fail(SL_EFORMAT, "%s: field __metadata__.%s: expected a string, found %s", path, kv->string,
                           st_json_kind(kv));
        r->rd_meta_keys[r->rd_meta_count] = kv->string;
        r->rd_meta_values[r->rd_meta_count] = kv->valuestring;
        r->rd_meta_count++;
    }
    return SL_OK;
}

/* Everything after mapping: prefix, header JSON, every entry. */
static int st_parse(sl_st_reader *r) {
    const char *path = r->rd_file.m_path;
    const uint8_t *base = r->rd_file.m_data;
    size_t file_bytes = r->rd_file.m_bytes;
    if (file_bytes < ST_PREFIX_BYTES)
        return sl_fail(SL_EFORMAT, "%s: field header length: the file has %zu bytes, expected at least %d (truncated?)",
                       path, file_bytes, ST_PREFIX_BYTES);
    uint64_t n;
    memcpy(&n, base, sizeof(n));
    if (n == 0 || n > SL_ST_MAX_HEADER_BYTES)
        return sl_fail(SL_EFORMAT, "%s: field header length at offset 0: %llu, expected 1..%llu", path,
                       (unsigned long long)n, (unsigned long long)SL_ST_MAX_HEADER_BYTES);
    if (n > file_bytes - ST_PREFIX_BYTES)
        return sl_fail(SL_EFORMAT,
                       "%s: field header length at offset 0: %llu bytes, but only %zu bytes follow the length (truncated?)",
                       path, (unsigned long long)n, file_bytes - ST_PREFIX_BYTES);
    r->rd_header_bytes = (size_t)n;
    r->rd_data = base + ST_PREFIX_BYTES + n;
    r->rd_data_bytes = file_bytes - ST_PREFIX_BYTES - (size_t)n;

    const char *header = (const char *)base + ST_PREFIX_BYTES;
    const char *parse_end = NULL;
    r->rd_json = cJSON_ParseWithLengthOpts(header, (size_t)n, &parse_end, 0);
    if (r->rd_json == NULL) {
        size_t at = parse_end != NULL && parse_end >= header ? (size_t)(parse_end - header) : 0;
        return sl_fail(SL_EFORMAT, "%s: header JSON is malformed near file offset %zu (the header spans offsets [%d, %llu))", path,
                       ST_PREFIX_BYTES + at, ST_PREFIX_BYTES, (unsigned long long)(ST_PREFIX_BYTES + n));
    }
    for (const char *p = parse_end; p < header + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return sl_fail(SL_EFORMAT, "%s: header JSON: unexpected byte 0x%02x after the object at file offset %zu",
                           path, (unsigned char)*p, ST_PREFIX_BYTES + (size_t)(p - header));
    }
    if (!cJSON_IsObject(r->rd_json))
        return sl_fail(SL_EFORMAT, "%s: header JSON: expected an object, found %s", path, st_json_kind(r->rd_json));

    size_t entries = (size_t)cJSON_GetArraySize(r->rd_json);
    r->rd_tensors = sl_alloc(entries * sizeof(sl_st_tensor));
    r->rd_by_name = sl_alloc(entries * sizeof(sl_st_tensor *));
    if (r->rd_tensors == NULL || r->rd_by_name == NULL) return SL_ENOMEM;
    int seen_metadata = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, r->rd_json) {
        int rc;
        if (strcmp(entry->string, ST_METADATA_KEY) == 0) {
            if (seen_metadata) return sl_fail(SL_EFORMAT, "%s: field __metadata__ appears twice", path);
            seen_metadata = 1;
            rc = st_parse_metadata(r, entry);
        } else {
            rc = st_parse_tensor(r, entry, &r->rd_tensors[r->rd_count]);
            if (rc == 0) r->rd_count++;
        }
        if (rc != 0) return rc;
    }
    for (size_t i = 0; i < r->rd_count; i++) r->rd_by_name[i] = &r->rd_tensors[i];
    qsort(r->rd_by_name, r->rd_count, sizeof(*r->rd_by_name), st_cmp_tensor_ptr);
    for (size_t i = 1; i < r->rd_count; i++) {
        if (strcmp(r->rd_by_name[i - 1]->t_name, r->rd_by_name[i]->t_name) == 0)
            return sl_fail(SL_EFORMAT, "%s: tensor '%s' appears twice in the header", path, r->rd_by_name[i]->t_name);
    }
    return SL_OK;
}

int sl_st_open(sl_st_reader **out, const char *path) {
    *out = NULL;
    sl_st_reader *r = sl_alloc(sizeof(*r));
    if (r == NULL) return SL_ENOMEM;
    int rc = sl_map_file(&r->rd_file, path);
    if (rc != 0) {
        sl_free(r);
        return rc;
    }
    rc = st_parse(r);
    if (rc != 0) {
        sl_st_close(r);
        return rc;
    }
    *out = r;
    return SL_OK;
}

void sl_st_close(sl_st_reader *r) {
    if (r == NULL) return;
    sl_free(r->rd_meta_values);
    sl_free(r->rd_meta_keys);
    sl_free(r->rd_by_name);
    sl_free(r->rd_tensors);
    cJSON_Delete(r->rd_json);
    sl_unmap_file(&r->rd_file);
    sl_free(r);
}

void sl_st_mapping(const sl_st_reader *r, const void **data, size_t *bytes) {
    *data = r->rd_file.m_data;
    *bytes = r->rd_file.m_bytes;
}

const char *sl_st_path(const sl_st_reader *r) { return r->rd_file.m_path; }
size_t sl_st_count(const sl_st_reader *r) { return r->rd_count; }

const sl_st_tensor *sl_st_tensor_at(const sl_st_reader *r, size_t i) {
    return i < r->rd_count ? &r->rd_tensors[i] : NULL;
}

const sl_st_tensor *sl_st_lookup(const sl_st_reader *r, const char *name) {
    sl_st_tensor key;
    key.t_name = name;
    const sl_st_tensor *kp = &key;
    const sl_st_tensor **hit = bsearch(&kp, r->rd_by_name, r->rd_count, sizeof(*r->rd_by_name), st_cmp_tensor_ptr);
    return hit == NULL ? NULL : *hit;
}

int sl_st_get(const sl_st_reader *r, const char *name, sl_st_dtype dtype, int ndim, const int64_t *shape,
              const sl_st_tensor **out) {
    *out = NULL;
    const sl_st_tensor *t = sl_st_lookup(r, name);
    if (t == NULL) return sl_fail(SL_EFORMAT, "%s: tensor '%s' is missing", sl_st_path(r), name);
    int same = t->t_dtype == dtype;
    if (shape != NULL) {
        same = same && t->t_ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = t->t_shape[d] == shape[d];
    }
    if (!same) {
        char want[160], found[160];
        if (shape != NULL)
            st_format_shape(want, sizeof(want), ndim, shape);
        else
            snprintf(want, sizeof(want), "(any)");
        st_format_shape(found, sizeof(found), t->t_ndim, t->t_shape);
        return sl_fail(SL_EFORMAT, "%s: tensor '%s': expected dtype %s shape %s, found dtype %s shape %s",
                       sl_st_path(r), name, sl_st_dtype_name(dtype), want, sl_st_dtype_name(t->t_dtype), found);
    }
    *out = t;
    return SL_OK;
}

const char *sl_st_metadata(const sl_st_reader *r, const char *key) {
    for (size_t i = 0; i < r->rd_meta_count; i++) {
        if (strcmp(r->rd_meta_keys[i], key) == 0) return r->rd_meta_values[i];
    }
    return NULL;
}

size_t sl_st_metadata_count(const sl_st_reader *r) { return r->rd_meta_count; }

void sl_st_metadata_at(const sl_st_reader *r, size_t i, const char **key, const char **value) {
    *key = i < r->rd_meta_count ? r->rd_meta_keys[i] : NULL;
    *value = i < r->rd_meta_count ? r->rd_meta_values[i] : NULL;
}

float sl_st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in float32 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    } else if (exp == 0x1f) { /* inf or NaN */
        bits = sign | 0x7f800000u | (mant << 13);
    } else { /* rebias the exponent from 15 to 127 */
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

float sl_st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

int sl_st_to_f32(const sl_st_tensor *t, float *dst) {
    const uint8_t *src = t->t_data;
    switch (t->t_dtype) {
    case SL_ST_F32:
        if (t->t_bytes > 0) memcpy(dst, src, t->t_bytes);
        return SL_OK;
    case SL_ST_F16:
    case SL_ST_BF16:
        for (size_t i = 0; i < t->t_numel; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, sizeof(h));
            dst[i] = t->t_dtype == SL_ST_F16 ? sl_st_f16_to_f32(h) : sl_st_bf16_to_f32(h);
        }
        return SL_OK;
    default:
        return sl_fail(SL_EINVAL, "tensor '%s': cannot convert dtype %s to F32", t->t_name,
                       sl_st_dtype_name(t->t_dtype));
    }
}

/* ------------------------------------------------------------------------------------ */
/* Writer */

typedef struct {
    char *e_name;
    sl_st_dtype e_dtype;
    int e_ndim;
    int64_t e_shape[SL_ST_MAX_DIMS];
    size_t e_bytes;
    const void *e_data;
} st_entry;

typedef struct {
    char *mp_key;
    char *mp_value;
} st_meta_pair;

struct sl_st_writer {
    st_entry *w_entries;
    size_t w_count, w_cap;
    st_meta_pair *w_meta;
    size_t w_meta_count, w_meta_cap;
};

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = sl_alloc(n);
    if (p != NULL) memcpy(p, s, n);
    return p;
}

/* Makes room for one more element of elem_bytes in *arr (capacity *cap, count used). */
static int st_grow(void **arr, size_t *cap, size_t used, size_t elem_bytes) {
    if (used < *cap) return SL_OK;
    size_t ncap = *cap ? 2 * *cap : 16;
    void *n = sl_alloc(ncap * elem_bytes);
    if (n == NULL) return SL_ENOMEM;
    if (used > 0) memcpy(n, *arr, used * elem_bytes);
    sl_free(*arr);
    *arr = n;
    *cap = ncap;
    return SL_OK;
}

int sl_st_writer_create(sl_st_writer **out) {
    *out = sl_alloc(sizeof(sl_st_writer));
    return *out == NULL ? SL_ENOMEM : SL_OK;
}

void sl_st_writer_free(sl_st_writer *w) {
    if (w == NULL) return;
    for (size_t i = 0; i < w->w_meta_count; i++) {
        sl_free(w->w_meta[i].mp_value);
        sl_free(w->w_meta[i].mp_key);
    }
    sl_free(w->w_meta);
    for (size_t i = 0; i < w->w_count; i++) sl_free(w->w_entries[i].e_name);
    sl_free(w->w_entries);
    sl_free(w);
}

int sl_st_writer_add(sl_st_writer *w, const char *name, sl_st_dtype dtype, int ndim, const int64_t *shape,
                     const void *data) {
    if (strcmp(name, ST_METADATA_KEY) == 0)
        return sl_fail(SL_EINVAL, "safetensors writer: tensor name '%s' is reserved", name);
    if ((unsigned)dtype >= SL_ST_NUM_DTYPES)
        return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': dtype %d out of range", name, (int)dtype);
    if (ndim < 0 || ndim > SL_ST_MAX_DIMS)
        return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': %d dimensions, expected 0..%d", name, ndim,
                       SL_ST_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (double)shape[d] > ST_MAX_EXACT_INT)
            return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': shape[%d] = %lld, expected 0..2^53", name, d,
                           (long long)shape[d]);
        if (sl_mul_size(numel, (size_t)shape[d], &numel) != 0)
            return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': element count overflows at shape[%d]", name, d);
    }
    size_t bytes;
    if (sl_mul_size(numel, sl_st_dtype_bytes(dtype), &bytes) != 0)
        return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': byte count overflows", name);
    if (data == NULL && bytes > 0)
        return sl_fail(SL_EINVAL, "safetensors writer: tensor '%s': no data for %zu bytes", name, bytes);
    int rc = st_grow((void **)&w->w_entries, &w->w_cap, w->w_count, sizeof(st_entry));
    if (rc != 0) return rc;
    st_entry *e = &w->w_entries[w->w_count];
    memset(e, 0, sizeof(*e));
    e->e_name = st_strdup(name);
    if (e->e_name == NULL) return SL_ENOMEM;
    e->e_dtype = dtype;
    e->e_ndim = ndim;
    for (int d = 0; d < ndim; d++) e->e_shape[d] = shape[d];
    e->e_bytes = bytes;
    e->e_data = data;
    w->w_count++;
    return SL_OK;
}

int sl_st_writer_set_metadata(sl_st_writer *w, const char *key, const char *value) {
    char *v = st_strdup(value);
    if (v == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < w->w_meta_count; i++) {
        if (strcmp(w->w_meta[i].mp_key, key) == 0) {
            sl_free(w->w_meta[i].mp_value);
            w->w_meta[i].mp_value = v;
            return SL_OK;
        }
    }
    char *k = st_strdup(key);
    int rc = k == NULL ? SL_ENOMEM : st_grow((void **)&w->w_meta, &w->w_meta_cap, w->w_meta_count, sizeof(st_meta_pair));
    if (rc != 0) {
        sl_free(k);
        sl_free(v);
        return rc;
    }
    w->w_meta[w->w_meta_count].mp_key = k;
    w->w_meta[w->w_meta_count].mp_value = v;
    w->w_meta_count++;
    return SL_OK;
}

/* A growable text buffer for the header; the first failure sticks in b_rc. */
typedef struct {
    char *b_data;
    size_t b_len, b_cap;
    int b_rc;
} st_buf;

static void st_buf_put(st_buf *b, const char *s, size_t n) {
    if (b->b_rc != 0) return;
    if (b->b_len + n + 1 > b->b_cap) {
        size_t ncap = b->b_cap ? b->b_cap : 256;
        while (ncap < b->b_len + n + 1) ncap *= 2;
        char *nd = sl_alloc(ncap);
        if (nd == NULL) {
            b->b_rc = SL_ENOMEM;
            return;
        }
        if (b->b_len > 0) memcpy(nd, b->b_data, b->b_len);
        sl_free(b->b_data);
        b->b_data = nd;
        b->b_cap = ncap;
    }
    memcpy(b->b_data + b->b_len, s, n);
    b->b_len += n;
    b->b_data[b->b_len] = '\0';
}

static void st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void st_buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    st_buf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* s as a JSON string literal; bytes >= 0x80 pass through (the caller's UTF-8). */
static void st_buf_json_string(st_buf *b, const char *s) {
    st_buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            st_buf_put(b, esc, 2);
        } else if (*p < 0x20) {
            st_buf_printf(b, "\\u%04x", *p);
        } else {
            st_buf_put(b, (const char *)p, 1);
        }
    }
    st_buf_put(b, "\"", 1);
}

static int st_cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fails if two entries share a name. */
static int st_check_unique(const sl_st_writer *w, const char *path) {
    const char **names = sl_alloc((w->w_count + 1) * sizeof(char *));
    if (names == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < w->w_count; i++) names[i] = w->w_entries[i].e_name;
    qsort(names, w->w_count, sizeof(char *), st_cmp_name_ptr);
    int rc = SL_OK;
    for (size_t i = 1; i < w->w_count && rc == 0; i++) {
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = sl_fail(SL_EINVAL, "%s: tensor '%s' was added twice", path, names[i]);
    }
    sl_free(names);
    return rc;
}

int sl_st_writer_write(const sl_st_writer *w, const char *path) {
    int rc = st_check_unique(w, path);
    if (rc != 0) return rc;
    st_buf b = {0};
    st_buf_put(&b, "{", 1);
    int first = 1;
    if (w->w_meta_count > 0) {
        st_buf_json_string(&b, ST_METADATA_KEY);
        st_buf_put(&b, ":{", 2);
        for (size_t i = 0; i < w->w_meta_count; i++) {
            if (i) st_buf_put(&b, ",", 1);
            st_buf_json_string(&b, w->w_meta[i].mp_key);
            st_buf_put(&b, ":", 1);
            st_buf_json_string(&b, w->w_meta[i].mp_value);
        }
        st_buf_put(&b, "}", 1);
        first = 0;
    }
    size_t offset = 0;
    for (size_t i = 0; i < w->w_count; i++) {
        const st_entry *e = &w->w_entries[i];
        if (!first) st_buf_put(&b, ",", 1);
        first = 0;
        st_buf_json_string(&b, e->e_name);
        st_buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", sl_st_dtype_name(e->e_dtype));
        for (int d = 0; d < e->e_ndim; d++) st_buf_printf(&b, "%s%lld", d ? "," : "", (long long)e->e_shape[d]);
        st_buf_printf(&b, "],\"data_offsets\":[%zu,", offset);
        offset += e->e_bytes;
        st_buf_printf(&b, "%zu]}", offset);
    }
    st_buf_put(&b, "}", 1);
    while (b.b_rc == 0 && b.b_len % ST_HEADER_ALIGN != 0) st_buf_put(&b, " ", 1);
    if (b.b_rc != 0) {
        sl_free(b.b_data);
        return b.b_rc;
    }

    uint64_t n = b.b_len;
    sl_atomic_file af;
    rc = sl_atomic_open(&af, path);
    if (rc == 0) rc = sl_atomic_write(&af, &n, sizeof(n));
    if (rc == 0) rc = sl_atomic_write(&af, b.b_data, b.b_len);
    for (size_t i = 0; i < w->w_count && rc == 0; i++)
        if (w->w_entries[i].e_bytes > 0) rc = sl_atomic_write(&af, w->w_entries[i].e_data, w->w_entries[i].e_bytes);
    sl_free(b.b_data);
    if (rc != 0) {
        if (af.af_fd >= 0) sl_atomic_abort(&af);
        return rc;
    }
    return sl_atomic_commit(&af);
}
