/* common.h: errors, memory, files, random numbers, clocks and process memory — the
 * small services every layer uses. Not for anything model-, data- or network-specific. */
#ifndef SPLITLLM_UTIL_COMMON_H
#define SPLITLLM_UTIL_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Error codes. Every function that can fail returns 0 or one of these (negative), after
 * recording a message that names the file/field/offset, what was expected and what was
 * found. The message is per thread: read it with sl_last_error(). */
enum {
    SL_OK = 0,
    SL_EIO = -1,       /* the operating system refused (open, read, write, mmap) */
    SL_EFORMAT = -2,   /* a file or message is malformed */
    SL_ENOMEM = -3,    /* an allocation failed */
    SL_EINVAL = -4,    /* an argument or configuration value is out of range */
    SL_ETIMEDOUT = -5, /* a peer did not answer in time */
    SL_ENET = -6,      /* a network operation failed */
    SL_ESTATE = -7,    /* an operation came at the wrong time */
};

/* Records the message (printf format) for this thread and returns code. */
int sl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *sl_last_error(void);
void sl_clear_error(void);

/* Allocation that reports failure with sl_fail (returns NULL). Memory from sl_alloc is
 * 64-byte aligned and zeroed; free it with sl_free. */
void *sl_alloc(size_t bytes);
void sl_free(void *p);
/* a * b with overflow check; returns 0 and sets *out, or SL_EINVAL on overflow. */
int sl_mul_size(size_t a, size_t b, size_t *out);

/* A read-only mapping of a whole file. */
typedef struct {
    void *m_data;
    size_t m_bytes;
    char m_path[1024];
} sl_mapped_file;
int sl_map_file(sl_mapped_file *f, const char *path);
void sl_unmap_file(sl_mapped_file *f);

/* Creates a folder and its missing parents (mkdir -p); an existing folder is fine. */
int sl_make_dirs(const char *path);

/* Reads a whole file into a fresh sl_alloc'd buffer (NUL-terminated for convenience). */
int sl_read_file(const char *path, char **out, size_t *out_bytes);

/* Writes bytes so that path holds either its old content or all of the new one: a temp
 * file beside it, fsync, rename, fsync of the folder. */
typedef struct {
    int af_fd;
    char af_path[1024];
    char af_tmp[1040];
} sl_atomic_file;
int sl_atomic_open(sl_atomic_file *af, const char *path);
int sl_atomic_write(sl_atomic_file *af, const void *data, size_t bytes);
int sl_atomic_commit(sl_atomic_file *af); /* fsync + rename; closes */
void sl_atomic_abort(sl_atomic_file *af); /* removes the temp file; closes */
int sl_write_file_atomic(const char *path, const void *data, size_t bytes);

/* Counter-based random numbers (splitmix64): a stream is a (seed, stream id) pair, so any
 * tensor's initial values depend only on its own identity, never on who else drew first. */
typedef struct {
    uint64_t r_state;
} sl_rng;
void sl_rng_init(sl_rng *r, uint64_t seed, uint64_t stream);
uint64_t sl_rng_u64(sl_rng *r);
float sl_rng_uniform(sl_rng *r); /* [0, 1) */
float sl_rng_normal(sl_rng *r);  /* N(0, 1), Box-Muller */
uint64_t sl_hash64(uint64_t x);

double sl_now_s(void); /* monotonic clock, seconds */
/* Peak resident set (VmHWM) and current resident set (VmRSS) of this process, bytes. */
size_t sl_peak_rss_bytes(void);
size_t sl_current_rss_bytes(void);
/* Bytes of [addr, addr+len) that are resident in this process (mincore), e.g. how much of a
 * mapped model file the process has actually touched. */
size_t sl_resident_bytes(const void *addr, size_t len);
/* Resets the peak (VmHWM) to the current resident set, so a later sl_peak_rss_bytes covers
 * only what follows (Linux >= 4.0: /proc/self/clear_refs "5"). Returns 0, or SL_EIO. */
int sl_reset_peak_rss(void);

#endif
