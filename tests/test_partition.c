/* test_partition.c: the validation hold-out and the three partitions — sizes add up,
 * every user non-empty, same seed same split, by-key keeps groups whole, the Gamma sampler
 * has the right mean and variance, and smaller Dirichlet alpha gives measurably more skew
 * (mean total-variation distance of users' label distributions from the global one). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/partition.h"
#include "util/common.h"

enum { N_SAMPLES = 4000, N_LABELS = 5, N_USERS = 10 };

static void labels(int *group, size_t n) {
    for (size_t i = 0; i < n; i++) group[i] = (int)((i * 7) % N_LABELS);
}

static void test_val_split(void **state) {
    (void)state;
    uint8_t a[1000], b[1000];
    size_t na, nb;
    assert_int_equal(sl_split_val(1000, 0.1, 5, a, &na), 0);
    assert_int_equal(na, 100);
    size_t count = 0;
    for (int i = 0; i < 1000; i++) count += a[i];
    assert_int_equal(count, 100);
    assert_int_equal(sl_split_val(1000, 0.1, 5, b, &nb), 0);
    assert_memory_equal(a, b, 1000);
    assert_int_equal(sl_split_val(1000, 0.1, 6, b, &nb), 0);
    assert_memory_not_equal(a, b, 1000);
    /* not just the first 100 */
    size_t head = 0;
    for (int i = 0; i < 100; i++) head += a[i];
    assert_true(head < 50);
    /* rounding and the minimum of one */
    assert_int_equal(sl_split_val(10, 0.25, 1, a, &na), 0);
    assert_int_equal(na, 3); /* 2.5 rounds up */
    assert_int_equal(sl_split_val(5, 0.01, 1, a, &na), 0);
    assert_int_equal(na, 1);
    assert_int_equal(sl_split_val(5, 0.0, 1, a, &na), 0);
    assert_int_equal(na, 0);
    assert_int_equal(sl_split_val(1, 0.5, 1, a, &na), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "leaves none to train on"));
    assert_int_equal(sl_split_val(5, 1.0, 1, a, &na), SL_EINVAL);
}

static void sizes_of(const int *user_of, size_t n, int users, size_t *sizes) {
    memset(sizes, 0, (size_t)users * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        assert_true(user_of[i] >= 0 && user_of[i] < users);
        sizes[user_of[i]]++;
    }
}

static void test_iid(void **state) {
    (void)state;
    static int a[N_SAMPLES + N_USERS], b[N_SAMPLES + N_USERS];
    size_t sizes[N_USERS];
    sl_partition_config c = {SL_PARTITION_IID, N_USERS, 1.0, 42};
    assert_int_equal(sl_partition(&c, 4003, NULL, 0, a), 0);
    sizes_of(a, 4003, N_USERS, sizes);
    for (int u = 0; u < N_USERS; u++) assert_int_equal(sizes[u], u < 3 ? 401 : 400);
    assert_int_equal(sl_partition(&c, 4003, NULL, 0, b), 0);
    assert_memory_equal(a, b, 4003 * sizeof(int));
    c.pt_seed = 43;
    assert_int_equal(sl_partition(&c, 4003, NULL, 0, b), 0);
    assert_memory_not_equal(a, b, 4003 * sizeof(int));
    /* too few samples */
    assert_int_equal(sl_partition(&c, 9, NULL, 0, a), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "9 training samples for 10 users"));
}

/* Mean over users of the total-variation distance between the user's label distribution
 * and the global one. */
static double mean_tv(const int *user_of, const int *group, size_t n, int users, int n_labels) {
    double global[N_LABELS] = {0}, sum = 0.0;
    static double per[N_USERS][N_LABELS];
    double size[N_USERS] = {0};
    memset(per, 0, sizeof(per));
    for (size_t i = 0; i < n; i++) {
        global[group[i]] += 1.0 / (double)n;
        per[user_of[i]][group[i]] += 1.0;
        size[user_of[i]] += 1.0;
    }
    for (int u = 0; u < users; u++) {
        double tv = 0.0;
        for (int k = 0; k < n_labels; k++) tv += fabs(per[u][k] / size[u] - global[k]);
        sum += 0.5 * tv;
    }
    return sum / users;
}

static void test_dirichlet_skew(void **state) {
    (void)state;
    static int group[N_SAMPLES], a[N_SAMPLES], b[N_SAMPLES];
    labels(group, N_SAMPLES);
    size_t sizes[N_USERS];
    double tv_small = 0.0, tv_large = 0.0, tv_iid = 0.0;
    const int seeds = 5;
    for (int seed = 1; seed <= seeds; seed++) {
        sl_partition_config c = {SL_PARTITION_DIRICHLET, N_USERS, 0.1, (uint64_t)seed};
        assert_int_equal(sl_partition(&c, N_SAMPLES, group, N_LABELS, a), 0);
        sizes_of(a, N_SAMPLES, N_USERS, sizes);
        for (int u = 0; u < N_USERS; u++) assert_true(sizes[u] > 0);
        tv_small += mean_tv(a, group, N_SAMPLES, N_USERS, N_LABELS) / seeds;
        assert_int_equal(sl_partition(&c, N_SAMPLES, group, N_LABELS, b), 0);
        assert_memory_equal(a, b, sizeof(a));
        c.pt_alpha = 100.0;
        assert_int_equal(sl_partition(&c, N_SAMPLES, group, N_LABELS, a), 0);
        sizes_of(a, N_SAMPLES, N_USERS, sizes);
        tv_large += mean_tv(a, group, N_SAMPLES, N_USERS, N_LABELS) / seeds;
        c.pt_method = SL_PARTITION_IID;
        assert_int_equal(sl_partition(&c, N_SAMPLES, NULL, 0, a), 0);
        tv_iid += mean_tv(a, group, N_SAMPLES, N_USERS, N_LABELS) / seeds;
    }
    print_message("mean TV distance from the global label distribution: alpha 0.1 %.3f, alpha 100 %.3f, iid %.3f\n",
                  tv_small, tv_large, tv_iid);
    assert_true(tv_small > 0.4);
    assert_true(tv_large < 0.1);
    assert_true(tv_small > 5.0 * tv_large);
    assert_true(tv_iid < 0.1);
}

static void test_dirichlet_errors(void **state) {
    (void)state;
    static int group[N_SAMPLES], a[N_SAMPLES];
    labels(group, 20);
    sl_partition_config c = {SL_PARTITION_DIRICHLET, N_USERS, 0.001, 1};
    /* 20 samples in 5 groups over 10 users with a near-degenerate alpha: some user stays empty */
    assert_int_equal(sl_partition(&c, 20, group, N_LABELS, a), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "got no samples in each of 100 draws"));
    assert_non_null(strstr(sl_last_error(), "alpha 0.001"));
    c.pt_alpha = 0.0;
    assert_int_equal(sl_partition(&c, 20, group, N_LABELS, a), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "expected alpha > 0"));
    c.pt_alpha = 1.0;
    assert_int_equal(sl_partition(&c, 20, NULL, 0, a), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "--key"));
}

static void test_by_key(void **state) {
    (void)state;
    enum { G = 23, N = 4 };
    static int group[N_SAMPLES], a[N_SAMPLES], b[N_SAMPLES];
    /* group g has g+1 samples */
    size_t n = 0;
    for (int g = 0; g < G; g++)
        for (int k = 0; k <= g; k++) group[n++] = g;
    sl_partition_config c = {SL_PARTITION_BY_KEY, N, 1.0, 3};
    assert_int_equal(sl_partition(&c, n, group, G, a), 0);
    int owner[G];
    for (int g = 0; g < G; g++) owner[g] = -1;
    for (size_t i = 0; i < n; i++) {
        if (owner[group[i]] < 0) owner[group[i]] = a[i];
        assert_int_equal(owner[group[i]], a[i]); /* whole groups */
    }
    size_t sizes[N], lo = n, hi = 0;
    sizes_of(a, n, N, sizes);
    for (int u = 0; u < N; u++) {
        if (sizes[u] < lo) lo = sizes[u];
        if (sizes[u] > hi) hi = sizes[u];
    }
    /* biggest-first to the least loaded: the spread is at most the largest group */
    assert_true(hi - lo <= (size_t)G);
    assert_int_equal(sl_partition(&c, n, group, G, b), 0);
    assert_memory_equal(a, b, n * sizeof(int));
    /* too few groups */
    c.pt_users = 24;
    assert_int_equal(sl_partition(&c, n, group, G, a), SL_EINVAL);
    assert_non_null(strstr(sl_last_error(), "23 key values for 24 users"));
}

static void test_gamma_moments(void **state) {
    (void)state;
    const double shapes[] = {0.1, 0.5, 1.0, 3.0};
    const int draws = 200000;
    for (int s = 0; s < 4; s++) {
        sl_rng r;
        sl_rng_init(&r, 9, (uint64_t)s);
        double m = 0.0, m2 = 0.0;
        for (int i = 0; i < draws; i++) {
            double x = exp(sl_rng_log_gamma_sample(&r, shapes[s]));
            m += x;
            m2 += x * x;
        }
        m /= draws;
        double var = m2 / draws - m * m;
        /* Gamma(a, 1): mean a, variance a; standard error of the mean sqrt(a / draws) */
        double se = sqrt(shapes[s] / draws);
        if (fabs(m - shapes[s]) > 5 * se || fabs(var - shapes[s]) > 0.05 * shapes[s] + 5 * se)
            fail_msg("shape %g: mean %g variance %g", shapes[s], m, var);
    }
    double p[7], sum = 0.0;
    sl_rng r;
    sl_rng_init(&r, 1, 2);
    sl_rng_dirichlet(&r, 0.01, 7, p);
    for (int i = 0; i < 7; i++) {
        assert_true(p[i] >= 0.0);
        sum += p[i];
    }
    assert_true(fabs(sum - 1.0) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_val_split),        cmocka_unit_test(test_iid),
        cmocka_unit_test(test_dirichlet_skew),   cmocka_unit_test(test_dirichlet_errors),
        cmocka_unit_test(test_by_key),           cmocka_unit_test(test_gamma_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
