/* safetensors.h: reading and writing Hugging Face safetensors files — the format of
 * `model.safetensors` and PEFT's `adapter_model.safetensors`, and of the project's own
 * reference and checkpoint tensors.
 *
 * The format: 8 bytes, little-endian u64 N; N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * (padded with trailing spaces); then the data area, which the offsets index (bytes,
 * relative to its start, row-major, little-endian).
 *
 * The reader maps the file read-only and validates every field before it hands anything
 * out; its tensors point into the mapping, so they live until sl_st_close. The writer
 * collects (name, dtype, shape, pointer) entries and metadata, then writes the file
 * atomically: header padded to a multiple of 8 bytes, tensors in the order added, no gaps.
 *
 * Not for: knowing what the tensors mean (model loaders do that), streaming files larger
 * than the address space, big-endian hosts. */
#ifndef SPLITLLM_UTIL_SAFETENSORS_H
#define SPLITLLM_UTIL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* The element types this module knows, with their names in the header. */
typedef enum {
    SL_ST_F32 = 0, /* "F32" */
    SL_ST_F16,     /* "F16" */
    SL_ST_BF16,    /* "BF16" */
    SL_ST_F64,     /* "F64" */
    SL_ST_I64,     /* "I64" */
    SL_ST_I32,     /* "I32" */
    SL_ST_I16,     /* "I16" */
    SL_ST_I8,      /* "I8" */
    SL_ST_U8,      /* "U8" */
    SL_ST_BOOL,    /* "BOOL" */
    SL_ST_NUM_DTYPES
} sl_st_dtype;

/* Most dimensions a tensor may have (the format has no limit; real models use <= 4). */
#define SL_ST_MAX_DIMS 8
/* Largest header the reader accepts (the Rust reference implementation's limit). */
#define SL_ST_MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)

const char *sl_st_dtype_name(sl_st_dtype dtype); /* "F32", ...; "?" if out of range */
size_t sl_st_dtype_bytes(sl_st_dtype dtype);     /* bytes per element; 0 if out of range */
/* Looks a header name up; returns 0 and sets *out, or SL_EFORMAT (no message) if unknown. */
int sl_st_dtype_parse(const char *name, sl_st_dtype *out);

/* One tensor of an open file. All pointers point into the reader; valid until close. */
typedef struct {
    const char *t_name;
    sl_st_dtype t_dtype;
    int t_ndim;                      /* 0 for a scalar */
    int64_t t_shape[SL_ST_MAX_DIMS]; /* t_shape[0..t_ndim) */
    size_t t_numel;                  /* product of the shape (1 for a scalar) */
    const void *t_data;              /* t_bytes bytes in the mapping */
    size_t t_bytes;
    size_t t_file_offset; /* where t_data starts in the file, bytes */
    /* Nonzero when t_data is aligned to the element size, so it may be read through a
     * typed pointer; otherwise copy (memcpy, sl_st_to_f32) first. */
    int t_aligned;
} sl_st_tensor;

typedef struct sl_st_reader sl_st_reader;

/* Maps and validates path. On failure *out is NULL and the message names the file, the
 * tensor or field, what was expected and what was found. */
int sl_st_open(sl_st_reader **out, const char *path);
void sl_st_close(sl_st_reader *r); /* NULL is fine */

const char *sl_st_path(const sl_st_reader *r);
/* The file's mapping (for accounting: how much of it is resident). */
void sl_st_mapping(const sl_st_reader *r, const void **data, size_t *bytes);
size_t sl_st_count(const sl_st_reader *r);
/* The i-th tensor in header order, i < sl_st_count(r). */
const sl_st_tensor *sl_st_tensor_at(const sl_st_reader *r, size_t i);
/* The tensor called name, or NULL (and no error recorded) if there is none. */
const sl_st_tensor *sl_st_lookup(const sl_st_reader *r, const char *name);
/* The tensor called name, checked: dtype must match and, unless shape is NULL, ndim and
 * shape too. Fails (SL_EFORMAT) with a message naming the file and the tensor if it is
 * absent or differs. */
int sl_st_get(const sl_st_reader *r, const char *name, sl_st_dtype dtype, int ndim, const int64_t *shape,
              const sl_st_tensor **out);

/* The metadata value for key, or NULL if absent. */
const char *sl_st_metadata(const sl_st_reader *r, const char *key);
size_t sl_st_metadata_count(const sl_st_reader *r);
/* The i-th metadata pair in header order; i < sl_st_metadata_count(r). */
void sl_st_metadata_at(const sl_st_reader *r, size_t i, const char **key, const char **value);

/* Converts an F32, F16 or BF16 tensor to float32 into dst (t->t_numel floats), whatever
 * the alignment of its data. Other dtypes: SL_EINVAL. */
int sl_st_to_f32(const sl_st_tensor *t, float *dst);
float sl_st_f16_to_f32(uint16_t h);
float sl_st_bf16_to_f32(uint16_t b);

typedef struct sl_st_writer sl_st_writer;

int sl_st_writer_create(sl_st_writer **out);
void sl_st_writer_free(sl_st_writer *w); /* NULL is fine */
/* Adds a tensor; data (numel * dtype bytes, row-major, little-endian) is not copied and
 * must stay valid until sl_st_writer_write. The name is copied. Names must be unique
 * (checked at write time) and not "__metadata__". */
int sl_st_writer_add(sl_st_writer *w, const char *name, sl_st_dtype dtype, int ndim, const int64_t *shape,
                     const void *data);
/* Sets (or replaces) a metadata pair; both strings are copied. */
int sl_st_writer_set_metadata(sl_st_writer *w, const char *key, const char *value);
/* Writes everything added so far to path, atomically. The writer can be written again. */
int sl_st_writer_write(const sl_st_writer *w, const char *path);

#endif
