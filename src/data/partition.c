/* partition.c: see partition.h. */
#include "data/partition.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- random helpers */

/* Uniform double in the open interval (0, 1): 53 random bits, centred in their cell. */
static double uniform_open(sl_rng *r) { return ((double)(sl_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Standard normal, Box–Muller in double precision. */
static double normal(sl_rng *r) {
    double u1 = uniform_open(r), u2 = uniform_open(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t sl_rng_below(sl_rng *r, uint64_t bound) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = sl_rng_u64(r);
    while (x >= limit);
    return x % bound;
}

/* Fisher–Yates over a (n). */
static void shuffle_size(sl_rng *r, size_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)sl_rng_below(r, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void sl_rng_shuffle_u64(sl_rng *r, uint64_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)sl_rng_below(r, i);
        uint64_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

double sl_rng_log_gamma_sample(sl_rng *r, double shape) {
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a+1) * U^(1/a) */
        double boost = log(uniform_open(r)) / shape;
        return sl_rng_log_gamma_sample(r, shape + 1.0) + boost;
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = uniform_open(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return log(d) + log(v);
    }
}

void sl_rng_dirichlet(sl_rng *r, double alpha, int k, double *p) {
    double mx = -INFINITY;
    for (int i = 0; i < k; i++) {
        p[i] = sl_rng_log_gamma_sample(r, alpha);
        if (p[i] > mx) mx = p[i];
    }
    double sum = 0.0;
    for (int i = 0; i < k; i++) sum += (p[i] = exp(p[i] - mx));
    for (int i = 0; i < k; i++) p[i] /= sum;
}

/* ---------------------------------------------------------------- names */

int sl_partition_parse(const char *name, sl_partition_method *out) {
    if (strcmp(name, "iid") == 0) *out = SL_PARTITION_IID;
    else if (strcmp(name, "dirichlet") == 0) *out = SL_PARTITION_DIRICHLET;
    else if (strcmp(name, "by-key") == 0) *out = SL_PARTITION_BY_KEY;
    else return sl_fail(SL_EINVAL, "partition: expected iid, dirichlet or by-key, found '%s'", name);
    return SL_OK;
}

const char *sl_partition_name(sl_partition_method m) {
    switch (m) {
    case SL_PARTITION_IID: return "iid";
    case SL_PARTITION_DIRICHLET: return "dirichlet";
    case SL_PARTITION_BY_KEY: return "by-key";
    }
    return "?";
}

/* ---------------------------------------------------------------- validation split */

int sl_split_val(size_t n, double fraction, uint64_t seed, uint8_t *is_val, size_t *out_n_val) {
    if (!(fraction >= 0.0 && fraction < 1.0))
        return sl_fail(SL_EINVAL, "validation fraction: expected 0 <= f < 1, found %g", fraction);
    size_t n_val = (size_t)floor(fraction * (double)n + 0.5);
    if (fraction > 0.0 && n_val == 0 && n >= 2) n_val = 1;
    if (n_val >= n && n > 0)
        return sl_fail(SL_EINVAL, "validation fraction %g of %zu samples leaves none to train on", fraction, n);
    memset(is_val, 0, n);
    *out_n_val = n_val;
    if (n_val == 0) return SL_OK;
    size_t *perm = sl_alloc(n * sizeof(size_t));
    if (perm == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) perm[i] = i;
    sl_rng r;
    sl_rng_init(&r, seed, SL_STREAM_VAL_SPLIT);
    shuffle_size(&r, perm, n);
    for (size_t i = 0; i < n_val; i++) is_val[perm[i]] = 1;
    sl_free(perm);
    return SL_OK;
}

/* ---------------------------------------------------------------- partitions */

static int partition_iid(const sl_partition_config *cfg, size_t n, int *user_of) {
    size_t *perm = sl_alloc(n * sizeof(size_t));
    if (perm == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) perm[i] = i;
    sl_rng r;
    sl_rng_init(&r, cfg->pt_seed, SL_STREAM_PARTITION);
    shuffle_size(&r, perm, n);
    for (size_t i = 0; i < n; i++) user_of[perm[i]] = (int)(i % (size_t)cfg->pt_users);
    sl_free(perm);
    return SL_OK;
}

/* Groups as lists: members[start[g] .. start[g+1]) are the samples of group g, in order. */
typedef struct {
    size_t *gl_start;   /* (n_groups+1) */
    size_t *gl_members; /* (n) */
} group_lists;

static int group_lists_build(group_lists *gl, size_t n, const int *group, int n_groups) {
    gl->gl_start = sl_alloc(((size_t)n_groups + 1) * sizeof(size_t));
    gl->gl_members = sl_alloc(n * sizeof(size_t));
    if (gl->gl_start == NULL || gl->gl_members == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (group[i] < 0 || group[i] >= n_groups)
            return sl_fail(SL_EINVAL, "partition: sample %zu has group %d, expected 0..%d", i, group[i], n_groups - 1);
        gl->gl_start[group[i] + 1]++;
    }
    for (int g = 0; g < n_groups; g++) gl->gl_start[g + 1] += gl->gl_start[g];
    size_t *fill = sl_alloc(((size_t)n_groups + 1) * sizeof(size_t));
    if (fill == NULL) return SL_ENOMEM;
    memcpy(fill, gl->gl_start, ((size_t)n_groups + 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) gl->gl_members[fill[group[i]]++] = i;
    sl_free(fill);
    return SL_OK;
}

static void group_lists_free(group_lists *gl) {
    sl_free(gl->gl_start);
    sl_free(gl->gl_members);
}

/* Splits count items into N integer shares proportional to p (largest remainder; ties go
 * to the lower user index). counts: (N) output. frac: (N) scratch. */
static void round_shares(const double *p, int n_users, size_t count, size_t *counts, double *frac) {
    size_t used = 0;
    for (int u = 0; u < n_users; u++) {
        double exact = p[u] * (double)count;
        counts[u] = (size_t)floor(exact);
        if (counts[u] > count) counts[u] = count;
        frac[u] = exact - (double)counts[u];
        used += counts[u];
    }
    while (used < count) {
        int best = 0;
        for (int u = 1; u < n_users; u++)
            if (frac[u] > frac[best]) best = u;
        counts[best]++;
        frac[best] = -1.0;
        used++;
    }
    while (used > count) { /* only reachable through rounding of p summing above 1 */
        int best = 0;
        for (int u = 1; u < n_users; u++)
            if (counts[u] > counts[best]) best = u;
        counts[best]--;
        used--;
    }
}

static int partition_dirichlet(const sl_partition_config *cfg, size_t n, const int *group, int n_groups,
                               int *user_of) {
    if (!(cfg->pt_alpha > 0.0) || !isfinite(cfg->pt_alpha))
        return sl_fail(SL_EINVAL, "dirichlet partition: expected alpha > 0, found %g", cfg->pt_alpha);
    const int N = cfg->pt_users;
    group_lists gl = {0};
    double *p = sl_alloc((size_t)N * sizeof(double)), *frac = sl_alloc((size_t)N * sizeof(double));
    size_t *counts = sl_alloc((size_t)N * sizeof(size_t)), *sizes = sl_alloc((size_t)N * sizeof(size_t));
    int rc = (p && frac && counts && sizes) ? group_lists_build(&gl, n, group, n_groups) : SL_ENOMEM;
    int empty_user = -1;
    for (int attempt = 0; rc == 0 && attempt < SL_DIRICHLET_MAX_TRIES; attempt++) {
        sl_rng r;
        sl_rng_init(&r, cfg->pt_seed, SL_STREAM_PARTITION + 1 + (uint64_t)attempt);
        memset(sizes, 0, (size_t)N * sizeof(size_t));
        for (int g = 0; g < n_groups; g++) {
            size_t *m = gl.gl_members + gl.gl_start[g], count = gl.gl_start[g + 1] - gl.gl_start[g];
            if (count == 0) continue;
            shuffle_size(&r, m, count);
            sl_rng_dirichlet(&r, cfg->pt_alpha, N, p);
            round_shares(p, N, count, counts, frac);
            size_t k = 0;
            for (int u = 0; u < N; u++)
                for (size_t j = 0; j < counts[u]; j++, k++) user_of[m[k]] = u;
            for (int u = 0; u < N; u++) sizes[u] += counts[u];
        }
        empty_user = -1;
        for (int u = 0; u < N && empty_user < 0; u++)
            if (sizes[u] == 0) empty_user = u;
        if (empty_user < 0) break;
    }
    if (rc == 0 && empty_user >= 0)
        rc = sl_fail(SL_EINVAL,
                     "dirichlet partition: user %d got no samples in each of %d draws (alpha %g, %zu samples, "
                     "%d key values, %d users); use a larger --alpha, fewer --users or --partition iid",
                     empty_user, SL_DIRICHLET_MAX_TRIES, cfg->pt_alpha, n, n_groups, N);
    group_lists_free(&gl);
    sl_free(p);
    sl_free(frac);
    sl_free(counts);
    sl_free(sizes);
    return rc;
}

static int partition_by_key(const sl_partition_config *cfg, size_t n, const int *group, int n_groups,
                            int *user_of) {
    const int N = cfg->pt_users;
    group_lists gl = {0};
    size_t *order = sl_alloc(((size_t)n_groups + 1) * sizeof(size_t));
    size_t *load = sl_alloc((size_t)N * sizeof(size_t));
    int *owner = sl_alloc(((size_t)n_groups + 1) * sizeof(int));
    int rc = (order && load && owner) ? group_lists_build(&gl, n, group, n_groups) : SL_ENOMEM;
    if (rc == 0) {
        size_t n_nonempty = 0;
        for (int g = 0; g < n_groups; g++)
            if (gl.gl_start[g + 1] > gl.gl_start[g]) order[n_nonempty++] = (size_t)g;
        if (n_nonempty < (size_t)N) {
            rc = sl_fail(SL_EINVAL,
                         "by-key partition: %zu key values for %d users; every user needs a whole group, so "
                         "expected at least %d values (use fewer --users, another --key or --partition dirichlet)",
                         n_nonempty, N, N);
        } else {
            /* seeded order among groups, then biggest first (stable), each to the least-loaded user */
            sl_rng r;
            sl_rng_init(&r, cfg->pt_seed, SL_STREAM_PARTITION);
            shuffle_size(&r, order, n_nonempty);
            for (size_t i = 1; i < n_nonempty; i++) { /* insertion sort, stable, by size descending */
                size_t g = order[i], sz = gl.gl_start[g + 1] - gl.gl_start[g], j = i;
                while (j > 0 && gl.gl_start[order[j - 1] + 1] - gl.gl_start[order[j - 1]] < sz) {
                    order[j] = order[j - 1];
                    j--;
                }
                order[j] = g;
            }
            for (size_t i = 0; i < n_nonempty; i++) {
                size_t g = order[i];
                int best = 0;
                for (int u = 1; u < N; u++)
                    if (load[u] < load[best]) best = u;
                owner[g] = best;
                load[best] += gl.gl_start[g + 1] - gl.gl_start[g];
            }
            for (size_t i = 0; i < n; i++) user_of[i] = owner[group[i]];
        }
    }
    group_lists_free(&gl);
    sl_free(order);
    sl_free(load);
    sl_free(owner);
    return rc;
}

int sl_partition(const sl_partition_config *cfg, size_t n, const int *group, int n_groups, int *user_of) {
    if (cfg->pt_users < 1) return sl_fail(SL_EINVAL, "partition: expected at least 1 user, found %d", cfg->pt_users);
    if (n < (size_t)cfg->pt_users)
        return sl_fail(SL_EINVAL, "partition: %zu training samples for %d users; every user needs at least one", n,
                       cfg->pt_users);
    if (cfg->pt_method == SL_PARTITION_IID) return partition_iid(cfg, n, user_of);
    if (group == NULL || n_groups < 1)
        return sl_fail(SL_EINVAL, "%s partition: needs a key (--key FIELD) to group the samples",
                       sl_partition_name(cfg->pt_method));
    if (cfg->pt_method == SL_PARTITION_DIRICHLET) return partition_dirichlet(cfg, n, group, n_groups, user_of);
    if (cfg->pt_method == SL_PARTITION_BY_KEY) return partition_by_key(cfg, n, group, n_groups, user_of);
    return sl_fail(SL_EINVAL, "partition: unknown method %d", (int)cfg->pt_method);
}
