/* tier_edge.c: an edge server of the splitllm scheme (see run.h). It fetches its part and
 * the users' part from the cloud, serves the users' part to its users, and each round trains
 * with the one user the cloud picked: the user's activations go through blocks [c1,c2) up to
 * the cloud, the cloud's gradient comes back through them down to the user, and the edge
 * updates its own adapter. At the end of the round it reports both adapters to the cloud.
 *
 * Threads: the main thread polls the cloud and reports; the server's workers answer users.
 * e_mu guards the round state; e_link_mu the link to the cloud (one call at a time). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "model/part.h"
#include "model/segment.h"
#include "schemes/run.h"
#include "schemes/tier_common.h"

typedef struct {
    int e_id;
    sl_link *e_link;
    pthread_mutex_t e_link_mu;
    sl_server *e_server;
    sl_tier_config e_cfg;
    char *e_json;            /* the configuration, passed on to users verbatim */
    size_t e_json_bytes;
    int32_t *e_users;        /* the users attached here */
    float *e_user_shape;     /* [e_n_users][4] with --shape-links: each user's link */
    int e_n_users;
    int *e_told_done;        /* [e_n_users] */
    sl_model e_model;        /* the edge part */
    sl_mapped_file e_user_file;
    sl_lora e_lora;          /* blocks [c1,c2) */
    sl_adamw e_opt;
    sl_segment *e_seg;
    float *e_grad_in;        /* (B,T,C): the gradient sent down to the user */
    float *e_act_in;         /* (B,T,C): a compressed FORWARD's activations, decoded */
    float *e_grad_from_cloud;/* (B,T,C): a compressed BACKWARD's gradient, decoded */
    float e_loss;
    int32_t e_count;
    float *e_user_adapter;   /* (n_user): the task's adapter for the user */
    float *e_user_report;    /* (n_user): the user's adapter after the round */
    size_t e_n_user;
    uint64_t e_samples;
    pthread_mutex_t e_mu;
    pthread_cond_t e_cv;
    int e_round;             /* the round being trained, 0 before the first task */
    int e_user;              /* the user picked for e_round */
    int e_user_reported;
    int e_done;
    /* training stopped on an error (e.g. the cloud stopped answering): users that poll are
     * answered with this ERROR, never with ROUND_DONE, so they do not report success */
    int e_failed;
    char e_error[512];
    /* a FORWARD could not go through the cloud (it stopped answering or refused): the round
     * cannot finish, and the edge's error names the cloud, not the user that waits on it */
    int e_up_rc;
    char e_up_error[512];
} edge_state;

static int find_user(const edge_state *es, uint32_t u) {
    for (int i = 0; i < es->e_n_users; i++)
        if ((uint32_t)es->e_users[i] == u) return i;
    return -1;
}

static int on_hello(edge_state *es, const sl_msg *req, sl_msg *reply) {
    const uint32_t u = req->m_header.h_sender;
    if (req->m_header.h_sender_tier != SL_TIER_USER || find_user(es, u) < 0)
        return sl_fail(SL_EINVAL, "edge %d: HELLO from %s %u, which is not attached to this edge", es->e_id,
                       sl_tier_name(req->m_header.h_sender_tier), u);
    sl_msg_init(reply, SL_MSG_HELLO_OK, 0, 0, (uint32_t)es->e_id);
    uint32_t shape[1] = {(uint32_t)es->e_json_bytes}, four[1] = {4};
    int rc = sl_msg_add(reply, "config", SL_DTYPE_U8, 1, shape, es->e_json);
    if (rc == 0 && es->e_user_shape != NULL)
        rc = sl_msg_add(reply, "shape", SL_DTYPE_F32, 1, four, es->e_user_shape + 4 * find_user(es, u));
    return rc;
}

static int on_round_poll(edge_state *es, const sl_msg *req, sl_msg *reply) {
    const uint32_t u = req->m_header.h_sender;
    const int r = (int)req->m_header.h_round;
    const int idx = find_user(es, u);
    if (idx < 0) return sl_fail(SL_EINVAL, "edge %d: ROUND_POLL from user %u, not attached here", es->e_id, u);
    pthread_mutex_lock(&es->e_mu);
    int task = !es->e_done && es->e_round > 0 && es->e_user == (int)u && !es->e_user_reported && r <= es->e_round;
    int done = es->e_done;
    int round = es->e_round;
    if (done) es->e_told_done[idx] = 1;
    pthread_cond_broadcast(&es->e_cv);
    if (es->e_failed) {
        char why[sizeof(es->e_error)];
        snprintf(why, sizeof(why), "%s", es->e_error);
        pthread_mutex_unlock(&es->e_mu);
        return sl_fail(SL_ESTATE, "edge %d stopped training: %s", es->e_id, why);
    }
    pthread_mutex_unlock(&es->e_mu);
    if (done) {
        sl_msg_init(reply, SL_MSG_ROUND_DONE, (uint32_t)round, 0, (uint32_t)es->e_id);
        return SL_OK;
    }
    if (!task) {
        sl_msg_init(reply, SL_MSG_ROUND_WAIT, (uint32_t)round, 0, (uint32_t)es->e_id);
        return SL_OK;
    }
    sl_msg_init(reply, SL_MSG_ROUND_TASK, (uint32_t)round, 0, (uint32_t)es->e_id);
    int32_t *steps = sl_msg_alloc(reply, sizeof(int32_t));
    if (steps == NULL) return SL_ENOMEM;
    *steps = es->e_cfg.local_steps;
    uint32_t n[1] = {(uint32_t)es->e_n_user};
    int rc = sl_msg_add(reply, "steps", SL_DTYPE_I32, 0, NULL, steps);
    if (rc == 0) rc = sl_msg_add(reply, "user_adapter", SL_DTYPE_F32, 1, n, es->e_user_adapter);
    return rc;
}

static int on_forward(edge_state *es, const sl_msg *req, sl_msg *reply) {
    const sl_tier_config *c = &es->e_cfg;
    const uint32_t u = req->m_header.h_sender;
    const int r = (int)req->m_header.h_round, step = (int)req->m_header.h_step;
    pthread_mutex_lock(&es->e_mu);
    int ok = es->e_round == r && es->e_user == (int)u && !es->e_user_reported && step < c->local_steps;
    int cur_round = es->e_round, cur_user = es->e_user;
    pthread_mutex_unlock(&es->e_mu);
    if (!ok)
        return sl_fail(SL_ESTATE, "edge %d: FORWARD from user %u for round %d step %d; this round (%d) trains user %d",
                       es->e_id, u, r, step, cur_round, cur_user);
    const int64_t tok_shape[2] = {c->batch, c->seq};
    const sl_tensor *targets, *mask;
    const float *act;
    int rc = sl_get_activation(req, "act", c->batch, c->seq, c->dim, es->e_act_in, &act);
    if (rc == 0) rc = sl_msg_get(req, "targets", SL_DTYPE_I32, 2, tok_shape, &targets);
    if (rc == 0) rc = sl_msg_get(req, "mask", SL_DTYPE_U8, 2, tok_shape, &mask);
    if (rc) return rc;
    sl_segment_input in = {.B = c->batch, .T = c->seq, .input = act, .want_grad = 1,
                           .dropout_seed = sl_step_seed(c->seed, r, c->local_steps, step)};
    if ((rc = sl_segment_forward(es->e_seg, &in))) return rc;
    /* up to the cloud; the targets and mask travel on unchanged */
    sl_msg up;
    sl_msg_init(&up, SL_MSG_FORWARD, (uint32_t)r, (uint32_t)step, (uint32_t)es->e_id);
    uint32_t tshape[2] = {(uint32_t)c->batch, (uint32_t)c->seq};
    rc = sl_add_activation(&up, "act", &c->compress, c->batch, c->seq, c->dim, sl_segment_output(es->e_seg));
    if (rc == 0) rc = sl_msg_add(&up, "targets", SL_DTYPE_I32, 2, tshape, targets->t_data);
    if (rc == 0) rc = sl_msg_add(&up, "mask", SL_DTYPE_U8, 2, tshape, mask->t_data);
    pthread_mutex_lock(&es->e_link_mu);
    const sl_msg *down = NULL;
    const sl_tensor *loss = NULL, *count = NULL;
    const float *grad = NULL;
    if (rc == 0) rc = sl_link_call(es->e_link, &up, &down);
    if (rc == 0) rc = sl_get_activation(down, "grad", c->batch, c->seq, c->dim, es->e_grad_from_cloud, &grad);
    if (rc == 0) rc = sl_msg_get(down, "loss", SL_DTYPE_F32, 0, NULL, &loss);
    if (rc == 0) rc = sl_msg_get(down, "count", SL_DTYPE_I32, 0, NULL, &count);
    if (rc != 0) {
        pthread_mutex_lock(&es->e_mu);
        if (es->e_up_rc == 0) {
            es->e_up_rc = rc;
            snprintf(es->e_up_error, sizeof(es->e_up_error), "%s", sl_last_error());
        }
        pthread_cond_broadcast(&es->e_cv);
        pthread_mutex_unlock(&es->e_mu);
    }
    if (rc == 0) {
        memcpy(&es->e_loss, loss->t_data, sizeof(float));
        memcpy(&es->e_count, count->t_data, sizeof(int32_t));
        sl_lora_zero_grad(&es->e_lora);
        rc = sl_segment_backward(es->e_seg, grad, es->e_grad_in);
    }
    pthread_mutex_unlock(&es->e_link_mu);
    sl_msg_release(&up);
    if (rc) return rc;
    const size_t ends[1] = {es->e_lora.n_params};
    sl_adamw_update_groups(&es->e_opt, es->e_lora.params, es->e_lora.grads, 1, ends);
    sl_msg_init(reply, SL_MSG_BACKWARD, (uint32_t)r, (uint32_t)step, (uint32_t)es->e_id);
    rc = sl_add_activation(reply, "grad", &c->compress, c->batch, c->seq, c->dim, es->e_grad_in);
    if (rc == 0) rc = sl_msg_add(reply, "loss", SL_DTYPE_F32, 0, NULL, &es->e_loss);
    if (rc == 0) rc = sl_msg_add(reply, "count", SL_DTYPE_I32, 0, NULL, &es->e_count);
    return rc;
}

static int on_report(edge_state *es, const sl_msg *req, sl_msg *reply) {
    const uint32_t u = req->m_header.h_sender;
    const int r = (int)req->m_header.h_round;
    const int64_t shape[1] = {(int64_t)es->e_n_user};
    const sl_tensor *ad, *samples;
    int rc = sl_msg_get(req, "user_adapter", SL_DTYPE_F32, 1, shape, &ad);
    if (rc == 0) rc = sl_msg_get(req, "samples", SL_DTYPE_U64, 0, NULL, &samples);
    if (rc) return rc;
    pthread_mutex_lock(&es->e_mu);
    if (es->e_round != r || es->e_user != (int)u || es->e_user_reported) {
        int cur = es->e_round, cu = es->e_user;
        pthread_mutex_unlock(&es->e_mu);
        return sl_fail(SL_ESTATE, "edge %d: ROUND_REPORT from user %u for round %d; this round (%d) trains user %d",
                       es->e_id, u, r, cur, cu);
    }
    memcpy(es->e_user_report, ad->t_data, ad->t_bytes);
    memcpy(&es->e_samples, samples->t_data, sizeof(uint64_t));
    es->e_user_reported = 1;
    pthread_cond_broadcast(&es->e_cv);
    pthread_mutex_unlock(&es->e_mu);
    sl_msg_init(reply, SL_MSG_ACK, (uint32_t)r, 0, (uint32_t)es->e_id);
    return SL_OK;
}

static int edge_handler(void *arg, const sl_msg *req, sl_msg *reply) {
    edge_state *es = arg;
    /* only users talk to an edge: a message from another tier that carries an attached
     * user's id must not train or report for that user */
    if (req->m_header.h_sender_tier != SL_TIER_USER)
        return sl_fail(SL_EINVAL, "edge %d: %s from %s %u: only users send requests to an edge", es->e_id,
                       sl_msg_type_name(req->m_header.h_type), sl_tier_name(req->m_header.h_sender_tier),
                       req->m_header.h_sender);
    switch (req->m_header.h_type) {
    case SL_MSG_HELLO: return on_hello(es, req, reply);
    case SL_MSG_PART_CHUNK:
        return sl_serve_part_chunk(req, reply, "user", es->e_user_file.m_data, es->e_user_file.m_bytes);
    case SL_MSG_ROUND_POLL: return on_round_poll(es, req, reply);
    case SL_MSG_FORWARD: return on_forward(es, req, reply);
    case SL_MSG_ROUND_REPORT: return on_report(es, req, reply);
    default:
        return sl_fail(SL_EINVAL, "edge %d: cannot answer a %s request", es->e_id,
                       sl_msg_type_name(req->m_header.h_type));
    }
}

/* HELLO to the cloud, then both parts. */
static int join_cloud(edge_state *es, const char *cache_dir) {
    sl_msg hello;
    sl_msg_init(&hello, SL_MSG_HELLO, 0, 0, (uint32_t)es->e_id);
    const sl_msg *ok = NULL;
    const sl_tensor *cfg, *users;
    int rc = sl_link_call(es->e_link, &hello, &ok);
    if (rc == 0) rc = sl_msg_get(ok, "config", SL_DTYPE_U8, 1, NULL, &cfg);
    if (rc == 0) rc = sl_msg_get(ok, "users", SL_DTYPE_I32, 1, NULL, &users);
    if (rc == 0) rc = sl_tier_config_from_json(cfg->t_data, cfg->t_bytes, sl_link_peer(es->e_link), &es->e_cfg);
    if (rc == 0) rc = sl_apply_shaping(es->e_link, ok);
    const sl_tensor *ushape = rc == 0 ? sl_msg_find(ok, "user_shape") : NULL;
    if (ushape != NULL && (ushape->t_dtype != SL_DTYPE_F32 || ushape->t_ndim != 2 || ushape->t_shape[1] != 4 ||
                           ushape->t_shape[0] != users->t_shape[0]))
        rc = sl_fail(SL_EFORMAT, "%s: HELLO_OK tensor 'user_shape' is not F32 (users, 4)", sl_link_peer(es->e_link));
    if (rc == 0 && ushape != NULL) {
        es->e_user_shape = sl_alloc(ushape->t_bytes);
        if (es->e_user_shape == NULL) rc = SL_ENOMEM;
        else memcpy(es->e_user_shape, ushape->t_data, ushape->t_bytes);
    }
    if (rc == 0) {
        es->e_json_bytes = cfg->t_bytes;
        es->e_json = sl_alloc(cfg->t_bytes + 1);
        es->e_n_users = (int)users->t_shape[0];
        es->e_users = sl_alloc(sizeof(int32_t) * (size_t)(es->e_n_users + 1));
        es->e_told_done = sl_alloc(sizeof(int) * (size_t)(es->e_n_users + 1));
        if (!es->e_json || !es->e_users || !es->e_told_done) rc = SL_ENOMEM;
    }
    if (rc == 0) {
        memcpy(es->e_json, cfg->t_data, cfg->t_bytes);
        memcpy(es->e_users, users->t_data, users->t_bytes);
    }
    sl_msg_release(&hello);
    if (rc) return rc;
    char edge_path[1100], user_path[1100];
    snprintf(edge_path, sizeof(edge_path), "%s/edge.safetensors", cache_dir);
    snprintf(user_path, sizeof(user_path), "%s/user.safetensors", cache_dir);
    if ((rc = sl_make_dirs(cache_dir))) return rc;
    if ((rc = sl_fetch_part(es->e_link, "edge", es->e_cfg.edge_part_sha256, es->e_cfg.edge_part_bytes, edge_path)))
        return rc;
    if ((rc = sl_fetch_part(es->e_link, "user", es->e_cfg.user_part_sha256, es->e_cfg.user_part_bytes, user_path)))
        return rc;
    if ((rc = sl_model_load(&es->e_model, edge_path))) return rc;
    return sl_map_file(&es->e_user_file, user_path);
}

/* One round: task from the cloud, wait for the user's report, report to the cloud.
 * Returns 1 when the cloud says training is over. */
static int edge_round(edge_state *es, int round, int timeout_ms) {
    const sl_msg *reply = NULL;
    int rc, wait_ms = SL_POLL_MIN_MS;
    double start = sl_now_s();
    for (;;) {
        sl_msg poll;
        sl_msg_init(&poll, SL_MSG_ROUND_POLL, (uint32_t)round, 0, (uint32_t)es->e_id);
        pthread_mutex_lock(&es->e_link_mu);
        rc = sl_link_call(es->e_link, &poll, &reply);
        if (rc == 0 && reply->m_header.h_type == SL_MSG_ROUND_TASK) {
            const int64_t nu[1] = {(int64_t)es->e_n_user}, ne[1] = {(int64_t)es->e_lora.n_params};
            const sl_tensor *user, *ua, *ea;
            rc = sl_msg_get(reply, "user", SL_DTYPE_I32, 0, NULL, &user);
            if (rc == 0) rc = sl_msg_get(reply, "user_adapter", SL_DTYPE_F32, 1, nu, &ua);
            if (rc == 0) rc = sl_msg_get(reply, "edge_adapter", SL_DTYPE_F32, 1, ne, &ea);
            if (rc == 0) {
                pthread_mutex_lock(&es->e_mu);
                memcpy(&es->e_user, user->t_data, sizeof(int32_t));
                memcpy(es->e_user_adapter, ua->t_data, ua->t_bytes);
                memcpy(es->e_lora.params, ea->t_data, ea->t_bytes);
                es->e_user_reported = 0;
                es->e_round = round;
                pthread_cond_broadcast(&es->e_cv);
                pthread_mutex_unlock(&es->e_mu);
            }
            pthread_mutex_unlock(&es->e_link_mu);
            sl_msg_release(&poll);
            if (rc) return rc;
            break;
        }
        int type = rc == 0 ? reply->m_header.h_type : 0;
        pthread_mutex_unlock(&es->e_link_mu);
        sl_msg_release(&poll);
        if (rc) return rc;
        if (type == SL_MSG_ROUND_DONE) return 1;
        if (timeout_ms > 0 && (sl_now_s() - start) * 1e3 > 4.0 * timeout_ms)
            return sl_fail(SL_ETIMEDOUT, "edge %d: no task for round %d from %s after %.0f s", es->e_id, round,
                           sl_link_peer(es->e_link), sl_now_s() - start);
        sl_sleep_ms(wait_ms);
        wait_ms = wait_ms * 2 > SL_POLL_MAX_MS ? SL_POLL_MAX_MS : wait_ms * 2;
    }
    /* the user trains; its FORWARD requests arrive on the server's workers */
    pthread_mutex_lock(&es->e_mu);
    while (!es->e_user_reported) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&es->e_cv, &es->e_mu, &ts);
        if (es->e_up_rc != 0) {
            char why[sizeof(es->e_up_error)];
            snprintf(why, sizeof(why), "%s", es->e_up_error);
            int up_rc = es->e_up_rc;
            pthread_mutex_unlock(&es->e_mu);
            return sl_fail(up_rc, "edge %d: round %d: %s", es->e_id, round, why);
        }
        if (!es->e_user_reported && timeout_ms > 0 && (sl_now_s() - start) * 1e3 > 4.0 * timeout_ms) {
            int u = es->e_user;
            pthread_mutex_unlock(&es->e_mu);
            return sl_fail(SL_ETIMEDOUT, "edge %d: user %d did not finish round %d within %.0f s", es->e_id, u, round,
                           sl_now_s() - start);
        }
    }
    int32_t user = es->e_user;
    uint64_t samples = es->e_samples;
    pthread_mutex_unlock(&es->e_mu);
    sl_msg rep;
    sl_msg_init(&rep, SL_MSG_ROUND_REPORT, (uint32_t)round, 0, (uint32_t)es->e_id);
    uint32_t nu[1] = {(uint32_t)es->e_n_user}, ne[1] = {(uint32_t)es->e_lora.n_params};
    rc = sl_msg_add(&rep, "user_adapter", SL_DTYPE_F32, 1, nu, es->e_user_report);
    if (rc == 0) rc = sl_msg_add(&rep, "edge_adapter", SL_DTYPE_F32, 1, ne, es->e_lora.params);
    if (rc == 0) rc = sl_msg_add(&rep, "samples", SL_DTYPE_U64, 0, NULL, &samples);
    if (rc == 0) rc = sl_msg_add(&rep, "user", SL_DTYPE_I32, 0, NULL, &user);
    pthread_mutex_lock(&es->e_link_mu);
    if (rc == 0) rc = sl_link_call(es->e_link, &rep, &reply);
    pthread_mutex_unlock(&es->e_link_mu);
    sl_msg_release(&rep);
    return rc;
}

int sl_edge_run(int edge_id, const char *cloud_url, const char *url, const char *cache_dir, int timeout_ms,
                sl_tier_report *rep) {
    memset(rep, 0, sizeof(*rep));
    sl_gemm_warmup(); /* library work buffers belong to the baseline, not to the breakdown */
    rep->memory.start_rss = sl_current_rss_bytes();
    double t0 = sl_now_s();
    edge_state es;
    memset(&es, 0, sizeof(es));
    es.e_id = edge_id;
    pthread_mutex_init(&es.e_mu, NULL);
    pthread_mutex_init(&es.e_link_mu, NULL);
    pthread_cond_init(&es.e_cv, NULL);
    int rc = sl_tier_link_open(&es.e_link, cloud_url, "cloud", SL_TIER_EDGE, edge_id, timeout_ms);
    if (rc == 0) rc = join_cloud(&es, cache_dir);
    const sl_tier_config *c = &es.e_cfg;
    if (rc == 0) {
        sl_segment_config sc = {c->cut1, c->cut2, 0, 0, c->batch, c->seq};
        sl_adamw_config oc = c->optim;
        es.e_n_user = 0;
        if ((rc = sl_lora_init(&es.e_lora, &es.e_model.config, &c->lora, c->cut1, c->cut2)) == 0 &&
            (rc = sl_adamw_init(&es.e_opt, &oc, es.e_lora.n_params)) == 0)
            rc = sl_segment_create(&es.e_seg, &es.e_model, &es.e_lora, &sc);
        es.e_n_user = es.e_lora.layer_params * (size_t)c->cut1;
        es.e_grad_in = sl_alloc(sizeof(float) * (size_t)c->batch * c->seq * c->dim);
        es.e_act_in = sl_alloc(sizeof(float) * (size_t)c->batch * c->seq * c->dim);
        es.e_grad_from_cloud = sl_alloc(sizeof(float) * (size_t)c->batch * c->seq * c->dim);
        es.e_user_adapter = sl_alloc(sizeof(float) * (es.e_n_user + 1));
        es.e_user_report = sl_alloc(sizeof(float) * (es.e_n_user + 1));
        if (rc == 0 && (!es.e_grad_in || !es.e_act_in || !es.e_grad_from_cloud || !es.e_user_adapter ||
                        !es.e_user_report))
            rc = SL_ENOMEM;
    }
    if (rc == 0) {
        sl_server_config sc;
        sl_server_config_default(&sc);
        sc.sc_url = url;
        sc.sc_name = "edge";
        sc.sc_tier = SL_TIER_EDGE;
        sc.sc_id = (uint32_t)edge_id;
        sc.sc_workers = 2; /* one user's FORWARD while the others poll */
        if (timeout_ms > 0) sc.sc_busy_wait_ms = sc.sc_send_timeout_ms = timeout_ms; /* as the cloud's */
        sc.sc_handler = edge_handler;
        sc.sc_handler_arg = &es;
        rc = sl_server_open(&es.e_server, &sc);
    }
    if (rc == 0) {
        sl_memory_breakdown *m = &rep->memory;
        const sl_segment_memory sm = sl_segment_memory_use(es.e_seg);
        m->adapters = (2 * es.e_lora.n_params + 2 * es.e_n_user) * sizeof(float);
        m->optimizer = 2 * es.e_opt.n * sizeof(float);
        m->activations = sm.activation_bytes + sm.scratch_bytes + 3 * (size_t)c->batch * c->seq * c->dim * sizeof(float);
        /* the user's FORWARD, the one to the cloud, the cloud's BACKWARD and the user's — or,
         * while its users join, the part chunks it serves to them (2 workers) */
        const size_t step = 4 * sl_step_message_bytes(c->batch, c->seq, c->dim);
        const size_t serving = sl_part_serving_bytes(es.e_n_users < 2 ? es.e_n_users : 2);
        m->messages = step > serving ? step : serving;
        rep->setup_peak_rss_bytes = sl_peak_rss_bytes();
        sl_reset_peak_rss(); /* from here on the peak is the training's */
    }
    for (int round = 1; rc == 0 && round <= c->rounds; round++) {
        int r = edge_round(&es, round, timeout_ms);
        if (r < 0) rc = r;
        if (r == 1) break;
    }
    /* tell every user of this edge that training is over (or failed) before closing */
    pthread_mutex_lock(&es.e_mu);
    if (rc != 0) {
        es.e_failed = 1;
        snprintf(es.e_error, sizeof(es.e_error), "%s", sl_last_error());
    }
    es.e_done = 1;
    double start = sl_now_s();
    for (;;) {
        int all = 1;
        for (int i = 0; i < es.e_n_users; i++) all &= es.e_told_done[i];
        if (all || es.e_server == NULL) break;
        if (timeout_ms > 0 && (sl_now_s() - start) * 1e3 > timeout_ms) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&es.e_cv, &es.e_mu, &ts);
    }
    pthread_mutex_unlock(&es.e_mu);
    sl_sleep_ms(2 * SL_POLL_MAX_MS); /* the last DONE replies leave the socket */
    if (es.e_server) {
        sl_server_stats ss;
        sl_server_stats_get(es.e_server, &ss);
        rep->bytes_down_received = ss.ss_bytes_received;
        rep->bytes_down_sent = ss.ss_bytes_sent;
    }
    if (es.e_link) {
        sl_link_stats ls;
        sl_link_stats_get(es.e_link, &ls);
        rep->bytes_up_sent = ls.ls_bytes_sent;
        rep->bytes_up_received = ls.ls_bytes_received;
    }
    /* its part, and the users' part as far as it served it (resident pages) */
    rep->memory.base_weights = sl_model_resident_bytes(&es.e_model) +
                               sl_resident_bytes(es.e_user_file.m_data, es.e_user_file.m_bytes);
    sl_server_close(es.e_server);
    sl_link_close(es.e_link);
    sl_segment_free(es.e_seg);
    sl_adamw_free(&es.e_opt);
    sl_lora_free(&es.e_lora);
    sl_free(es.e_grad_in);
    sl_free(es.e_act_in);
    sl_free(es.e_grad_from_cloud);
    sl_free(es.e_user_adapter);
    sl_free(es.e_user_report);
    sl_free(es.e_json);
    sl_free(es.e_users);
    sl_free(es.e_told_done);
    sl_free(es.e_user_shape);
    sl_unmap_file(&es.e_user_file);
    sl_model_free(&es.e_model);
    pthread_cond_destroy(&es.e_cv);
    pthread_mutex_destroy(&es.e_mu);
    pthread_mutex_destroy(&es.e_link_mu);
    rep->peak_rss_bytes = sl_peak_rss_bytes();
    rep->seconds = sl_now_s() - t0;
    return rc;
}
