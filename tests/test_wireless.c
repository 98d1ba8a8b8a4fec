/* test_wireless.c: the wireless model (src/net/wireless.c) — path loss at 100 m, 50 m and 1 km
 * against hand-computed values; a Shannon rate from a dB link budget done by hand; rates
 * monotone in distance and bandwidth; k active users of one edge each get B/k (uplink: full
 * power on the share; downlink: exactly 1/k of the rate); fading deterministic per
 * (seed, round, user, direction) with mean |h|^2 within 1% of 1 over 10^5 draws; placement in
 * bounds, deterministic and independent of the number of users; step and round latency equal
 * hand-computed critical paths (two streams contending for the cloud, two streams sharing one
 * edge, a round with its adapter exchange, an fl-like stream); every bad parameter refused with
 * a message naming it; the link shaper's time and sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "net/wireless.h"
#include "util/common.h"

#define FADING_DRAWS 100000

static void assert_close(double got, double want, double rel) {
    double tol = rel * fabs(want) + 1e-12;
    if (fabs(got - want) > tol) fail_msg("got %.12g, want %.12g (tolerance %.3g)", got, want, tol);
}

static void assert_error_mentions(int rc, const char *a, const char *b) {
    assert_int_equal(rc, SL_EINVAL);
    const char *msg = sl_last_error();
    if (strstr(msg, a) == NULL || (b != NULL && strstr(msg, b) == NULL))
        fail_msg("error '%s' should mention '%s'%s%s", msg, a, b ? " and " : "", b ? b : "");
}

/* ---------------------------------------------------------------- radio */

static void test_defaults_valid(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    assert_int_equal(sl_wireless_check(&c), 0);
    assert_true(c.wc_d_min_m == 50.0 && c.wc_d_max_m == 500.0);
    assert_true(c.wc_user_tx_dbm == 23.0 && c.wc_edge_tx_dbm == 46.0 && c.wc_noise_dbm_hz == -174.0);
    assert_true(c.wc_fading == 1 && c.wc_server_sharing == SL_WIRELESS_SERVER_SHARED);
}

static void test_path_loss_hand_values(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    assert_close(sl_wireless_path_loss_db(&c, 1000.0), 128.1, 1e-12);
    assert_close(sl_wireless_path_loss_db(&c, 100.0), 128.1 - 37.6, 1e-12); /* log10(0.1) = -1: 90.5 dB */
    /* log10(0.05) = -1.30103: 128.1 - 48.9187 = 79.1813 dB */
    assert_close(sl_wireless_path_loss_db(&c, 50.0), 79.18127, 1e-6);
    assert_close(sl_wireless_dbm_to_w(23.0), 0.19952623, 1e-7);
    assert_close(sl_wireless_dbm_to_w(30.0), 1.0, 1e-12);
}

/* The link budget in dB, by hand: uplink at 100 m, no fading, one user, 10 MHz:
 * received 23 - 90.5 = -67.5 dBm; noise -174 + 5 (NF) + 70 (10 log10 1e7) = -99 dBm;
 * SNR 31.5 dB; rate 1e7 * log2(1 + 10^3.15) = 104.65 Mbit/s. Downlink: the edge's 46 dBm over
 * the whole band: 46 - 90.5 = -44.5 dBm against -174 + 9 + 70 = -95 dBm: SNR 50.5 dB. */
static void test_shannon_link_budget(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    double up = sl_wireless_link_bps(&c, SL_WIRELESS_UPLINK, 100.0, 1.0, 1);
    assert_close(up, 1e7 * log2(1.0 + pow(10.0, 3.15)), 1e-9);
    assert_true(up > 104.6e6 && up < 104.7e6);
    double down = sl_wireless_link_bps(&c, SL_WIRELESS_DOWNLINK, 100.0, 1.0, 1);
    assert_close(down, 1e7 * log2(1.0 + pow(10.0, 5.05)), 1e-9);
    assert_close(sl_wireless_shannon_bps(1e6, 1.0), 1e6, 1e-15);
    assert_close(sl_wireless_shannon_bps(2e6, 3.0), 4e6, 1e-15);
}

static void test_rate_monotone(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    for (int dir = 0; dir < 2; dir++) {
        double prev = INFINITY;
        for (double d = 50.0; d <= 500.0; d += 5.0) {
            double r = sl_wireless_link_bps(&c, (sl_wireless_direction)dir, d, 1.0, 1);
            assert_true(r > 0 && r < prev);
            prev = r;
        }
        /* More bandwidth, same power: more rate. */
        prev = 0.0;
        for (double b = 1e5; b <= 1e8; b *= 1.5) {
            c.wc_uplink_hz = c.wc_downlink_hz = b;
            double r = sl_wireless_link_bps(&c, (sl_wireless_direction)dir, 300.0, 1.0, 1);
            assert_true(r > prev);
            prev = r;
        }
        sl_wireless_defaults(&c);
    }
    /* A better channel gives more rate. */
    assert_true(sl_wireless_link_bps(&c, SL_WIRELESS_UPLINK, 300.0, 2.0, 1) >
                sl_wireless_link_bps(&c, SL_WIRELESS_UPLINK, 300.0, 1.0, 1));
}

static void test_bandwidth_shared_by_active_users(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    double d = 250.0, g = 0.7;
    double pl = pow(10.0, -sl_wireless_path_loss_db(&c, d) / 10.0);
    double p_user = sl_wireless_dbm_to_w(c.wc_user_tx_dbm);
    double n0 = sl_wireless_dbm_to_w(c.wc_noise_dbm_hz + c.wc_edge_noise_figure_db);
    double down1 = sl_wireless_link_bps(&c, SL_WIRELESS_DOWNLINK, d, g, 1);
    for (int k = 1; k <= 8; k++) {
        double b = c.wc_uplink_hz / k;
        /* Uplink: the user keeps its power on a band 1/k as wide. */
        assert_close(sl_wireless_link_bps(&c, SL_WIRELESS_UPLINK, d, g, k), b * log2(1.0 + p_user * g * pl / (n0 * b)),
                     1e-12);
        /* Downlink: the edge's power spreads over the band, so the SNR stays and the rate is 1/k. */
        assert_close(sl_wireless_link_bps(&c, SL_WIRELESS_DOWNLINK, d, g, k), down1 / k, 1e-12);
    }

    /* round_rates: users 0,1,2 on edge 0 active, user 3 on edge 0 inactive, user 4 alone on
     * edge 1. Edge 0 splits among 3, edge 1 does not split. */
    double dist[5] = {60.0, 120.0, 480.0, 200.0, 300.0};
    int edge[5] = {0, 0, 0, 0, 1};
    unsigned char active[5] = {1, 1, 1, 0, 1};
    double up[5], down[5];
    uint64_t seed = 42, round = 7;
    assert_int_equal(sl_wireless_round_rates(&c, 5, dist, active, edge, 2, round, seed, up, down), 0);
    for (int u = 0; u < 5; u++) {
        if (!active[u]) {
            assert_true(up[u] == 0.0 && down[u] == 0.0);
            continue;
        }
        int k = edge[u] == 0 ? 3 : 1;
        double gu = sl_wireless_fading_gain(&c, seed, round, u, SL_WIRELESS_UPLINK);
        double gd = sl_wireless_fading_gain(&c, seed, round, u, SL_WIRELESS_DOWNLINK);
        assert_close(up[u], sl_wireless_link_bps(&c, SL_WIRELESS_UPLINK, dist[u], gu, k), 1e-12);
        assert_close(down[u], sl_wireless_link_bps(&c, SL_WIRELESS_DOWNLINK, dist[u], gd, k), 1e-12);
    }
    /* All active (NULL mask): edge 0 now splits among 4. */
    assert_int_equal(sl_wireless_round_rates(&c, 5, dist, NULL, edge, 2, round, seed, up, down), 0);
    double gd0 = sl_wireless_fading_gain(&c, seed, round, 0, SL_WIRELESS_DOWNLINK);
    assert_close(down[0], sl_wireless_link_bps(&c, SL_WIRELESS_DOWNLINK, dist[0], gd0, 1) / 4, 1e-12);
    /* Rates change from round to round (fading redrawn) and not without fading. */
    double up2[5], down2[5];
    assert_int_equal(sl_wireless_round_rates(&c, 5, dist, NULL, edge, 2, round + 1, seed, up2, down2), 0);
    assert_true(up2[0] != up[0]);
    c.wc_fading = 0;
    assert_int_equal(sl_wireless_round_rates(&c, 5, dist, NULL, edge, 2, round, seed, up, down), 0);
    assert_int_equal(sl_wireless_round_rates(&c, 5, dist, NULL, edge, 2, round + 1, seed, up2, down2), 0);
    for (int u = 0; u < 5; u++) assert_true(up[u] == up2[u] && down[u] == down2[u]);
}

static void test_fading_deterministic_and_unit_mean(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    double a = sl_wireless_fading_gain(&c, 1, 2, 3, SL_WIRELESS_UPLINK);
    assert_true(a == sl_wireless_fading_gain(&c, 1, 2, 3, SL_WIRELESS_UPLINK));
    assert_true(a == sl_wireless_fading_gain(NULL, 1, 2, 3, SL_WIRELESS_UPLINK));
    assert_true(a != sl_wireless_fading_gain(&c, 2, 2, 3, SL_WIRELESS_UPLINK));   /* seed */
    assert_true(a != sl_wireless_fading_gain(&c, 1, 3, 3, SL_WIRELESS_UPLINK));   /* round */
    assert_true(a != sl_wireless_fading_gain(&c, 1, 2, 4, SL_WIRELESS_UPLINK));   /* user */
    assert_true(a != sl_wireless_fading_gain(&c, 1, 2, 3, SL_WIRELESS_DOWNLINK)); /* direction */
    double sum = 0.0, sum_sq = 0.0, below = 0.0;
    for (int i = 0; i < FADING_DRAWS; i++) {
        double g = sl_wireless_fading_gain(&c, 2025, (uint64_t)(i / 100), i % 100, SL_WIRELESS_UPLINK);
        assert_true(g >= 0.0 && isfinite(g));
        sum += g;
        sum_sq += g * g;
        below += g < log(2.0); /* P(Exp(1) < ln 2) = 1/2 */
    }
    double mean = sum / FADING_DRAWS;
    assert_true(fabs(mean - 1.0) < 0.01);
    assert_true(fabs(sum_sq / FADING_DRAWS - 2.0) < 0.05); /* E[X^2] = 2 for Exp(1) */
    assert_true(fabs(below / FADING_DRAWS - 0.5) < 0.01);
    c.wc_fading = 0;
    assert_true(sl_wireless_fading_gain(&c, 1, 2, 3, SL_WIRELESS_UPLINK) == 1.0);
}

static void test_placement(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    enum { N = 1000 };
    static double d[N], d2[N], d3[N];
    assert_int_equal(sl_wireless_place_users(&c, N, 7, d), 0);
    double lo = INFINITY, hi = 0, sum = 0;
    for (int u = 0; u < N; u++) {
        assert_true(d[u] >= 50.0 && d[u] <= 500.0);
        lo = fmin(lo, d[u]);
        hi = fmax(hi, d[u]);
        sum += d[u];
    }
    assert_true(lo < 60.0 && hi > 490.0);            /* spread over the range */
    assert_true(fabs(sum / N - 275.0) < 15.0);       /* uniform mean (50 + 500) / 2 */
    assert_int_equal(sl_wireless_place_users(&c, N, 7, d2), 0);
    assert_memory_equal(d, d2, sizeof d);            /* deterministic */
    assert_int_equal(sl_wireless_place_users(&c, 10, 7, d3), 0);
    assert_memory_equal(d, d3, 10 * sizeof(double)); /* user u's place does not depend on N */
    assert_int_equal(sl_wireless_place_users(&c, N, 8, d2), 0);
    assert_true(memcmp(d, d2, sizeof d) != 0);       /* another seed, other places */
    c.wc_d_min_m = c.wc_d_max_m = 123.0;
    assert_int_equal(sl_wireless_place_users(&c, 4, 7, d2), 0);
    for (int u = 0; u < 4; u++) assert_true(d2[u] == 123.0);
    assert_int_equal(sl_wireless_place_users(&c, 0, 7, NULL), 0);
}

/* ---------------------------------------------------------------- latency */

/* Round numbers so every stage is a whole second: user 1e12 FLOP/s, edge and cloud 1e13,
 * backhaul 8 Mbit/s with 0.5 s delay, 1 MB messages on 8 Mbit/s links. */
static void latency_config(sl_wireless_config *c) {
    sl_wireless_defaults(c);
    c->wc_user_flop_per_s = 1e12;
    c->wc_edge_flop_per_s = 1e13;
    c->wc_cloud_flop_per_s = 1e13;
    c->wc_backhaul_bps = 8e6;
    c->wc_backhaul_delay_s = 0.5;
}

static sl_wireless_stream unit_stream(int edge) {
    sl_wireless_stream s;
    memset(&s, 0, sizeof s);
    s.ws_edge = edge;
    s.ws_uplink_bps = 8e6;
    s.ws_downlink_bps = 8e6;
    s.ws_user_fwd_flop = 1e12;  /* 1 s */
    s.ws_up_bytes = 1000000;    /* 1 s */
    s.ws_edge_fwd_flop = 1e13;  /* 1 s */
    s.ws_to_cloud_bytes = 1000000; /* 1 s + 0.5 s */
    s.ws_cloud_flop = 2e13;     /* 2 s alone */
    s.ws_from_cloud_bytes = 1000000; /* 1 s + 0.5 s */
    s.ws_edge_bwd_flop = 1e13;  /* 1 s */
    s.ws_down_bytes = 1000000;  /* 1 s */
    s.ws_user_bwd_flop = 1e12;  /* 1 s */
    return s;
}

/* Two streams on two edges, B's uplink half as fast (2 s). A reaches the cloud at
 * 1+1+1+1.5 = 4.5 s, B at 5.5 s. Shared cloud: A alone 4.5-5.5 (1 s of its 2 s done); both
 * 5.5-7.5 at half speed (A's last second takes 2 s, B does 1 s); B alone 7.5-8.5. A ends
 * 7.5 + 1.5 + 1 + 1 + 1 = 12 s, B 8.5 + 4.5 = 13 s: the step takes 13 s. One cloud per
 * stream: A 4.5 + 2 + 4.5 = 11, B 12. */
static void test_step_latency_two_streams_hand(void **state) {
    (void)state;
    sl_wireless_config c;
    latency_config(&c);
    sl_wireless_stream s[2] = {unit_stream(0), unit_stream(1)};
    s[1].ws_uplink_bps = 4e6;
    double lat, done[2];
    assert_int_equal(sl_wireless_step_latency(&c, s, 2, &lat, done), 0);
    assert_close(done[0], 12.0, 1e-12);
    assert_close(done[1], 13.0, 1e-12);
    assert_close(lat, 13.0, 1e-12);
    c.wc_server_sharing = SL_WIRELESS_SERVER_PER_STREAM;
    assert_int_equal(sl_wireless_step_latency(&c, s, 2, &lat, done), 0);
    assert_close(done[0], 11.0, 1e-12);
    assert_close(done[1], 12.0, 1e-12);
    assert_close(lat, 12.0, 1e-12);
    /* One stream alone: the plain sum 1+1+1+1.5+2+1.5+1+1+1 = 11. */
    assert_int_equal(sl_wireless_step_latency(&c, s, 1, &lat, NULL), 0);
    assert_close(lat, 11.0, 1e-12);
}

/* Two identical streams of one edge (SFL-like): everything on the edge, its backhaul and
 * the cloud is shared the whole time, so each such stage takes twice as long:
 * 1 + 1 + 2 (edge) + 2 + 0.5 (backhaul) + 4 (cloud) + 2 + 0.5 + 2 (edge) + 1 + 1 = 17 s.
 * Per-stream servers: only the backhaul is shared: 1+1+1+2+0.5+2+2+0.5+1+1+1 = 13 s. */
static void test_step_latency_shared_edge_hand(void **state) {
    (void)state;
    sl_wireless_config c;
    latency_config(&c);
    sl_wireless_stream s[2] = {unit_stream(3), unit_stream(3)};
    double lat, done[2];
    assert_int_equal(sl_wireless_step_latency(&c, s, 2, &lat, done), 0);
    assert_close(lat, 17.0, 1e-12);
    assert_close(done[0], 17.0, 1e-12);
    assert_close(done[1], 17.0, 1e-12);
    c.wc_server_sharing = SL_WIRELESS_SERVER_PER_STREAM;
    assert_int_equal(sl_wireless_step_latency(&c, s, 2, &lat, NULL), 0);
    assert_close(lat, 13.0, 1e-12);
    /* Two-tier through the edge (edge relays, no edge compute): 1+1+(2+0.5)+4+(2+0.5)+1+1 = 13. */
    c.wc_server_sharing = SL_WIRELESS_SERVER_SHARED;
    for (int i = 0; i < 2; i++) s[i].ws_edge_fwd_flop = s[i].ws_edge_bwd_flop = 0;
    assert_int_equal(sl_wireless_step_latency(&c, s, 2, &lat, NULL), 0);
    assert_close(lat, 13.0, 1e-12);
}

/* A round of one stream, 2 steps: start 1 MB from the cloud (1 + 0.5 s) and 2 MB down (2 s),
 * 2 steps of 11 s, end 1 MB up (1 s) and 1 MB to the cloud (1 + 0.5 s): 28 s. */
static void test_round_latency_hand(void **state) {
    (void)state;
    sl_wireless_config c;
    latency_config(&c);
    sl_wireless_stream s = unit_stream(0);
    double lat, step;
    assert_int_equal(sl_wireless_round_latency(&c, &s, 1, 1, &lat, NULL), 0);
    assert_int_equal(sl_wireless_step_latency(&c, &s, 1, &step, NULL), 0);
    assert_close(lat, step, 1e-12); /* no exchange bytes: a round of 1 step is a step */
    s.ws_round_from_cloud_bytes = 1000000;
    s.ws_round_down_bytes = 2000000;
    s.ws_round_up_bytes = 1000000;
    s.ws_round_to_cloud_bytes = 1000000;
    assert_int_equal(sl_wireless_round_latency(&c, &s, 1, 2, &lat, NULL), 0);
    assert_close(lat, 28.0, 1e-12);
    assert_int_equal(sl_wireless_round_latency(&c, &s, 1, 0, &lat, NULL), 0);
    assert_close(lat, 1.5 + 2 + 1 + 1.5, 1e-12);

    /* fl-like: whole model at the user (3 s forward, 6 s backward), no per-step bytes, the
     * adapter down and up each round: 1.5 + 2 + 5 * 9 + 1 + 1.5 = 51 s; two such users on one
     * edge share its backhaul for the exchange: 1 MB each at 8 Mbit/s -> 2 s + 0.5 both ways:
     * 2.5 + 2 + 45 + 1 + 2.5 = 53 s. */
    sl_wireless_stream f;
    memset(&f, 0, sizeof f);
    f.ws_uplink_bps = f.ws_downlink_bps = 8e6;
    f.ws_user_fwd_flop = 3e12;
    f.ws_user_bwd_flop = 6e12;
    f.ws_round_from_cloud_bytes = f.ws_round_up_bytes = f.ws_round_to_cloud_bytes = 1000000;
    f.ws_round_down_bytes = 2000000;
    assert_int_equal(sl_wireless_round_latency(&c, &f, 1, 5, &lat, NULL), 0);
    assert_close(lat, 51.0, 1e-12);
    sl_wireless_stream ff[2] = {f, f};
    assert_int_equal(sl_wireless_round_latency(&c, ff, 2, 5, &lat, NULL), 0);
    assert_close(lat, 53.0, 1e-12);

    /* Streams do not wait for each other between steps: with a cloud per stream and one
     * stream per edge nothing is shared, and each stream ends at its own pace. Stream 0:
     * 3 steps of 11 s = 33 s; stream 1's user is 4x slower (1 s -> 4 s, twice per step):
     * 3 steps of 17 s = 51 s. */
    sl_wireless_stream two[2] = {unit_stream(0), unit_stream(1)};
    double done[2];
    c.wc_server_sharing = SL_WIRELESS_SERVER_PER_STREAM;
    two[1].ws_user_fwd_flop = two[1].ws_user_bwd_flop = 4e12;
    assert_int_equal(sl_wireless_round_latency(&c, two, 2, 3, &lat, done), 0);
    assert_close(done[0], 33.0, 1e-12);
    assert_close(done[1], 51.0, 1e-12);
    assert_close(lat, 51.0, 1e-12);
}

/* ---------------------------------------------------------------- refusals */

static void test_bad_parameters_named(void **state) {
    (void)state;
    sl_wireless_config c;
    sl_wireless_defaults(&c);
    c.wc_uplink_hz = -1.0;
    assert_error_mentions(sl_wireless_check(&c), "uplink_hz", "-1");
    sl_wireless_defaults(&c);
    c.wc_downlink_hz = 0.0;
    assert_error_mentions(sl_wireless_check(&c), "downlink_hz", "> 0");
    sl_wireless_defaults(&c);
    c.wc_d_min_m = 600.0;
    assert_error_mentions(sl_wireless_check(&c), "d_min_m", "d_max_m");
    double d[2];
    assert_error_mentions(sl_wireless_place_users(&c, 2, 1, d), "d_min_m", "600");
    sl_wireless_defaults(&c);
    c.wc_d_min_m = 0.0;
    assert_error_mentions(sl_wireless_check(&c), "d_min_m", "> 0");
    sl_wireless_defaults(&c);
    c.wc_user_tx_dbm = NAN;
    assert_error_mentions(sl_wireless_check(&c), "user_tx_dbm", "nan");
    sl_wireless_defaults(&c);
    c.wc_backhaul_bps = INFINITY;
    assert_error_mentions(sl_wireless_check(&c), "backhaul_bps", "inf");
    sl_wireless_defaults(&c);
    c.wc_backhaul_delay_s = -0.1;
    assert_error_mentions(sl_wireless_check(&c), "backhaul_delay_s", ">= 0");
    sl_wireless_defaults(&c);
    c.wc_cloud_flop_per_s = 0;
    assert_error_mentions(sl_wireless_check(&c), "cloud_flop_per_s", NULL);
    sl_wireless_defaults(&c);
    c.wc_edge_noise_figure_db = -3;
    assert_error_mentions(sl_wireless_check(&c), "edge_noise_figure_db", "-3");
    sl_wireless_defaults(&c);
    c.wc_fading = 2;
    assert_error_mentions(sl_wireless_check(&c), "fading", "2");
    sl_wireless_defaults(&c);
    c.wc_server_sharing = (sl_wireless_sharing)7;
    assert_error_mentions(sl_wireless_check(&c), "server_sharing", "7");

    /* round_rates: a user on an edge that does not exist, a bad distance. */
    sl_wireless_defaults(&c);
    double dist[3] = {100, 200, 300}, up[3], down[3];
    int edge[3] = {0, 1, 2};
    assert_error_mentions(sl_wireless_round_rates(&c, 3, dist, NULL, edge, 2, 0, 1, up, down), "user 2", "edge 2");
    edge[2] = 1;
    dist[1] = -5;
    assert_error_mentions(sl_wireless_round_rates(&c, 3, dist, NULL, edge, 2, 0, 1, up, down), "user 1", "-5");

    /* latency: bytes on the uplink of an inactive user, a negative FLOP count, bad sizes. */
    sl_wireless_stream s[2] = {unit_stream(0), unit_stream(1)};
    double lat;
    s[1].ws_uplink_bps = 0;
    assert_error_mentions(sl_wireless_step_latency(&c, s, 2, &lat, NULL), "stream 1", "uplink_bps");
    s[1] = unit_stream(1);
    s[0].ws_cloud_flop = -1;
    assert_error_mentions(sl_wireless_step_latency(&c, s, 2, &lat, NULL), "stream 0", "cloud_flop");
    s[0] = unit_stream(-1);
    assert_error_mentions(sl_wireless_step_latency(&c, s, 2, &lat, NULL), "stream 0", "edge -1");
    s[0] = unit_stream(0);
    assert_error_mentions(sl_wireless_step_latency(&c, s, 0, &lat, NULL), "streams", "0");
    assert_error_mentions(sl_wireless_round_latency(&c, s, 2, -1, &lat, NULL), "local_steps", "-1");
    s[0].ws_round_down_bytes = 10;
    s[0].ws_downlink_bps = 0;
    s[0].ws_down_bytes = 0;
    assert_int_equal(sl_wireless_step_latency(&c, s, 1, &lat, NULL), 0); /* a step has no round bytes */
    assert_error_mentions(sl_wireless_round_latency(&c, s, 1, 1, &lat, NULL), "stream 0", "downlink_bps");
}

/* ---------------------------------------------------------------- link shaper */

static void test_link_shaper(void **state) {
    (void)state;
    sl_wireless_shaper s;
    assert_int_equal(sl_wireless_shaper_init(&s, 8e6, 0.01), 0);
    assert_close(sl_wireless_shaper_time_s(&s, 1000000), 1.01, 1e-12);
    assert_close(sl_wireless_shaper_time_s(&s, 0), 0.01, 1e-12);
    assert_int_equal(sl_wireless_shaper_init(&s, INFINITY, 0.02), 0);
    assert_close(sl_wireless_shaper_time_s(&s, 123456789), 0.02, 1e-12);
    assert_error_mentions(sl_wireless_shaper_init(&s, 0, 0), "rate_bps", "0");
    assert_error_mentions(sl_wireless_shaper_init(&s, -8e6, 0), "rate_bps", "-8e+06");
    assert_error_mentions(sl_wireless_shaper_init(&s, 8e6, -1), "delay_s", "-1");
    assert_error_mentions(sl_wireless_shaper_init(&s, 8e6, NAN), "delay_s", "nan");

    /* 20,000 bytes at 1.6 Mbit/s = 0.1 s, + 0.02 s delay: the wait ends 0.12 s after start. */
    assert_int_equal(sl_wireless_shaper_init(&s, 1.6e6, 0.02), 0);
    double t0 = sl_now_s();
    double slept = sl_wireless_shaper_wait(&s, t0, 20000);
    double elapsed = sl_now_s() - t0;
    assert_true(slept > 0.1 && slept <= 0.12 + 1e-9);
    assert_true(elapsed >= 0.12 - 1e-6 && elapsed < 0.5);
    /* Measured from a start that already lies that far back: no sleep. */
    assert_true(sl_wireless_shaper_wait(&s, sl_now_s() - 1.0, 20000) == 0.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_valid),
        cmocka_unit_test(test_path_loss_hand_values),
        cmocka_unit_test(test_shannon_link_budget),
        cmocka_unit_test(test_rate_monotone),
        cmocka_unit_test(test_bandwidth_shared_by_active_users),
        cmocka_unit_test(test_fading_deterministic_and_unit_mean),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_step_latency_two_streams_hand),
        cmocka_unit_test(test_step_latency_shared_edge_hand),
        cmocka_unit_test(test_round_latency_hand),
        cmocka_unit_test(test_bad_parameters_named),
        cmocka_unit_test(test_link_shaper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
