/* common.c: see common.h. */
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char last_error[1024];

int sl_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return code;
}

const char *sl_last_error(void) { return last_error; }
void sl_clear_error(void) { last_error[0] = '\0'; }

void *sl_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) {
        sl_fail(SL_ENOMEM, "allocation of %zu bytes overflows", bytes);
        return NULL;
    }
    void *p = aligned_alloc(64, rounded);
    if (p == NULL) {
        sl_fail(SL_ENOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void sl_free(void *p) { free(p); }

int sl_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return SL_EINVAL;
    *out = a * b;
    return SL_OK;
}

int sl_map_file(sl_mapped_file *f, const char *path) {
    memset(f, 0, sizeof(*f));
    snprintf(f->m_path, sizeof(f->m_path), "%s", path);
    /* O_NONBLOCK: opening a pipe with no writer would otherwise block here forever; it has
     * no effect on regular files and mmap, and anything else is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return sl_fail(SL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sl_fail(SL_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sl_fail(SL_EIO, "%s: expected a regular file, found %s", path,
                       S_ISDIR(st.st_mode) ? "a folder" : S_ISFIFO(st.st_mode) ? "a pipe" : "a special file");
    }
    f->m_bytes = (size_t)st.st_size;
    if (f->m_bytes == 0) {
        close(fd);
        f->m_data = NULL;
        return SL_OK;
    }
    void *p = mmap(NULL, f->m_bytes, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return sl_fail(SL_EIO, "%s: cannot mmap %zu bytes: %s", path, f->m_bytes, strerror(e));
    f->m_data = p;
    return SL_OK;
}

void sl_unmap_file(sl_mapped_file *f) {
    if (f->m_data != NULL) munmap(f->m_data, f->m_bytes);
    f->m_data = NULL;
    f->m_bytes = 0;
}

int sl_make_dirs(const char *path) {
    char buf[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf)) return sl_fail(SL_EINVAL, "folder path '%s' is empty or too long", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return sl_fail(SL_EIO, "%s: cannot create folder %s: %s", path, buf, strerror(errno));
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return sl_fail(SL_EIO, "%s: exists and is not a folder", path);
    return SL_OK;
}

int sl_read_file(const char *path, char **out, size_t *out_bytes) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return sl_fail(SL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return sl_fail(SL_EIO, "%s: cannot seek", path);
    }
    long n = ftell(fp);
    if (n < 0) {
        fclose(fp);
        return sl_fail(SL_EIO, "%s: cannot tell size", path);
    }
    rewind(fp);
    char *buf = sl_alloc((size_t)n + 1);
    if (buf == NULL) {
        fclose(fp);
        return SL_ENOMEM;
    }
    if (n > 0 && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fclose(fp);
        sl_free(buf);
        return sl_fail(SL_EIO, "%s: short read", path);
    }
    fclose(fp);
    buf[n] = '\0';
    *out = buf;
    if (out_bytes) *out_bytes = (size_t)n;
    return SL_OK;
}

int sl_atomic_open(sl_atomic_file *af, const char *path) {
    memset(af, 0, sizeof(*af));
    af->af_fd = -1;
    if (strlen(path) >= sizeof(af->af_path)) return sl_fail(SL_EINVAL, "%s: path too long", path);
    snprintf(af->af_path, sizeof(af->af_path), "%s", path);
    snprintf(af->af_tmp, sizeof(af->af_tmp), "%s.tmpXXXXXX", path);
    af->af_fd = mkstemp(af->af_tmp);
    if (af->af_fd < 0) return sl_fail(SL_EIO, "%s: cannot create temp file: %s", path, strerror(errno));
    return SL_OK;
}

int sl_atomic_write(sl_atomic_file *af, const void *data, size_t bytes) {
    const char *p = data;
    while (bytes > 0) {
        ssize_t n = write(af->af_fd, p, bytes);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sl_fail(SL_EIO, "%s: write failed: %s", af->af_path, strerror(errno));
        }
        p += n;
        bytes -= (size_t)n;
    }
    return SL_OK;
}

int sl_atomic_commit(sl_atomic_file *af) {
    if (fsync(af->af_fd) != 0) {
        int e = errno;
        sl_atomic_abort(af);
        return sl_fail(SL_EIO, "%s: fsync failed: %s", af->af_path, strerror(e));
    }
    fchmod(af->af_fd, 0644);
    close(af->af_fd);
    af->af_fd = -1;
    if (rename(af->af_tmp, af->af_path) != 0) {
        int e = errno;
        unlink(af->af_tmp);
        return sl_fail(SL_EIO, "%s: rename failed: %s", af->af_path, strerror(e));
    }
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", af->af_path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return SL_OK;
}

void sl_atomic_abort(sl_atomic_file *af) {
    if (af->af_fd >= 0) {
        close(af->af_fd);
        unlink(af->af_tmp);
    }
    af->af_fd = -1;
}

int sl_write_file_atomic(const char *path, const void *data, size_t bytes) {
    sl_atomic_file af;
    int rc = sl_atomic_open(&af, path);
    if (rc != 0) return rc;
    rc = sl_atomic_write(&af, data, bytes);
    if (rc != 0) {
        sl_atomic_abort(&af);
        return rc;
    }
    return sl_atomic_commit(&af);
}

uint64_t sl_hash64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void sl_rng_init(sl_rng *r, uint64_t seed, uint64_t stream) {
    r->r_state = sl_hash64(seed ^ sl_hash64(stream + 0x5851f42d4c957f2dULL));
}

uint64_t sl_rng_u64(sl_rng *r) {
    r->r_state += 0x9e3779b97f4a7c15ULL;
    uint64_t z = r->r_state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float sl_rng_uniform(sl_rng *r) { return (float)(sl_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float sl_rng_normal(sl_rng *r) {
    double u1 = ((double)(sl_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(sl_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

double sl_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t status_kb(const char *key) {
    FILE *fp = fopen("/proc/self/status", "r");
    if (fp == NULL) return 0;
    char line[256];
    size_t kb = 0, klen = strlen(key);
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, key, klen) == 0) {
            kb = (size_t)strtoull(line + klen, NULL, 10);
            break;
        }
    }
    fclose(fp);
    return kb * 1024;
}

size_t sl_peak_rss_bytes(void) { return status_kb("VmHWM:"); }
size_t sl_current_rss_bytes(void) { return status_kb("VmRSS:"); }

int sl_reset_peak_rss(void) {
    FILE *fp = fopen("/proc/self/clear_refs", "w");
    if (fp == NULL) return sl_fail(SL_EIO, "/proc/self/clear_refs: cannot open to reset the peak resident set");
    int ok = fputs("5", fp) >= 0;
    ok &= fclose(fp) == 0;
    return ok ? SL_OK : sl_fail(SL_EIO, "/proc/self/clear_refs: cannot reset the peak resident set");
}

size_t sl_resident_bytes(const void *addr, size_t len) {
    /* The Rss of the mappings that overlap the range, from /proc/self/smaps: pages this
     * process has in its page tables (mincore would report the page cache instead). */
    if (addr == NULL || len == 0) return 0;
    FILE *fp = fopen("/proc/self/smaps", "r");
    if (fp == NULL) return 0;
    const uintptr_t lo = (uintptr_t)addr, hi = lo + len;
    char line[512];
    int inside = 0;
    size_t kb = 0;
    while (fgets(line, sizeof(line), fp)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') == line + strcspn(line, "-")) {
            inside = a < hi && b > lo;
            continue;
        }
        if (inside && strncmp(line, "Rss:", 4) == 0) kb += strtoull(line + 4, NULL, 10);
    }
    fclose(fp);
    return kb * 1024;
}
