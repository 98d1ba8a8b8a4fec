/* tier_user.c: a user device (see run.h). It fetches its part from its server — its edge
 * (splitllm) or the cloud (sfl, sl, fl) — and whenever the server gives it a task, trains E
 * local steps on its own shard: its tokens never leave the device. In the split schemes it
 * holds the embedding + blocks [0,c1); only the activations of block c1 (and the targets
 * and mask the loss needs) go up, and the gradient of those activations comes back. In fl
 * it holds the whole model and trains alone. It reports its adapter and sample count. */
#include <stdio.h>
#include <string.h>

#include "data/loader.h"
#include "data/shard.h"
#include "kernels/gemm.h"
#include "model/part.h"
#include "model/segment.h"
#include "schemes/run.h"
#include "schemes/tier_common.h"

typedef struct {
    int u_id;
    sl_link *u_link;
    sl_tier_config u_cfg;
    sl_model u_model;
    sl_lora u_lora;
    sl_adamw u_opt;
    sl_segment *u_seg;
    sl_shard u_shard;
    sl_loader u_loader;
    sl_batch u_batch;
    int u_have_shard, u_have_loader;
    int u_local;             /* fl: the whole model here, no FORWARD messages */
    float *u_grad_in;        /* (B,T,C): a compressed BACKWARD's gradient, decoded */
} user_state;

static int join_edge(user_state *us, const char *cache_dir) {
    sl_msg hello;
    sl_msg_init(&hello, SL_MSG_HELLO, 0, 0, 0);
    const sl_msg *ok = NULL;
    const sl_tensor *cfg;
    int rc = sl_link_call(us->u_link, &hello, &ok);
    if (rc == 0) rc = sl_msg_get(ok, "config", SL_DTYPE_U8, 1, NULL, &cfg);
    if (rc == 0) rc = sl_tier_config_from_json(cfg->t_data, cfg->t_bytes, sl_link_peer(us->u_link), &us->u_cfg);
    if (rc == 0) rc = sl_apply_shaping(us->u_link, ok);
    sl_msg_release(&hello);
    if (rc) return rc;
    char path[1100];
    snprintf(path, sizeof(path), "%s/user.safetensors", cache_dir);
    if ((rc = sl_make_dirs(cache_dir))) return rc;
    if ((rc = sl_fetch_part(us->u_link, "user", us->u_cfg.user_part_sha256, us->u_cfg.user_part_bytes, path)))
        return rc;
    return sl_model_load(&us->u_model, path);
}

/* E steps of round r starting from adapter; then the report. */
static int user_round(user_state *us, int round, int steps, const float *adapter) {
    const sl_tier_config *c = &us->u_cfg;
    memcpy(us->u_lora.params, adapter, us->u_lora.n_params * sizeof(float));
    uint64_t samples = 0;
    float loss_sum = 0.0f;
    uint32_t tshape[2] = {(uint32_t)c->batch, (uint32_t)c->seq};
    int rc = SL_OK;
    for (int step = 0; step < steps && rc == 0; step++) {
        int r = sl_loader_next(&us->u_loader, &us->u_batch);
        if (r < 0) return r;
        samples += us->u_batch.b_samples;
        sl_segment_input in = {.B = c->batch, .T = c->seq, .tokens = us->u_batch.b_tokens, .want_grad = 1,
                               .dropout_seed = sl_step_seed(c->seed, round, c->local_steps, step)};
        if (us->u_local) { /* fl: the whole step on the device */
            in.targets = us->u_batch.b_targets;
            in.mask = us->u_batch.b_mask;
            sl_lora_zero_grad(&us->u_lora);
            if ((rc = sl_segment_forward(us->u_seg, &in)) || (rc = sl_segment_backward(us->u_seg, NULL, NULL)))
                return rc;
            loss_sum += sl_segment_loss(us->u_seg);
            const size_t lp = us->u_lora.layer_params;
            const size_t ends[3] = {lp * (size_t)c->cut1, lp * (size_t)c->cut2, us->u_lora.n_params};
            sl_adamw_update_groups(&us->u_opt, us->u_lora.params, us->u_lora.grads, 3, ends);
            continue;
        }
        if ((rc = sl_segment_forward(us->u_seg, &in))) return rc;
        sl_msg up;
        sl_msg_init(&up, SL_MSG_FORWARD, (uint32_t)round, (uint32_t)step, 0);
        rc = sl_add_activation(&up, "act", &c->compress, c->batch, c->seq, c->dim, sl_segment_output(us->u_seg));
        if (rc == 0) rc = sl_msg_add(&up, "targets", SL_DTYPE_I32, 2, tshape, us->u_batch.b_targets);
        if (rc == 0) rc = sl_msg_add(&up, "mask", SL_DTYPE_U8, 2, tshape, us->u_batch.b_mask);
        const sl_msg *down = NULL;
        const float *grad = NULL;
        if (rc == 0) rc = sl_link_call(us->u_link, &up, &down);
        if (rc == 0) rc = sl_get_activation(down, "grad", c->batch, c->seq, c->dim, us->u_grad_in, &grad);
        if (rc == 0) {
            sl_lora_zero_grad(&us->u_lora);
            rc = sl_segment_backward(us->u_seg, grad, NULL);
        }
        sl_msg_release(&up);
        if (rc == 0) {
            const size_t ends[1] = {us->u_lora.n_params};
            sl_adamw_update_groups(&us->u_opt, us->u_lora.params, us->u_lora.grads, 1, ends);
        }
    }
    if (rc) return rc;
    sl_msg rep;
    sl_msg_init(&rep, SL_MSG_ROUND_REPORT, (uint32_t)round, 0, 0);
    uint32_t n[1] = {(uint32_t)us->u_lora.n_params};
    const sl_msg *ack = NULL;
    rc = sl_msg_add(&rep, "user_adapter", SL_DTYPE_F32, 1, n, us->u_lora.params);
    if (rc == 0) rc = sl_msg_add(&rep, "samples", SL_DTYPE_U64, 0, NULL, &samples);
    if (rc == 0 && us->u_local) rc = sl_msg_add(&rep, "loss_sum", SL_DTYPE_F32, 0, NULL, &loss_sum);
    if (rc == 0) rc = sl_link_call(us->u_link, &rep, &ack);
    sl_msg_release(&rep);
    return rc;
}

int sl_user_run(int user_id, const char *server_url, const char *shard_path, const char *cache_dir, int timeout_ms,
                sl_tier_report *rep) {
    memset(rep, 0, sizeof(*rep));
    sl_gemm_warmup(); /* library work buffers belong to the baseline, not to the breakdown */
    rep->memory.start_rss = sl_current_rss_bytes();
    double t0 = sl_now_s();
    user_state us;
    memset(&us, 0, sizeof(us));
    us.u_id = user_id;
    int rc = sl_tier_link_open(&us.u_link, server_url, "its server", SL_TIER_USER, user_id, timeout_ms);
    if (rc == 0) rc = join_edge(&us, cache_dir);
    const sl_tier_config *c = &us.u_cfg;
    if (rc == 0 && (rc = sl_shard_read(&us.u_shard, shard_path)) == 0) us.u_have_shard = 1;
    if (rc == 0 && (int)us.u_shard.sh_vocab_size > us.u_model.config.vocab_size)
        rc = sl_fail(SL_EINVAL, "%s: the shard's vocabulary has %u tokens, the model %d", shard_path,
                     us.u_shard.sh_vocab_size, us.u_model.config.vocab_size);
    if (rc == 0) {
        us.u_local = strcmp(c->scheme, "fl") == 0;
        const int end = us.u_local ? c->n_layers : c->cut1;
        sl_segment_config sc = {0, end, 1, us.u_local, c->batch, c->seq};
        sl_adamw_config oc = c->optim;
        if ((rc = sl_lora_init(&us.u_lora, &us.u_model.config, &c->lora, 0, end)) == 0 &&
            (rc = sl_adamw_init(&us.u_opt, &oc, us.u_lora.n_params)) == 0)
            rc = sl_segment_create(&us.u_seg, &us.u_model, &us.u_lora, &sc);
        us.u_grad_in = sl_alloc(sizeof(float) * (size_t)c->batch * c->seq * c->dim);
        if (rc == 0 && us.u_grad_in == NULL) rc = SL_ENOMEM;
    }
    if (rc == 0) {
        /* the same data order as central gives the same user (seed + user id) */
        sl_loader_config ldc = {.lc_B = c->batch, .lc_T = c->seq, .lc_packing = c->packing, .lc_shuffle = 1,
                                .lc_seed = c->seed + (uint64_t)user_id};
        if ((rc = sl_loader_open(&us.u_loader, &us.u_shard, &ldc)) == 0) us.u_have_loader = 1;
        if (rc == 0) rc = sl_batch_alloc(&us.u_batch, c->batch, c->seq);
    }
    if (rc == 0) {
        sl_memory_breakdown *m = &rep->memory;
        const sl_segment_memory sm = sl_segment_memory_use(us.u_seg);
        m->adapters = 2 * us.u_lora.n_params * sizeof(float);
        m->optimizer = 2 * us.u_opt.n * sizeof(float);
        m->activations = sm.activation_bytes + sm.scratch_bytes + (size_t)c->batch * c->seq * c->dim * sizeof(float);
        /* the FORWARD (encoded, and kept by the link for a resend) and the BACKWARD (NNG's
         * message, and an aligned copy when NNG's buffer is not 8-byte aligned); none in fl */
        m->messages = us.u_local ? 0 : 4 * sl_step_message_bytes(c->batch, c->seq, c->dim);
        m->data = (size_t)us.u_shard.sh_n_tokens * 5 + (size_t)(us.u_shard.sh_n_samples + 1) * 8;
        rep->setup_peak_rss_bytes = sl_peak_rss_bytes();
        sl_reset_peak_rss(); /* from here on the peak is the training's */
    }
    int wait_ms = SL_POLL_MIN_MS;
    double idle_since = sl_now_s();
    int last_round = 0;
    while (rc == 0) {
        sl_msg poll;
        sl_msg_init(&poll, SL_MSG_ROUND_POLL, (uint32_t)(last_round + 1), 0, 0);
        const sl_msg *reply = NULL;
        rc = sl_link_call(us.u_link, &poll, &reply);
        sl_msg_release(&poll);
        if (rc) break;
        int type = reply->m_header.h_type;
        if (type == SL_MSG_ROUND_DONE) break;
        if (type == SL_MSG_ROUND_TASK) {
            const int64_t n[1] = {(int64_t)us.u_lora.n_params};
            const sl_tensor *steps, *adapter;
            int round = (int)reply->m_header.h_round;
            rc = sl_msg_get(reply, "steps", SL_DTYPE_I32, 0, NULL, &steps);
            if (rc == 0) rc = sl_msg_get(reply, "user_adapter", SL_DTYPE_F32, 1, n, &adapter);
            if (rc) break;
            int32_t e;
            memcpy(&e, steps->t_data, sizeof(e));
            /* the reply lives in the link until the next call: copy the adapter first */
            memcpy(us.u_lora.grads, adapter->t_data, adapter->t_bytes);
            rc = user_round(&us, round, e, us.u_lora.grads);
            last_round = round;
            wait_ms = SL_POLL_MIN_MS;
            idle_since = sl_now_s();
            continue;
        }
        /* ROUND_WAIT: not picked (yet) */
        if (timeout_ms > 0 && (sl_now_s() - idle_since) * 1e3 > 8.0 * timeout_ms) {
            rc = sl_fail(SL_ETIMEDOUT, "user %d: %s had no task and did not say training is over for %.0f s", user_id,
                         sl_link_peer(us.u_link), sl_now_s() - idle_since);
            break;
        }
        sl_sleep_ms(wait_ms);
        wait_ms = wait_ms * 2 > SL_POLL_MAX_MS ? SL_POLL_MAX_MS : wait_ms * 2;
    }
    /* the weights this process actually touched (the embedding only in the rows it looked up) */
    rep->memory.base_weights = sl_model_resident_bytes(&us.u_model);
    if (us.u_link) {
        sl_link_stats ls;
        sl_link_stats_get(us.u_link, &ls);
        rep->bytes_up_sent = ls.ls_bytes_sent;
        rep->bytes_up_received = ls.ls_bytes_received;
    }
    sl_batch_free(&us.u_batch);
    if (us.u_have_loader) sl_loader_close(&us.u_loader);
    if (us.u_have_shard) sl_shard_free(&us.u_shard);
    sl_segment_free(us.u_seg);
    sl_free(us.u_grad_in);
    sl_adamw_free(&us.u_opt);
    sl_lora_free(&us.u_lora);
    sl_model_free(&us.u_model);
    sl_link_close(us.u_link);
    rep->peak_rss_bytes = sl_peak_rss_bytes();
    rep->seconds = sl_now_s() - t0;
    return rc;
}
