/* partition.h: who gets which sample — the seeded validation hold-out and the split of the
 * remaining samples over N users: iid, Dirichlet(alpha) non-IID over the values of a key,
 * or whole key groups per user. Pure index arithmetic on sample ids and group ids.
 * Not for: reading or tokenizing data (prepare.h), files (shard.h). */
#ifndef SPLITLLM_DATA_PARTITION_H
#define SPLITLLM_DATA_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "util/common.h"

typedef enum {
    SL_PARTITION_IID = 1,       /* shuffle, then deal round-robin: sizes differ by at most 1 */
    SL_PARTITION_DIRICHLET = 2, /* per key value, user shares drawn from Dir(alpha) */
    SL_PARTITION_BY_KEY = 3,    /* every key value (group) goes whole to one user */
} sl_partition_method;

/* Random streams (sl_rng stream ids) so that each decision has its own numbers. */
enum {
    SL_STREAM_VAL_SPLIT = 0x7661,  /* "va": validation hold-out */
    SL_STREAM_PARTITION = 0x7061,  /* "pa": base of partition streams */
};

/* Dirichlet draws are retried with fresh streams when a user comes out empty; after this
 * many tries the split is refused with a message. */
#define SL_DIRICHLET_MAX_TRIES 100

typedef struct {
    sl_partition_method pt_method;
    int pt_users;        /* N >= 1 */
    double pt_alpha;     /* Dirichlet concentration, > 0 */
    uint64_t pt_seed;
} sl_partition_config;

/* "iid", "dirichlet", "by-key" <-> the enum; parse returns 0 or SL_EINVAL. */
int sl_partition_parse(const char *name, sl_partition_method *out);
const char *sl_partition_name(sl_partition_method m);

/* Holds out n_val = round(fraction * n) samples (at least 1 when fraction > 0 and n >= 2),
 * chosen by a seeded shuffle. is_val: (n), set to 1 for held-out samples, 0 otherwise.
 * Returns n_val in *out_n_val. */
int sl_split_val(size_t n, double fraction, uint64_t seed, uint8_t *is_val, size_t *out_n_val);

/* Assigns each of n samples to a user. group: (n) group id in 0..n_groups-1 of each sample
 * (its key value; ignored by iid, may be NULL then). user_of: (n) output, 0..N-1.
 * Every user gets at least one sample, or the call fails with a message saying why.
 * Deterministic for a seed. */
int sl_partition(const sl_partition_config *cfg, size_t n, const int *group, int n_groups, int *user_of);

/* Uniform integer in [0, bound), bound >= 1, without modulo bias. */
uint64_t sl_rng_below(sl_rng *r, uint64_t bound);
/* Fisher–Yates shuffle of a (n). */
void sl_rng_shuffle_u64(sl_rng *r, uint64_t *a, size_t n);

/* Gamma(shape, 1) sample (Marsaglia–Tsang; shape < 1 by the shape+1 boost), returned as its
 * natural log so that tiny draws for small shapes do not underflow. */
double sl_rng_log_gamma_sample(sl_rng *r, double shape);
/* p: (k) one draw from the symmetric Dirichlet(alpha) over k outcomes. */
void sl_rng_dirichlet(sl_rng *r, double alpha, int k, double *p);

#endif
