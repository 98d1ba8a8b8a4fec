/* latency.c: see latency.h. How each scheme fills the wireless model's streams is written
 * down in docs/WIRELESS.md ("Schemes"). */
#include "schemes/latency.h"

#include <stdlib.h>
#include <string.h>

#include "model/flops.h"

/* Header, tensor names and the targets/mask that travel with activations. */
#define STEP_MESSAGE_OVERHEAD_BYTES 256

static uint64_t activation_bytes(const sl_run_config *c, int C) {
    uint32_t shape[3] = {(uint32_t)c->batch, (uint32_t)c->seq, (uint32_t)C};
    sl_codec_wire w;
    if (sl_codec_wire_for(&c->compress, 3, shape, &w) != 0) return (uint64_t)c->batch * c->seq * C * 4;
    return w.w_bytes;
}

int sl_modeled_round_latency(const sl_run_config *c, const sl_config *mc, const sl_wireless_config *wc,
                             const double *distances_m, int round, const int *active, int n_active, double *out_s) {
    *out_s = 0.0;
    const char *scheme = c->scheme ? c->scheme : "splitllm";
    const int is_split = strcmp(scheme, "splitllm") == 0, is_fl = strcmp(scheme, "fl") == 0;
    const int is_sl = strcmp(scheme, "sl") == 0;
    const int N = c->users, M = c->edges, L = mc->n_layers, B = c->batch, T = c->seq;
    int *edge_of = malloc(sizeof(int) * (size_t)N);
    unsigned char *on = calloc((size_t)N, 1);
    double *up = malloc(sizeof(double) * (size_t)N), *down = malloc(sizeof(double) * (size_t)N);
    sl_wireless_stream *st = calloc((size_t)(n_active > 0 ? n_active : 1), sizeof(sl_wireless_stream));
    int rc = SL_OK;
    if (!edge_of || !on || !up || !down || !st) {
        rc = sl_fail(SL_ENOMEM, "latency model: out of memory");
        goto out;
    }
    for (int u = 0; u < N; u++) edge_of[u] = sl_run_edge_of_user(c, u);
    /* floats of LoRA per block */
    sl_lora probe;
    if ((rc = sl_lora_init(&probe, mc, &c->lora, 0, 0))) goto out;
    const double per_block = (double)probe.layer_params;
    sl_lora_free(&probe);
    const uint64_t act = activation_bytes(c, mc->dim) + (uint64_t)B * T * 5 + STEP_MESSAGE_OVERHEAD_BYTES;
    const uint64_t grad = activation_bytes(c, mc->dim) + STEP_MESSAGE_OVERHEAD_BYTES;
    double uf, ub, ef, eb, cf, cb;
    if (is_fl) {
        sl_segment_flops(mc, &c->lora, 0, L, 1, B, T, &uf, &ub);
        ef = eb = cf = cb = 0.0;
    } else {
        const int server_begin = is_split ? c->cut2 : c->cut1;
        sl_segment_flops(mc, &c->lora, 0, c->cut1, 0, B, T, &uf, &ub);
        if (is_split) sl_segment_flops(mc, &c->lora, c->cut1, c->cut2, 0, B, T, &ef, &eb);
        else ef = eb = 0.0;
        sl_segment_flops(mc, &c->lora, server_begin, L, 1, B, T, &cf, &cb);
    }
    const uint64_t user_adapter = (uint64_t)(per_block * (is_fl ? L : c->cut1) * 4);
    const uint64_t edge_adapter = is_split ? (uint64_t)(per_block * (c->cut2 - c->cut1) * 4) : 0;
    for (int i = 0; i < n_active; i++) {
        sl_wireless_stream *s = &st[i];
        const int u = active[i];
        s->ws_edge = edge_of[u];
        s->ws_user_fwd_flop = uf;
        s->ws_user_bwd_flop = ub;
        s->ws_edge_fwd_flop = ef;
        s->ws_edge_bwd_flop = eb;
        s->ws_cloud_flop = cf + cb;
        if (!is_fl) {
            /* two-tier: the server is in the cloud and the edge only relays */
            s->ws_up_bytes = act;
            s->ws_to_cloud_bytes = act;
            s->ws_from_cloud_bytes = grad;
            s->ws_down_bytes = grad;
        }
        s->ws_round_from_cloud_bytes = user_adapter + edge_adapter;
        s->ws_round_down_bytes = user_adapter;
        s->ws_round_up_bytes = user_adapter;
        s->ws_round_to_cloud_bytes = user_adapter + edge_adapter;
    }
    if (is_sl) {
        /* one user at a time: each alone on its edge's band, one after another */
        for (int i = 0; i < n_active && rc == 0; i++) {
            memset(on, 0, (size_t)N);
            on[active[i]] = 1;
            if ((rc = sl_wireless_round_rates(wc, N, distances_m, on, edge_of, M, (uint64_t)round, c->seed, up,
                                              down)))
                break;
            st[i].ws_uplink_bps = up[active[i]];
            st[i].ws_downlink_bps = down[active[i]];
            double t;
            if ((rc = sl_wireless_round_latency(wc, &st[i], 1, c->local_steps, &t, NULL)) == 0) *out_s += t;
        }
        goto out;
    }
    for (int i = 0; i < n_active; i++) on[active[i]] = 1;
    if ((rc = sl_wireless_round_rates(wc, N, distances_m, on, edge_of, M, (uint64_t)round, c->seed, up, down)))
        goto out;
    for (int i = 0; i < n_active; i++) {
        st[i].ws_uplink_bps = up[active[i]];
        st[i].ws_downlink_bps = down[active[i]];
    }
    rc = sl_wireless_round_latency(wc, st, n_active, c->local_steps, out_s, NULL);
out:
    free(edge_of);
    free(on);
    free(up);
    free(down);
    free(st);
    return rc;
}
