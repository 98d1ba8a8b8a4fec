/* wireless.c: see wireless.h. The radio part is closed-form (path loss, Exp(1) fading from
 * counter-based streams, Shannon); the latency part is a small fluid simulation: every stream
 * walks its list of stages, a stage on a shared resource advances at 1/n of full speed while n
 * streams are on that resource, so the critical path over parallel streams comes out with the
 * contention on edge compute, backhaul and cloud compute included. Sources of every default:
 * the comments below and docs/WIRELESS.md. */
#include "net/wireless.h"

#include <errno.h>
#include <math.h>
#include <time.h>

#include "util/common.h"

/* ---------------------------------------------------------------- defaults and their sources */

/* Users uniform in [50, 500] m from their edge: the range issue 5 asks for. 3GPP TR 36.814
 * (v9.0.0, Annex A.2.1.1, macro cell) keeps UEs at least 35 m from the site, which 50 m
 * respects; 500 m is the inter-site distance of 3GPP's urban case 1. */
#define WL_D_MIN_M 50.0
#define WL_D_MAX_M 500.0
/* Macro-cell path loss L = 128.1 + 37.6 log10(R), R in km, 2 GHz carrier: 3GPP TR 36.814
 * v9.0.0, Annex A.2.1.1 (macro-cell propagation model); asked for by issue 5. */
#define WL_PATHLOSS_DB_AT_1KM 128.1
#define WL_PATHLOSS_DB_PER_DECADE 37.6
/* UE maximum transmit power 23 dBm (200 mW, power class 3): 3GPP TR 36.814 Annex A.2.1.1;
 * also the value of LTE system-level studies (e.g. EURASIP JWCN 10.1186/s13638-015-0320-7,
 * Table 1, "Maximum UE transmit power 23 dBm"). */
#define WL_USER_TX_DBM 23.0
/* Macro base-station total transmit power 46 dBm for a 10 MHz carrier: 3GPP TR 36.814
 * Annex A.2.1.1; EURASIP JWCN 10.1155/2009/240140 Table 1 ("Max Tx Power (dBm)/sector 46",
 * 10 MHz). */
#define WL_EDGE_TX_DBM 46.0
/* Thermal noise density -174 dBm/Hz (kT at 290 K); EURASIP JWCN 10.1186/s13638-015-0320-7
 * Table 1 ("Thermal noise density -174 dBm/Hz"). */
#define WL_NOISE_DBM_HZ (-174.0)
/* Receiver noise figures: eNB 5 dB, UE 9 dB, 3GPP TR 36.814 Annex A.2.1.1 (set both to 0
 * for the bare -174 dBm/Hz). */
#define WL_EDGE_NOISE_FIGURE_DB 5.0
#define WL_USER_NOISE_FIGURE_DB 9.0
/* 10 MHz per direction per edge: the TR 36.814 macro carrier that the powers above belong to
 * (FDD: separate uplink and downlink carriers). */
#define WL_UPLINK_HZ 10e6
#define WL_DOWNLINK_HZ 10e6
/* Edge <-> cloud backhaul: 1 Gbit/s each way and 5 ms one way. Assumption (no number in
 * the SplitLLM paper could be read here): one Gigabit-Ethernet/fibre port per edge,
 * conservative against 10 GbE; 5 ms is about 1000 km of fibre at 2e8 m/s. */
#define WL_BACKHAUL_BPS 1e9
#define WL_BACKHAUL_DELAY_S 5e-3
/* Effective FP32 compute speeds (assumptions, about half of a peak, see docs/WIRELESS.md):
 * user: an edge SoC such as Jetson Orin Nano (1024 CUDA cores x 2 FLOP x 0.625-1.02 GHz =
 * 1.3-2.1 TFLOP/s peak) or a phone GPU -> 1e12;
 * edge: one data-centre GPU, NVIDIA A100 FP32 peak 19.5 TFLOP/s (A100 datasheet) -> 1e13;
 * cloud: four such GPUs -> 4e13. */
#define WL_USER_FLOP_PER_S 1e12
#define WL_EDGE_FLOP_PER_S 1e13
#define WL_CLOUD_FLOP_PER_S 4e13

/* Limits that keep the simulation's arrays small and its loops short. */
#define WL_MAX_EDGES 65536
#define WL_MAX_STREAMS 65536

/* Stream tags of the random draws (any distinct constants). */
#define WL_TAG_PLACE 0x706c616365ULL  /* "place" */
#define WL_TAG_FADE 0x66616465ULL     /* "fade" */

void sl_wireless_defaults(sl_wireless_config *cfg) {
    cfg->wc_d_min_m = WL_D_MIN_M;
    cfg->wc_d_max_m = WL_D_MAX_M;
    cfg->wc_pathloss_db_at_1km = WL_PATHLOSS_DB_AT_1KM;
    cfg->wc_pathloss_db_per_decade = WL_PATHLOSS_DB_PER_DECADE;
    cfg->wc_fading = 1;
    cfg->wc_user_tx_dbm = WL_USER_TX_DBM;
    cfg->wc_edge_tx_dbm = WL_EDGE_TX_DBM;
    cfg->wc_noise_dbm_hz = WL_NOISE_DBM_HZ;
    cfg->wc_edge_noise_figure_db = WL_EDGE_NOISE_FIGURE_DB;
    cfg->wc_user_noise_figure_db = WL_USER_NOISE_FIGURE_DB;
    cfg->wc_uplink_hz = WL_UPLINK_HZ;
    cfg->wc_downlink_hz = WL_DOWNLINK_HZ;
    cfg->wc_backhaul_bps = WL_BACKHAUL_BPS;
    cfg->wc_backhaul_delay_s = WL_BACKHAUL_DELAY_S;
    cfg->wc_user_flop_per_s = WL_USER_FLOP_PER_S;
    cfg->wc_edge_flop_per_s = WL_EDGE_FLOP_PER_S;
    cfg->wc_cloud_flop_per_s = WL_CLOUD_FLOP_PER_S;
    cfg->wc_server_sharing = SL_WIRELESS_SERVER_SHARED;
}

static int need_positive(const char *name, double v) {
    if (isfinite(v) && v > 0) return 0;
    return sl_fail(SL_EINVAL, "wireless: %s must be a finite number > 0, found %g", name, v);
}
static int need_nonnegative(const char *name, double v) {
    if (isfinite(v) && v >= 0) return 0;
    return sl_fail(SL_EINVAL, "wireless: %s must be a finite number >= 0, found %g", name, v);
}
static int need_finite(const char *name, double v) {
    if (isfinite(v)) return 0;
    return sl_fail(SL_EINVAL, "wireless: %s must be a finite number, found %g", name, v);
}

int sl_wireless_check(const sl_wireless_config *cfg) {
    if (cfg == NULL) return sl_fail(SL_EINVAL, "wireless: no configuration");
    int rc;
    if ((rc = need_positive("d_min_m", cfg->wc_d_min_m)) != 0) return rc;
    if ((rc = need_positive("d_max_m", cfg->wc_d_max_m)) != 0) return rc;
    if (cfg->wc_d_min_m > cfg->wc_d_max_m)
        return sl_fail(SL_EINVAL, "wireless: d_min_m must be <= d_max_m, found d_min_m %g m > d_max_m %g m",
                       cfg->wc_d_min_m, cfg->wc_d_max_m);
    if ((rc = need_finite("pathloss_db_at_1km", cfg->wc_pathloss_db_at_1km)) != 0) return rc;
    if ((rc = need_positive("pathloss_db_per_decade", cfg->wc_pathloss_db_per_decade)) != 0) return rc;
    if (cfg->wc_fading != 0 && cfg->wc_fading != 1)
        return sl_fail(SL_EINVAL, "wireless: fading must be 0 (off) or 1 (Rayleigh), found %d", cfg->wc_fading);
    if ((rc = need_finite("user_tx_dbm", cfg->wc_user_tx_dbm)) != 0) return rc;
    if ((rc = need_finite("edge_tx_dbm", cfg->wc_edge_tx_dbm)) != 0) return rc;
    if ((rc = need_finite("noise_dbm_hz", cfg->wc_noise_dbm_hz)) != 0) return rc;
    if ((rc = need_nonnegative("edge_noise_figure_db", cfg->wc_edge_noise_figure_db)) != 0) return rc;
    if ((rc = need_nonnegative("user_noise_figure_db", cfg->wc_user_noise_figure_db)) != 0) return rc;
    if ((rc = need_positive("uplink_hz", cfg->wc_uplink_hz)) != 0) return rc;
    if ((rc = need_positive("downlink_hz", cfg->wc_downlink_hz)) != 0) return rc;
    if ((rc = need_positive("backhaul_bps", cfg->wc_backhaul_bps)) != 0) return rc;
    if ((rc = need_nonnegative("backhaul_delay_s", cfg->wc_backhaul_delay_s)) != 0) return rc;
    if ((rc = need_positive("user_flop_per_s", cfg->wc_user_flop_per_s)) != 0) return rc;
    if ((rc = need_positive("edge_flop_per_s", cfg->wc_edge_flop_per_s)) != 0) return rc;
    if ((rc = need_positive("cloud_flop_per_s", cfg->wc_cloud_flop_per_s)) != 0) return rc;
    if (cfg->wc_server_sharing != SL_WIRELESS_SERVER_SHARED && cfg->wc_server_sharing != SL_WIRELESS_SERVER_PER_STREAM)
        return sl_fail(SL_EINVAL, "wireless: server_sharing must be %d (shared) or %d (per stream), found %d",
                       SL_WIRELESS_SERVER_SHARED, SL_WIRELESS_SERVER_PER_STREAM, (int)cfg->wc_server_sharing);
    return 0;
}

/* ---------------------------------------------------------------- radio */

double sl_wireless_dbm_to_w(double dbm) { return pow(10.0, (dbm - 30.0) / 10.0); }

double sl_wireless_path_loss_db(const sl_wireless_config *cfg, double d_m) {
    return cfg->wc_pathloss_db_at_1km + cfg->wc_pathloss_db_per_decade * log10(d_m / 1000.0);
}

/* A uniform double in (0, 1] from 53 random bits: never 0, so -log() is finite. */
static double uniform_open0(sl_rng *r) { return ((double)(sl_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0); }

static uint64_t draw_stream(uint64_t tag, uint64_t a, uint64_t b) {
    return sl_hash64(sl_hash64(sl_hash64(tag) ^ a) + b);
}

double sl_wireless_fading_gain(const sl_wireless_config *cfg, uint64_t seed, uint64_t round, int user,
                               sl_wireless_direction dir) {
    if (cfg != NULL && !cfg->wc_fading) return 1.0;
    sl_rng r;
    sl_rng_init(&r, seed, draw_stream(WL_TAG_FADE + (uint64_t)dir, round, (uint64_t)(uint32_t)user));
    return -log(uniform_open0(&r)); /* Exp(1): |h|^2 of h ~ CN(0, 1) */
}

double sl_wireless_shannon_bps(double bandwidth_hz, double snr) { return bandwidth_hz * log2(1.0 + snr); }

double sl_wireless_link_bps(const sl_wireless_config *cfg, sl_wireless_direction dir, double d_m,
                            double fading_gain, int k_sharing) {
    int up = dir == SL_WIRELESS_UPLINK;
    double k = (double)k_sharing;
    double band_hz = (up ? cfg->wc_uplink_hz : cfg->wc_downlink_hz) / k;
    double power_w = up ? sl_wireless_dbm_to_w(cfg->wc_user_tx_dbm) : sl_wireless_dbm_to_w(cfg->wc_edge_tx_dbm) / k;
    double nf_db = up ? cfg->wc_edge_noise_figure_db : cfg->wc_user_noise_figure_db;
    double noise_w = sl_wireless_dbm_to_w(cfg->wc_noise_dbm_hz + nf_db) * band_hz;
    double gain = fading_gain * pow(10.0, -sl_wireless_path_loss_db(cfg, d_m) / 10.0);
    return sl_wireless_shannon_bps(band_hz, power_w * gain / noise_w);
}

int sl_wireless_place_users(const sl_wireless_config *cfg, int n_users, uint64_t seed, double *distances_m) {
    int rc = sl_wireless_check(cfg);
    if (rc != 0) return rc;
    if (n_users < 0 || (n_users > 0 && distances_m == NULL))
        return sl_fail(SL_EINVAL, "wireless: place_users needs n_users >= 0 and an output array, found n_users %d%s",
                       n_users, distances_m == NULL ? " and no array" : "");
    double span = cfg->wc_d_max_m - cfg->wc_d_min_m;
    for (int u = 0; u < n_users; u++) {
        sl_rng r;
        sl_rng_init(&r, seed, draw_stream(WL_TAG_PLACE, (uint64_t)u, 0));
        double x = (double)(sl_rng_u64(&r) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
        distances_m[u] = cfg->wc_d_min_m + span * x;
    }
    return 0;
}

int sl_wireless_round_rates(const sl_wireless_config *cfg, int n_users, const double *distances_m,
                            const unsigned char *active, const int *edge_of_user, int n_edges, uint64_t round,
                            uint64_t seed, double *uplink_bps, double *downlink_bps) {
    int rc = sl_wireless_check(cfg);
    if (rc != 0) return rc;
    if (n_users < 1 || n_edges < 1 || n_edges > WL_MAX_EDGES)
        return sl_fail(SL_EINVAL, "wireless: round_rates needs n_users >= 1 and n_edges in [1, %d], found %d and %d",
                       WL_MAX_EDGES, n_users, n_edges);
    if (distances_m == NULL || edge_of_user == NULL || uplink_bps == NULL || downlink_bps == NULL)
        return sl_fail(SL_EINVAL, "wireless: round_rates needs distances, edge_of_user and both output arrays");
    int *k = sl_alloc((size_t)n_edges * sizeof *k);
    if (k == NULL) return SL_ENOMEM;
    for (int u = 0; u < n_users; u++) {
        int e = edge_of_user[u];
        double d = distances_m[u];
        if (e < 0 || e >= n_edges) {
            sl_free(k);
            return sl_fail(SL_EINVAL, "wireless: user %d is attached to edge %d, expected an edge in [0, %d)", u, e,
                           n_edges);
        }
        if (!(isfinite(d) && d > 0)) {
            sl_free(k);
            return sl_fail(SL_EINVAL, "wireless: user %d is at distance %g m, expected a finite distance > 0", u, d);
        }
        if (active == NULL || active[u]) k[e]++;
    }
    for (int u = 0; u < n_users; u++) {
        if (active != NULL && !active[u]) {
            uplink_bps[u] = downlink_bps[u] = 0.0;
            continue;
        }
        int ke = k[edge_of_user[u]];
        double g_up = sl_wireless_fading_gain(cfg, seed, round, u, SL_WIRELESS_UPLINK);
        double g_dn = sl_wireless_fading_gain(cfg, seed, round, u, SL_WIRELESS_DOWNLINK);
        uplink_bps[u] = sl_wireless_link_bps(cfg, SL_WIRELESS_UPLINK, distances_m[u], g_up, ke);
        downlink_bps[u] = sl_wireless_link_bps(cfg, SL_WIRELESS_DOWNLINK, distances_m[u], g_dn, ke);
    }
    sl_free(k);
    return 0;
}

/* ---------------------------------------------------------------- latency */

/* Resources: 0 the cloud's compute, then per edge e: 1+3e compute, 2+3e backhaul up,
 * 3+3e backhaul down. RES_OWN: the stream's own (user compute, radio link, a delay). */
#define RES_OWN (-1)
#define RES_CLOUD 0
#define RES_EDGE(e) (1 + 3 * (e))
#define RES_BH_UP(e) (2 + 3 * (e))
#define RES_BH_DOWN(e) (3 + 3 * (e))

#define STEP_STAGES 11
#define START_STAGES 3
#define END_STAGES 3

static double bits_s(uint64_t bytes, double bps) { return bytes == 0 ? 0.0 : (double)bytes * 8.0 / bps; }

/* Stage k (counted from 0 over the whole step or round) of a stream: its resource and its
 * work in seconds at the resource's full speed. steps_stages = local steps * STEP_STAGES. */
static void stage_of(const sl_wireless_config *cfg, const sl_wireless_stream *s, int with_round,
                     int64_t steps_stages, int64_t k, int *res, double *work_s) {
    int e = s->ws_edge;
    int shared = cfg->wc_server_sharing == SL_WIRELESS_SERVER_SHARED;
    double bh_delay = cfg->wc_backhaul_delay_s;
    *res = RES_OWN;
    *work_s = 0.0;
    if (with_round) {
        if (k < START_STAGES) { /* start: cloud -> edge -> user */
            switch (k) {
            case 0: *res = RES_BH_DOWN(e); *work_s = bits_s(s->ws_round_from_cloud_bytes, cfg->wc_backhaul_bps); break;
            case 1: *work_s = s->ws_round_from_cloud_bytes ? bh_delay : 0.0; break;
            default: *work_s = bits_s(s->ws_round_down_bytes, s->ws_downlink_bps); break;
            }
            return;
        }
        k -= START_STAGES;
        if (k >= steps_stages) { /* end: user -> edge -> cloud */
            switch (k - steps_stages) {
            case 0: *work_s = bits_s(s->ws_round_up_bytes, s->ws_uplink_bps); break;
            case 1: *res = RES_BH_UP(e); *work_s = bits_s(s->ws_round_to_cloud_bytes, cfg->wc_backhaul_bps); break;
            default: *work_s = s->ws_round_to_cloud_bytes ? bh_delay : 0.0; break;
            }
            return;
        }
    }
    switch (k % STEP_STAGES) {
    case 0: *work_s = s->ws_user_fwd_flop / cfg->wc_user_flop_per_s; break;
    case 1: *work_s = bits_s(s->ws_up_bytes, s->ws_uplink_bps); break;
    case 2: *res = shared ? RES_EDGE(e) : RES_OWN; *work_s = s->ws_edge_fwd_flop / cfg->wc_edge_flop_per_s; break;
    case 3: *res = RES_BH_UP(e); *work_s = bits_s(s->ws_to_cloud_bytes, cfg->wc_backhaul_bps); break;
    case 4: *work_s = s->ws_to_cloud_bytes ? bh_delay : 0.0; break;
    case 5: *res = shared ? RES_CLOUD : RES_OWN; *work_s = s->ws_cloud_flop / cfg->wc_cloud_flop_per_s; break;
    case 6: *res = RES_BH_DOWN(e); *work_s = bits_s(s->ws_from_cloud_bytes, cfg->wc_backhaul_bps); break;
    case 7: *work_s = s->ws_from_cloud_bytes ? bh_delay : 0.0; break;
    case 8: *res = shared ? RES_EDGE(e) : RES_OWN; *work_s = s->ws_edge_bwd_flop / cfg->wc_edge_flop_per_s; break;
    case 9: *work_s = bits_s(s->ws_down_bytes, s->ws_downlink_bps); break;
    default: *work_s = s->ws_user_bwd_flop / cfg->wc_user_flop_per_s; break;
    }
}

static int check_stream(const sl_wireless_stream *s, int i, int with_round) {
    if (s->ws_edge < 0 || s->ws_edge >= WL_MAX_EDGES)
        return sl_fail(SL_EINVAL, "wireless: stream %d: edge %d, expected an edge in [0, %d)", i, s->ws_edge,
                       WL_MAX_EDGES);
    const struct {
        const char *name;
        double v;
    } field[] = {{"user_fwd_flop", s->ws_user_fwd_flop}, {"user_bwd_flop", s->ws_user_bwd_flop},
                 {"edge_fwd_flop", s->ws_edge_fwd_flop}, {"edge_bwd_flop", s->ws_edge_bwd_flop},
                 {"cloud_flop", s->ws_cloud_flop},       {"uplink_bps", s->ws_uplink_bps},
                 {"downlink_bps", s->ws_downlink_bps}};
    for (size_t j = 0; j < sizeof field / sizeof field[0]; j++)
        if (!(isfinite(field[j].v) && field[j].v >= 0))
            return sl_fail(SL_EINVAL, "wireless: stream %d: %s must be a finite number >= 0, found %g", i,
                           field[j].name, field[j].v);
    uint64_t up = s->ws_up_bytes + (with_round ? s->ws_round_up_bytes : 0);
    uint64_t down = s->ws_down_bytes + (with_round ? s->ws_round_down_bytes : 0);
    if (up > 0 && !(s->ws_uplink_bps > 0))
        return sl_fail(SL_EINVAL, "wireless: stream %d sends %llu bytes on its uplink but uplink_bps is %g "
                       "(an inactive user has no band)", i, (unsigned long long)up, s->ws_uplink_bps);
    if (down > 0 && !(s->ws_downlink_bps > 0))
        return sl_fail(SL_EINVAL, "wireless: stream %d receives %llu bytes on its downlink but downlink_bps is %g "
                       "(an inactive user has no band)", i, (unsigned long long)down, s->ws_downlink_bps);
    return 0;
}

typedef struct {
    int64_t k;     /* current stage, counted from 0 */
    int res;       /* its resource */
    double left_s; /* its work left, seconds at full speed */
    int done;
} stream_state;

/* Moves a stream to its next stage with work, or marks it done. */
static void advance(const sl_wireless_config *cfg, const sl_wireless_stream *s, int with_round, int64_t n_stages,
                    int64_t steps_stages, stream_state *st) {
    for (st->k++; st->k < n_stages; st->k++) {
        stage_of(cfg, s, with_round, steps_stages, st->k, &st->res, &st->left_s);
        if (st->left_s > 0) return;
    }
    st->done = 1;
}

static int simulate(const sl_wireless_config *cfg, const sl_wireless_stream *streams, int n_streams, int steps,
                    int with_round, double *latency_s, double *stream_done_s) {
    int rc = sl_wireless_check(cfg);
    if (rc != 0) return rc;
    if (n_streams < 1 || n_streams > WL_MAX_STREAMS || streams == NULL || latency_s == NULL)
        return sl_fail(SL_EINVAL, "wireless: latency needs 1..%d streams and an output, found %d streams%s",
                       WL_MAX_STREAMS, n_streams, streams == NULL || latency_s == NULL ? " or a NULL pointer" : "");
    if (steps < 0) return sl_fail(SL_EINVAL, "wireless: local_steps must be >= 0, found %d", steps);
    int max_edge = 0;
    for (int i = 0; i < n_streams; i++) {
        if ((rc = check_stream(&streams[i], i, with_round)) != 0) return rc;
        if (streams[i].ws_edge > max_edge) max_edge = streams[i].ws_edge;
    }
    int n_res = 1 + 3 * (max_edge + 1);
    int *count = sl_alloc((size_t)n_res * sizeof *count);
    stream_state *st = sl_alloc((size_t)n_streams * sizeof *st);
    if (count == NULL || st == NULL) {
        sl_free(count);
        sl_free(st);
        return SL_ENOMEM;
    }
    int64_t steps_stages = (int64_t)steps * STEP_STAGES;
    int64_t n_stages = steps_stages + (with_round ? START_STAGES + END_STAGES : 0);
    int running = 0;
    for (int i = 0; i < n_streams; i++) {
        st[i].k = -1;
        advance(cfg, &streams[i], with_round, n_stages, steps_stages, &st[i]);
        if (st[i].done) {
            if (stream_done_s) stream_done_s[i] = 0.0;
        } else {
            running++;
        }
    }
    /* Each pass ends the stage of at least the stream that finishes first, so the loop runs
     * at most n_streams * n_stages times. */
    double t = 0.0;
    while (running > 0) {
        for (int r = 0; r < n_res; r++) count[r] = 0;
        for (int i = 0; i < n_streams; i++)
            if (!st[i].done && st[i].res >= 0) count[st[i].res]++;
        double dt = INFINITY;
        for (int i = 0; i < n_streams; i++) {
            if (st[i].done) continue;
            double share = st[i].res >= 0 ? (double)count[st[i].res] : 1.0;
            double finish = st[i].left_s * share;
            if (finish < dt) dt = finish;
        }
        t += dt;
        for (int i = 0; i < n_streams; i++) {
            if (st[i].done) continue;
            double share = st[i].res >= 0 ? (double)count[st[i].res] : 1.0;
            /* Stages that end within rounding of the first one end now too. */
            if (st[i].left_s * share <= dt * (1.0 + 1e-12)) {
                advance(cfg, &streams[i], with_round, n_stages, steps_stages, &st[i]);
                if (st[i].done) {
                    running--;
                    if (stream_done_s) stream_done_s[i] = t;
                }
            } else {
                st[i].left_s -= dt / share;
            }
        }
    }
    *latency_s = t;
    sl_free(count);
    sl_free(st);
    return 0;
}

int sl_wireless_step_latency(const sl_wireless_config *cfg, const sl_wireless_stream *streams, int n_streams,
                             double *latency_s, double *stream_done_s) {
    return simulate(cfg, streams, n_streams, 1, 0, latency_s, stream_done_s);
}

int sl_wireless_round_latency(const sl_wireless_config *cfg, const sl_wireless_stream *streams, int n_streams,
                              int local_steps, double *latency_s, double *stream_done_s) {
    return simulate(cfg, streams, n_streams, local_steps, 1, latency_s, stream_done_s);
}

/* ---------------------------------------------------------------- link shaper */

int sl_wireless_shaper_init(sl_wireless_shaper *s, double rate_bps, double delay_s) {
    if (!(rate_bps > 0))
        return sl_fail(SL_EINVAL, "link shaper: rate_bps must be > 0 (or infinite: delay only), found %g", rate_bps);
    if (!(isfinite(delay_s) && delay_s >= 0))
        return sl_fail(SL_EINVAL, "link shaper: delay_s must be a finite number >= 0, found %g", delay_s);
    s->sh_rate_bps = rate_bps;
    s->sh_delay_s = delay_s;
    return 0;
}

double sl_wireless_shaper_time_s(const sl_wireless_shaper *s, uint64_t bytes) {
    return bits_s(bytes, s->sh_rate_bps) + s->sh_delay_s;
}

double sl_wireless_shaper_wait(const sl_wireless_shaper *s, double start_s, uint64_t bytes) {
    double until = start_s + sl_wireless_shaper_time_s(s, bytes);
    double now = sl_now_s();
    if (!(until > now)) return 0.0;
    struct timespec ts;
    double whole = floor(until);
    ts.tv_sec = (time_t)whole;
    ts.tv_nsec = (long)((until - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    /* Absolute sleep on the clock sl_now_s() reads, so a signal cannot stretch it. */
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return until - now;
}
