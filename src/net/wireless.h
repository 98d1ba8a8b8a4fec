/* wireless.h: the wireless model of the paper's setting — where users stand, what rate their
 * radio link to their edge gets in a round (path loss, Rayleigh fading, transmit power, noise,
 * the edge's bandwidth shared by its active users, Shannon), and how long a training step and
 * a round take given the bytes each stream sends on each link and the FLOPs each tier
 * computes (a critical path over parallel streams that share edge compute, backhaul and cloud
 * compute). Also a link shaper: the time an n-byte message takes on a link of a given rate and
 * delay, and a sleep until then, so a transport can pace itself to the modeled rates.
 * Parameters, defaults, sources and formulas: docs/WIRELESS.md.
 * Not for: counting bytes or FLOPs of a scheme (the schemes do), moving bytes (net/link.h),
 * interference between cells, retransmissions, queuing other than the sharing named above.
 * Units are in the names: _m metres, _hz hertz, _dbm/_db decibels, _w watts, _bps bits per
 * second, _s seconds, _flop floating-point operations, _flop_per_s FLOP per second. */
#ifndef SPLITLLM_NET_WIRELESS_H
#define SPLITLLM_NET_WIRELESS_H

#include <stdint.h>

/* How the streams that meet on one server (an edge's compute, the cloud's compute) use it. */
typedef enum {
    /* Processor sharing: the streams whose work is on the server at the same moment split
     * its FLOP/s equally (one server, many model instances, as SFL's server and the cloud
     * of splitllm run them). The default. */
    SL_WIRELESS_SERVER_SHARED = 0,
    /* Each stream has the whole FLOP/s (as if every stream had its own accelerator). */
    SL_WIRELESS_SERVER_PER_STREAM = 1,
} sl_wireless_sharing;

typedef enum {
    SL_WIRELESS_UPLINK = 0,   /* user -> edge */
    SL_WIRELESS_DOWNLINK = 1, /* edge -> user */
} sl_wireless_direction;

/* Every parameter of the model. sl_wireless_defaults() fills the values below; the sources
 * are in wireless.c beside each constant and in docs/WIRELESS.md. */
typedef struct {
    /* Placement: a user's distance to its edge, uniform in [d_min, d_max]. */
    double wc_d_min_m;                /* 50 */
    double wc_d_max_m;                /* 500 */
    /* Path loss PL(dB) = pathloss_db_at_1km + pathloss_db_per_decade * log10(d / 1 km). */
    double wc_pathloss_db_at_1km;     /* 128.1 */
    double wc_pathloss_db_per_decade; /* 37.6 */
    /* 1: Rayleigh block fading, |h|^2 ~ Exp(1), redrawn per (seed, round, user, direction);
     * 0: |h|^2 = 1 (path loss only). */
    int wc_fading;                    /* 1 */
    /* Radio. */
    double wc_user_tx_dbm;            /* 23: each user's transmit power on its uplink share */
    double wc_edge_tx_dbm;            /* 46: the edge's total transmit power over its downlink band */
    double wc_noise_dbm_hz;           /* -174: thermal noise spectral density */
    double wc_edge_noise_figure_db;   /* 5: uplink receiver (the edge) */
    double wc_user_noise_figure_db;   /* 9: downlink receiver (the user) */
    double wc_uplink_hz;              /* 10e6: per edge, shared equally by its active users */
    double wc_downlink_hz;            /* 10e6: per edge, shared equally by its active users */
    /* Wired edge <-> cloud backhaul, per edge, each direction (full duplex). */
    double wc_backhaul_bps;           /* 1e9 */
    double wc_backhaul_delay_s;       /* 5e-3, one way */
    /* Effective compute speed of one device of each tier. */
    double wc_user_flop_per_s;        /* 1e12 */
    double wc_edge_flop_per_s;        /* 1e13 */
    double wc_cloud_flop_per_s;       /* 4e13 */
    sl_wireless_sharing wc_server_sharing; /* SL_WIRELESS_SERVER_SHARED */
} sl_wireless_config;

void sl_wireless_defaults(sl_wireless_config *cfg);
/* 0, or SL_EINVAL naming the first bad parameter, what was expected and what was found
 * (e.g. "wireless: uplink_hz must be a finite number > 0, found -1"). */
int sl_wireless_check(const sl_wireless_config *cfg);

/* ---------------------------------------------------------------- radio */

double sl_wireless_dbm_to_w(double dbm);
/* Path loss in dB at d_m metres (d_m > 0). */
double sl_wireless_path_loss_db(const sl_wireless_config *cfg, double d_m);
/* |h|^2 of one link in one round: Exp(1) from the counter-based stream of
 * (seed, round, user, direction), so any draw can be recomputed alone; 1 when fading is off
 * (pass cfg = NULL to get the Exp(1) draw regardless). */
double sl_wireless_fading_gain(const sl_wireless_config *cfg, uint64_t seed, uint64_t round, int user,
                               sl_wireless_direction dir);
/* Shannon rate B * log2(1 + snr) in bit/s. */
double sl_wireless_shannon_bps(double bandwidth_hz, double snr);
/* The rate of one user's link when k_sharing active users share the edge's band of that
 * direction: bandwidth B/k; uplink power = the user's full power on its share; downlink power
 * = the edge's power / k (the edge spreads its power evenly over its band). snr =
 * P * fading_gain * 10^(-PL/10) / (N0 * NF * B/k). Arguments are assumed valid (checked cfg,
 * d_m > 0, k_sharing >= 1). */
double sl_wireless_link_bps(const sl_wireless_config *cfg, sl_wireless_direction dir, double d_m,
                            double fading_gain, int k_sharing);

/* Distances of users 0..n_users-1 to their edges, uniform in [d_min, d_max]; user u's
 * distance depends only on (seed, u), not on n_users. */
int sl_wireless_place_users(const sl_wireless_config *cfg, int n_users, uint64_t seed, double *distances_m);

/* This round's rates. active[u] != 0 when user u transmits this round (NULL: all users);
 * edge_of_user[u] in [0, n_edges). Each edge's uplink and downlink bands are split equally
 * among its active users; an inactive user gets 0 bit/s both ways. Fading per
 * (seed, round, user, direction). Errors name the user and the value. */
int sl_wireless_round_rates(const sl_wireless_config *cfg, int n_users, const double *distances_m,
                            const unsigned char *active, const int *edge_of_user, int n_edges, uint64_t round,
                            uint64_t seed, double *uplink_bps, double *downlink_bps);

/* ---------------------------------------------------------------- latency */

/* One training stream (one active user and the chain of tiers serving it) in one round.
 * A step runs, in order: user forward, uplink (user -> edge), edge forward, backhaul up
 * (edge -> cloud, + delay), cloud forward + loss + backward, backhaul down (+ delay), edge
 * backward, downlink (edge -> user), user backward. Any stage with 0 bytes or 0 FLOPs takes
 * no time (a backhaul message of 0 bytes is not sent, so no delay either). A round adds, at
 * its start, cloud -> edge (backhaul) then edge -> user (downlink) and, at its end, user ->
 * edge (uplink) then edge -> cloud (backhaul): the adapter exchange. Two-tier schemes and fl
 * are expressed with the same fields (docs/WIRELESS.md, "Schemes"). */
typedef struct {
    int ws_edge;                 /* the edge the user is attached to (>= 0) */
    double ws_uplink_bps;        /* this round's rates of the user's link (round_rates) */
    double ws_downlink_bps;
    /* per step */
    double ws_user_fwd_flop;
    double ws_user_bwd_flop;
    double ws_edge_fwd_flop;
    double ws_edge_bwd_flop;
    double ws_cloud_flop;        /* forward, loss and backward */
    uint64_t ws_up_bytes;        /* user -> edge: activations (and what the loss needs) */
    uint64_t ws_to_cloud_bytes;  /* edge -> cloud: activations */
    uint64_t ws_from_cloud_bytes;/* cloud -> edge: gradient */
    uint64_t ws_down_bytes;      /* edge -> user: gradient */
    /* per round */
    uint64_t ws_round_from_cloud_bytes; /* start: cloud -> edge */
    uint64_t ws_round_down_bytes;       /* start: edge -> user */
    uint64_t ws_round_up_bytes;         /* end: user -> edge */
    uint64_t ws_round_to_cloud_bytes;   /* end: edge -> cloud */
} sl_wireless_stream;

/* Shared resources: each edge's compute and each edge's backhaul (one per direction) are
 * shared by the streams of that edge, the cloud's compute by all streams, by processor
 * sharing (equal split among the streams using it at the same moment); with
 * SL_WIRELESS_SERVER_PER_STREAM every stream has whole edge and cloud compute (the backhaul
 * stays shared). User compute and radio links are the stream's own (the band was already
 * split by round_rates). All streams start at time 0; the result is the time the last one
 * finishes. stream_done_s (may be NULL) receives each stream's finishing time. */

/* One step of every stream (no round exchange). */
int sl_wireless_step_latency(const sl_wireless_config *cfg, const sl_wireless_stream *streams, int n_streams,
                             double *latency_s, double *stream_done_s);
/* A round: the start exchange, local_steps steps back to back (a stream does not wait for the
 * others between steps), the end exchange. local_steps >= 0. */
int sl_wireless_round_latency(const sl_wireless_config *cfg, const sl_wireless_stream *streams, int n_streams,
                              int local_steps, double *latency_s, double *stream_done_s);

/* ---------------------------------------------------------------- link shaper */

/* A link of a given rate and one-way delay, for --shape-links: a message of n bytes takes
 * n*8/rate + delay seconds from the moment it is handed over. */
typedef struct {
    double sh_rate_bps;  /* > 0; +infinity: only the delay */
    double sh_delay_s;   /* >= 0, finite */
} sl_wireless_shaper;

int sl_wireless_shaper_init(sl_wireless_shaper *s, double rate_bps, double delay_s);
double sl_wireless_shaper_time_s(const sl_wireless_shaper *s, uint64_t bytes);
/* Sleeps until start_s + shaper_time_s(bytes) on the sl_now_s() clock (monotonic); returns
 * the seconds slept (0 when that moment has passed). */
double sl_wireless_shaper_wait(const sl_wireless_shaper *s, double start_s, uint64_t bytes);

#endif
