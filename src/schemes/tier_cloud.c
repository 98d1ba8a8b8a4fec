/* tier_cloud.c: the cloud — the aggregating server of every distributed scheme (see run.h).
 *
 *   splitllm  clients are the M edges; the cloud runs blocks [c2,L) + head for M streams
 *             at once (one per edge), and averages user-, edge- and cloud-side adapters.
 *   sfl       (SplitFed V1) clients are the N users; the server runs blocks [c1,L) + head
 *             for N streams at once, one model instance per user with its own adapters,
 *             optimizer state and activations; user- and server-side adapters averaged.
 *   sl        (vanilla split learning) clients are the N users, one after another in each
 *             round against one server instance; the user-side adapter passes from user to
 *             user, nothing is averaged.
 *   fl        (federated LoRA) clients are the N users, each training the whole model; the
 *             cloud only averages their adapters.
 *
 * It cuts the base model into parts, serves the parts its clients need, and at the end of
 * each round writes the round's adapters and the global one.
 *
 * Concurrency: the server runs one worker per stream plus one. Round bookkeeping is under
 * c_mu; a stream's segment, adapter and buffers are touched only by requests of its one
 * client at a time (a client's link is synchronous), so the heavy work runs without it. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "model/part.h"
#include "model/segment.h"
#include "net/wireless.h"
#include "schemes/fedavg.h"
#include "schemes/run.h"
#include "schemes/tier_common.h"
#include "util/progress.h"

typedef enum { CLOUD_SPLITLLM, CLOUD_SFL, CLOUD_SL, CLOUD_FL } cloud_scheme;

typedef struct {
    sl_lora lora;        /* the cloud-side adapter of this stream for this round */
    sl_adamw opt;
    sl_segment *seg;
    float *grad;         /* (B,T,C): gradient of the stream's input, the BACKWARD reply */
    float *act_in;       /* (B,T,C): a compressed FORWARD's activations, decoded */
    float loss;          /* the last step's, for the reply */
    int32_t count;
    int task_round;      /* round whose cloud-side copy was set up */
} cloud_stream;

typedef struct {
    int task_round;      /* round whose task this client received */
    int reported_round;  /* round whose report arrived */
    float *user_adapter; /* (n_user) as trained this round */
    float *edge_adapter; /* (n_edge): splitllm only */
    double samples;
    int user;            /* the user that trained (an edge's pick, or the client itself) */
    double loss_sum;
    int loss_steps;
} cloud_client;

typedef struct {
    const sl_run_config *c_cfg;
    cloud_scheme c_scheme;
    int c_n_clients;         /* edges (splitllm) or users */
    int c_n_streams;         /* M (splitllm), N (sfl), 1 (sl), 0 (fl) */
    sl_tier c_client_tier;
    int c_seg_begin;         /* the cloud's blocks [c_seg_begin, L) */
    sl_model c_model;        /* the cloud part (none for fl) */
    sl_config c_mc;          /* the whole model's configuration */
    sl_tier_config c_tier;   /* what clients are told */
    char *c_json;
    char c_edge_path[1100], c_user_path[1100], c_cloud_path[1100];
    sl_mapped_file c_edge_file, c_user_file;
    sl_lora c_global;        /* blocks [0,L): the aggregated adapter */
    size_t c_n_user, c_n_edge, c_n_cloud; /* floats of each slice of c_global, in order */
    cloud_stream *c_streams; /* [c_n_streams] */
    cloud_client *c_clients; /* [c_n_clients] */
    int *c_edge_of_user;     /* [N] (splitllm) */
    pthread_mutex_t c_mu;
    int c_round;             /* current round, 1..R; R+1 when training is over */
    int c_reports;           /* reports of the current round */
    int *c_told_done;        /* [c_n_clients]: heard ROUND_DONE (user clients poll for it) */
    double c_round_start_s;
    FILE *c_metrics;
    sl_server *c_server;
    sl_progress c_progress;  /* steps of all streams, under c_mu */
    long c_steps_done;
    double c_train_start_s;
    float *c_shape;          /* [N][4] with --shape-links: each user's link (up bps, up delay s,
                                down bps, down delay s); then the backhaul's, at [N] */
    int c_in_flight;         /* FORWARDs being computed now, and the most at once */
    int c_max_in_flight;
} cloud_state;

static const char *scheme_name(cloud_scheme s) {
    return s == CLOUD_SPLITLLM ? "splitllm" : s == CLOUD_SFL ? "sfl" : s == CLOUD_SL ? "sl" : "fl";
}

/* The user that edge e trains with in round r (splitllm). */
static int pick_user(const cloud_state *cs, int e, int r) {
    const sl_run_config *c = cs->c_cfg;
    int count = 0;
    for (int u = 0; u < c->users; u++) count += cs->c_edge_of_user[u] == e;
    if (count == 0) return -1;
    int k = -1;
    if (c->select != NULL && strcmp(c->select, "random") == 0) {
        sl_rng rng;
        sl_rng_init(&rng, c->seed, ((uint64_t)r << 20) + (uint64_t)e);
        k = (int)(sl_rng_u64(&rng) % (uint64_t)count);
    } else {
        k = (r - 1) % count;
    }
    for (int u = 0; u < c->users; u++)
        if (cs->c_edge_of_user[u] == e && k-- == 0) return u;
    return -1;
}

/* The stream a client's steps run on. */
static int stream_of(const cloud_state *cs, int client) {
    return cs->c_scheme == CLOUD_SL ? 0 : client;
}

/* Float offset of the cloud's slice in c_global. */
static size_t cloud_offset(const cloud_state *cs) { return cs->c_n_user + cs->c_n_edge; }

static int save_slice(const cloud_state *cs, const float *params, int begin, int end, const char *path) {
    sl_lora l;
    int rc = sl_lora_init(&l, &cs->c_mc, &cs->c_cfg->lora, begin, end);
    if (rc) return rc;
    memcpy(l.params, params, l.n_params * sizeof(float));
    rc = sl_lora_save(&l, path);
    sl_lora_free(&l);
    return rc;
}

/* Averages (or, for sl, takes over) the round's adapters into the global adapter and writes
 * the round's files. Called with c_mu held, once every client of the round reported. */
static int aggregate_round(cloud_state *cs) {
    const sl_run_config *c = cs->c_cfg;
    const int K = cs->c_n_clients, r = cs->c_round, L = cs->c_mc.n_layers;
    int rc = SL_OK;
    if (cs->c_scheme == CLOUD_SL) {
        /* the user side was carried from user to user; the server side is the one instance */
        memcpy(cs->c_global.params + cloud_offset(cs), cs->c_streams[0].lora.params, cs->c_n_cloud * sizeof(float));
    } else {
        const float **in = calloc((size_t)K, sizeof(float *));
        double *w = calloc((size_t)K, sizeof(double));
        if (in == NULL || w == NULL) {
            free(in);
            free(w);
            return sl_fail(SL_ENOMEM, "cloud: out of memory aggregating round %d", r);
        }
        for (int k = 0; k < K; k++) w[k] = cs->c_clients[k].samples;
        for (int k = 0; k < K; k++) in[k] = cs->c_clients[k].user_adapter;
        rc = sl_fedavg(cs->c_global.params, in, w, K, cs->c_n_user);
        if (rc == 0 && cs->c_n_edge > 0) {
            for (int k = 0; k < K; k++) in[k] = cs->c_clients[k].edge_adapter;
            rc = sl_fedavg(cs->c_global.params + cs->c_n_user, in, w, K, cs->c_n_edge);
        }
        if (rc == 0 && cs->c_n_cloud > 0) {
            for (int k = 0; k < K; k++) in[k] = cs->c_streams[stream_of(cs, k)].lora.params;
            rc = sl_fedavg(cs->c_global.params + cloud_offset(cs), in, w, K, cs->c_n_cloud);
        }
        free(in);
        free(w);
        if (rc) return rc;
    }
    /* the round's adapters, so that the aggregation can be checked independently */
    char dir[1024], path[1300];
    snprintf(dir, sizeof(dir), "%s/rounds/r%03d", c->out_dir, r);
    if ((rc = sl_make_dirs(dir))) return rc;
    const int user_end = cs->c_scheme == CLOUD_FL ? L : c->cut1;
    double loss_sum = 0.0, samples = 0.0;
    int loss_steps = 0;
    char list[2048] = "";
    size_t used = 0;
    for (int k = 0; k < K && rc == 0; k++) {
        cloud_client *cl = &cs->c_clients[k];
        if (cs->c_scheme != CLOUD_SL || k == K - 1) {
            snprintf(path, sizeof(path), "%s/user_%03d.safetensors", dir, cl->user);
            rc = save_slice(cs, cl->user_adapter, 0, user_end, path);
        }
        if (rc == 0 && cs->c_scheme == CLOUD_SPLITLLM) {
            snprintf(path, sizeof(path), "%s/edge_%d.safetensors", dir, k);
            rc = save_slice(cs, cl->edge_adapter, c->cut1, c->cut2, path);
        }
        if (rc == 0 && cs->c_n_streams > 0 && (cs->c_scheme != CLOUD_SL || k == 0)) {
            snprintf(path, sizeof(path), "%s/cloud_stream_%d.safetensors", dir, stream_of(cs, k));
            rc = sl_lora_save(&cs->c_streams[stream_of(cs, k)].lora, path);
        }
        loss_sum += cl->loss_sum;
        loss_steps += cl->loss_steps;
        samples += cl->samples;
        int n = snprintf(list + used, sizeof(list) - used, "%s{\"client\":%d,\"user\":%d,\"samples\":%.0f}",
                         k ? "," : "", k, cl->user, cl->samples);
        if (n > 0 && (size_t)n < sizeof(list) - used) used += (size_t)n;
    }
    snprintf(path, sizeof(path), "%s/global.safetensors", dir);
    if (rc == 0) rc = sl_lora_save(&cs->c_global, path);
    snprintf(path, sizeof(path), "%s/lora.safetensors", c->out_dir);
    if (rc == 0) rc = sl_lora_save(&cs->c_global, path);
    if (rc) return rc;
    double now = sl_now_s();
    fprintf(cs->c_metrics, "{\"tier\":\"cloud\",\"round\":%d,\"train_loss\":%.9g,\"samples\":%.0f,\"seconds\":%.4f,"
            "\"streams\":[%s]}\n", r, loss_steps ? loss_sum / loss_steps : NAN, samples, now - cs->c_round_start_s,
            list);
    fflush(cs->c_metrics);
    if (cs->c_progress.p_tty) fprintf(stderr, "\n");
    fprintf(stderr, "cloud: %s round %d/%d done: train loss %.4f over %d steps, %.1f s\n", scheme_name(cs->c_scheme), r,
            c->rounds, loss_steps ? loss_sum / loss_steps : NAN, loss_steps, now - cs->c_round_start_s);
    cs->c_round_start_s = now;
    return SL_OK;
}

/* The client id of a request, checked against the scheme's client tier. */
static int client_of(const cloud_state *cs, const sl_msg *req, int *out) {
    const uint32_t k = req->m_header.h_sender;
    if (req->m_header.h_sender_tier != cs->c_client_tier || k >= (uint32_t)cs->c_n_clients)
        return sl_fail(SL_EINVAL, "cloud (%s): %s from %s %u: the clients here are %ss 0..%d",
                       scheme_name(cs->c_scheme), sl_msg_type_name(req->m_header.h_type),
                       sl_tier_name(req->m_header.h_sender_tier), k, sl_tier_name(cs->c_client_tier),
                       cs->c_n_clients - 1);
    *out = (int)k;
    return SL_OK;
}

static int on_hello(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    int k = -1;
    int rc = client_of(cs, req, &k);
    if (rc) return rc;
    sl_msg_init(reply, SL_MSG_HELLO_OK, 0, 0, (uint32_t)k);
    uint32_t shape[1] = {(uint32_t)strlen(cs->c_json)};
    rc = sl_msg_add(reply, "config", SL_DTYPE_U8, 1, shape, cs->c_json);
    uint32_t four[1] = {4};
    if (rc == 0 && cs->c_shape != NULL) /* the client's own link: an edge's backhaul, or a user's */
        rc = sl_msg_add(reply, "shape", SL_DTYPE_F32, 1, four,
                        cs->c_shape + 4 * (cs->c_scheme == CLOUD_SPLITLLM ? cs->c_cfg->users : k));
    if (rc || cs->c_scheme != CLOUD_SPLITLLM) return rc;
    /* the users attached to this edge, so it knows whom to tell that training is over */
    int32_t *users = sl_msg_alloc(reply, sizeof(int32_t) * (size_t)cs->c_cfg->users);
    if (users == NULL) return SL_ENOMEM;
    uint32_t n = 0;
    for (int u = 0; u < cs->c_cfg->users; u++)
        if (cs->c_edge_of_user[u] == k) users[n++] = u;
    rc = sl_msg_add(reply, "users", SL_DTYPE_I32, 1, &n, users);
    if (rc == 0 && cs->c_shape != NULL) { /* the links of its users, in the same order */
        float *us = sl_msg_alloc(reply, sizeof(float) * 4 * (n ? n : 1));
        if (us == NULL) return SL_ENOMEM;
        for (uint32_t i = 0; i < n; i++) memcpy(us + 4 * i, cs->c_shape + 4 * users[i], 4 * sizeof(float));
        uint32_t s2[2] = {n, 4};
        rc = sl_msg_add(reply, "user_shape", SL_DTYPE_F32, 2, s2, us);
    }
    return rc;
}

static int on_part_chunk(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const sl_tensor *name = sl_msg_find(req, "part");
    if (name != NULL && name->t_bytes == 4 && memcmp(name->t_data, "user", 4) == 0)
        return sl_serve_part_chunk(req, reply, "user", cs->c_user_file.m_data, cs->c_user_file.m_bytes);
    if (cs->c_scheme != CLOUD_SPLITLLM) return sl_fail(SL_EINVAL, "cloud: only the user part is served in %s",
                                                       scheme_name(cs->c_scheme));
    return sl_serve_part_chunk(req, reply, "edge", cs->c_edge_file.m_data, cs->c_edge_file.m_bytes);
}

/* Whether client k may train now in round r (c_mu held). */
static int may_train(const cloud_state *cs, int k, int r) {
    const cloud_client *cl = &cs->c_clients[k];
    if (cs->c_round > cs->c_cfg->rounds || r != cs->c_round || cl->reported_round >= r) return 0;
    /* sl: users take turns in id order */
    return cs->c_scheme != CLOUD_SL || cs->c_reports == k;
}

static int on_round_poll(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    int k = -1;
    int rc = client_of(cs, req, &k);
    if (rc) return rc;
    const int r = (int)req->m_header.h_round;
    cloud_client *cl = &cs->c_clients[k];
    pthread_mutex_lock(&cs->c_mu);
    const int current = cs->c_round;
    const int give_task = may_train(cs, k, r);
    if (give_task && cl->task_round != current) {
        cl->task_round = current;
        cl->loss_sum = 0.0;
        cl->loss_steps = 0;
        cl->user = cs->c_scheme == CLOUD_SPLITLLM ? pick_user(cs, k, current) : k;
        if (cs->c_n_streams > 0) {
            cloud_stream *st = &cs->c_streams[stream_of(cs, k)];
            if (st->task_round != current) {
                /* this round's cloud-side copy starts from the global adapter */
                memcpy(st->lora.params, cs->c_global.params + cloud_offset(cs), cs->c_n_cloud * sizeof(float));
                st->task_round = current;
            }
        }
    }
    pthread_mutex_unlock(&cs->c_mu);
    if (current > cs->c_cfg->rounds) {
        pthread_mutex_lock(&cs->c_mu);
        cs->c_told_done[k] = 1;
        pthread_mutex_unlock(&cs->c_mu);
        sl_msg_init(reply, SL_MSG_ROUND_DONE, (uint32_t)current, 0, (uint32_t)k);
        return SL_OK;
    }
    if (!give_task) {
        sl_msg_init(reply, SL_MSG_ROUND_WAIT, (uint32_t)current, 0, (uint32_t)k);
        return SL_OK;
    }
    sl_msg_init(reply, SL_MSG_ROUND_TASK, (uint32_t)current, 0, (uint32_t)k);
    int32_t *ints = sl_msg_alloc(reply, 2 * sizeof(int32_t));
    if (ints == NULL) return SL_ENOMEM;
    ints[0] = cl->user;
    ints[1] = cs->c_cfg->local_steps;
    uint32_t nu[1] = {(uint32_t)cs->c_n_user}, ne[1] = {(uint32_t)cs->c_n_edge};
    rc = sl_msg_add(reply, "steps", SL_DTYPE_I32, 0, NULL, &ints[1]);
    /* the global adapter changes only under c_mu between turns or rounds, while no client of
     * the round has a task outstanding: it is stable while this reply is encoded */
    if (rc == 0) rc = sl_msg_add(reply, "user_adapter", SL_DTYPE_F32, 1, nu, cs->c_global.params);
    if (rc == 0 && cs->c_scheme == CLOUD_SPLITLLM) {
        rc = sl_msg_add(reply, "user", SL_DTYPE_I32, 0, NULL, &ints[0]);
        if (rc == 0) rc = sl_msg_add(reply, "edge_adapter", SL_DTYPE_F32, 1, ne, cs->c_global.params + cs->c_n_user);
    }
    return rc;
}

static int on_forward(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const sl_run_config *c = cs->c_cfg;
    int k = -1;
    int rc = client_of(cs, req, &k);
    if (rc) return rc;
    if (cs->c_n_streams == 0) return sl_fail(SL_EINVAL, "cloud: fl has no FORWARD");
    const int r = (int)req->m_header.h_round, step = (int)req->m_header.h_step;
    cloud_client *cl = &cs->c_clients[k];
    cloud_stream *st = &cs->c_streams[stream_of(cs, k)];
    pthread_mutex_lock(&cs->c_mu);
    int ok = r == cs->c_round && cl->task_round == r && cl->reported_round < r && step < c->local_steps;
    int cur = cs->c_round;
    pthread_mutex_unlock(&cs->c_mu);
    if (!ok)
        return sl_fail(SL_ESTATE, "cloud: FORWARD from %s %d for round %d step %d; the cloud is at round %d (%d steps)",
                       sl_tier_name(cs->c_client_tier), k, r, step, cur, c->local_steps);
    const int B = c->batch, T = c->seq, C = cs->c_mc.dim;
    const int64_t tok_shape[2] = {B, T};
    const sl_tensor *targets, *mask;
    const float *act;
    rc = sl_get_activation(req, "act", B, T, C, st->act_in, &act);
    if (rc == 0) rc = sl_msg_get(req, "targets", SL_DTYPE_I32, 2, tok_shape, &targets);
    if (rc == 0) rc = sl_msg_get(req, "mask", SL_DTYPE_U8, 2, tok_shape, &mask);
    if (rc) return rc;
    pthread_mutex_lock(&cs->c_mu);
    if (++cs->c_in_flight > cs->c_max_in_flight) cs->c_max_in_flight = cs->c_in_flight;
    pthread_mutex_unlock(&cs->c_mu);
    sl_segment_input in = {.B = B, .T = T, .input = act, .targets = targets->t_data, .mask = mask->t_data,
                           .want_grad = 1, .dropout_seed = sl_step_seed(c->seed, r, c->local_steps, step)};
    sl_lora_zero_grad(&st->lora);
    rc = sl_segment_forward(st->seg, &in);
    if (rc == 0) rc = sl_segment_backward(st->seg, NULL, st->grad);
    pthread_mutex_lock(&cs->c_mu);
    cs->c_in_flight--;
    pthread_mutex_unlock(&cs->c_mu);
    if (rc) return rc;
    /* clip the tier groups the server holds separately, as every scheme does */
    const size_t lp = st->lora.layer_params;
    const size_t ends[2] = {lp * (size_t)(c->cut2 > cs->c_seg_begin ? c->cut2 - cs->c_seg_begin : 0),
                            st->lora.n_params};
    sl_adamw_update_groups(&st->opt, st->lora.params, st->lora.grads, 2, ends);
    st->loss = sl_segment_loss(st->seg);
    st->count = sl_segment_loss_count(st->seg);
    pthread_mutex_lock(&cs->c_mu);
    cl->loss_sum += st->loss;
    cl->loss_steps++;
    fprintf(cs->c_metrics, "{\"tier\":\"cloud\",\"round\":%d,\"step\":%d,\"stream\":%d,\"client\":%d,\"loss\":%.9g,"
            "\"count\":%d}\n", r, step, stream_of(cs, k), k, st->loss, st->count);
    cs->c_steps_done++;
    char extra[96];
    snprintf(extra, sizeof(extra), "round %d/%d  loss %.4f", r, c->rounds, st->loss);
    double elapsed = sl_now_s() - cs->c_train_start_s;
    sl_progress_update(&cs->c_progress, cs->c_steps_done,
                       elapsed > 0 ? (double)cs->c_steps_done * B * T / elapsed : 0.0, "tok/s", extra);
    pthread_mutex_unlock(&cs->c_mu);
    sl_msg_init(reply, SL_MSG_BACKWARD, (uint32_t)r, (uint32_t)step, (uint32_t)k);
    rc = sl_add_activation(reply, "grad", &c->compress, B, T, C, st->grad);
    if (rc == 0) rc = sl_msg_add(reply, "loss", SL_DTYPE_F32, 0, NULL, &st->loss);
    if (rc == 0) rc = sl_msg_add(reply, "count", SL_DTYPE_I32, 0, NULL, &st->count);
    return rc;
}

static int on_report(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    int k = -1;
    int rc = client_of(cs, req, &k);
    if (rc) return rc;
    const int r = (int)req->m_header.h_round;
    cloud_client *cl = &cs->c_clients[k];
    const int64_t su[1] = {(int64_t)cs->c_n_user}, se[1] = {(int64_t)cs->c_n_edge};
    const sl_tensor *ua, *ea = NULL, *samples, *loss = NULL;
    rc = sl_msg_get(req, "user_adapter", SL_DTYPE_F32, 1, su, &ua);
    if (rc == 0 && cs->c_scheme == CLOUD_SPLITLLM) rc = sl_msg_get(req, "edge_adapter", SL_DTYPE_F32, 1, se, &ea);
    if (rc == 0) rc = sl_msg_get(req, "samples", SL_DTYPE_U64, 0, NULL, &samples);
    if (rc == 0 && cs->c_scheme == CLOUD_FL) rc = sl_msg_get(req, "loss_sum", SL_DTYPE_F32, 0, NULL, &loss);
    if (rc) return rc;
    pthread_mutex_lock(&cs->c_mu);
    if (r != cs->c_round || cl->task_round != r || cl->reported_round >= r) {
        int cur = cs->c_round;
        pthread_mutex_unlock(&cs->c_mu);
        return sl_fail(SL_ESTATE, "cloud: ROUND_REPORT of round %d from %s %d, the cloud is at round %d", r,
                       sl_tier_name(cs->c_client_tier), k, cur);
    }
    memcpy(cl->user_adapter, ua->t_data, ua->t_bytes);
    if (ea) memcpy(cl->edge_adapter, ea->t_data, ea->t_bytes);
    uint64_t n;
    memcpy(&n, samples->t_data, sizeof(n));
    cl->samples = (double)n;
    if (loss) { /* fl: the users computed their own losses */
        float ls;
        memcpy(&ls, loss->t_data, sizeof(ls));
        cl->loss_sum = ls;
        cl->loss_steps = cs->c_cfg->local_steps;
    }
    cl->reported_round = r;
    /* sl: the next user starts from this user's adapter */
    if (cs->c_scheme == CLOUD_SL) memcpy(cs->c_global.params, ua->t_data, ua->t_bytes);
    cs->c_reports++;
    if (cs->c_reports == cs->c_n_clients) {
        rc = aggregate_round(cs);
        cs->c_reports = 0;
        cs->c_round++;
    }
    pthread_mutex_unlock(&cs->c_mu);
    if (rc) return rc;
    sl_msg_init(reply, SL_MSG_ACK, (uint32_t)r, 0, (uint32_t)k);
    return SL_OK;
}

static int cloud_handler(void *arg, const sl_msg *req, sl_msg *reply) {
    cloud_state *cs = arg;
    switch (req->m_header.h_type) {
    case SL_MSG_HELLO: return on_hello(cs, req, reply);
    case SL_MSG_PART_CHUNK: return on_part_chunk(cs, req, reply);
    case SL_MSG_ROUND_POLL: return on_round_poll(cs, req, reply);
    case SL_MSG_FORWARD: return on_forward(cs, req, reply);
    case SL_MSG_ROUND_REPORT: return on_report(cs, req, reply);
    default:
        return sl_fail(SL_EINVAL, "cloud: cannot answer a %s request", sl_msg_type_name(req->m_header.h_type));
    }
}

/* Cuts the model into the parts the scheme needs under out_dir/parts and maps the cloud's
 * own (none for fl). */
static int make_parts(cloud_state *cs) {
    const sl_run_config *c = cs->c_cfg;
    sl_model full;
    int rc = sl_model_load(&full, c->model_path);
    if (rc) return rc;
    cs->c_mc = full.config;
    const int L = full.config.n_layers;
    if (c->cut1 < 0 || c->cut1 > c->cut2 || c->cut2 > L) {
        sl_model_free(&full);
        return sl_fail(SL_EINVAL, "--cuts %d,%d: expected 0 <= c1 <= c2 <= %d (the model's blocks)", c->cut1, c->cut2, L);
    }
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/parts", c->out_dir);
    if ((rc = sl_make_dirs(dir))) goto out;
    snprintf(cs->c_user_path, sizeof(cs->c_user_path), "%s/user.safetensors", dir);
    snprintf(cs->c_edge_path, sizeof(cs->c_edge_path), "%s/edge.safetensors", dir);
    snprintf(cs->c_cloud_path, sizeof(cs->c_cloud_path), "%s/cloud.safetensors", dir);
    if (cs->c_scheme == CLOUD_FL) {
        rc = sl_model_write_part(&full, 0, L, 1, 1, cs->c_user_path); /* every user holds the whole model */
    } else {
        if ((rc = sl_model_write_part(&full, 0, c->cut1, 1, 0, cs->c_user_path))) goto out;
        if (cs->c_scheme == CLOUD_SPLITLLM &&
            (rc = sl_model_write_part(&full, c->cut1, c->cut2, 0, 0, cs->c_edge_path)))
            goto out;
        rc = sl_model_write_part(&full, cs->c_seg_begin, L, 0, 1, cs->c_cloud_path);
    }
out:
    sl_model_free(&full);
    if (rc) return rc;
    if (cs->c_scheme != CLOUD_FL && (rc = sl_model_load(&cs->c_model, cs->c_cloud_path))) return rc;
    if ((rc = sl_map_file(&cs->c_user_file, cs->c_user_path))) return rc;
    sl_sha256(cs->c_user_file.m_data, cs->c_user_file.m_bytes, cs->c_tier.user_part_sha256);
    cs->c_tier.user_part_bytes = cs->c_user_file.m_bytes;
    if (cs->c_scheme == CLOUD_SPLITLLM) {
        if ((rc = sl_map_file(&cs->c_edge_file, cs->c_edge_path))) return rc;
        sl_sha256(cs->c_edge_file.m_data, cs->c_edge_file.m_bytes, cs->c_tier.edge_part_sha256);
        cs->c_tier.edge_part_bytes = cs->c_edge_file.m_bytes;
    }
    return SL_OK;
}

static void cloud_free(cloud_state *cs) {
    sl_server_close(cs->c_server);
    if (cs->c_streams != NULL) {
        for (int s = 0; s < cs->c_n_streams; s++) {
            cloud_stream *st = &cs->c_streams[s];
            sl_segment_free(st->seg);
            sl_adamw_free(&st->opt);
            sl_lora_free(&st->lora);
            sl_free(st->grad);
            sl_free(st->act_in);
        }
        sl_free(cs->c_streams);
    }
    if (cs->c_clients != NULL) {
        for (int k = 0; k < cs->c_n_clients; k++) {
            sl_free(cs->c_clients[k].user_adapter);
            sl_free(cs->c_clients[k].edge_adapter);
        }
        sl_free(cs->c_clients);
    }
    if (cs->c_metrics) fclose(cs->c_metrics);
    sl_free(cs->c_edge_of_user);
    sl_free(cs->c_told_done);
    sl_free(cs->c_shape);
    sl_lora_free(&cs->c_global);
    sl_unmap_file(&cs->c_user_file);
    sl_unmap_file(&cs->c_edge_file);
    sl_model_free(&cs->c_model);
    sl_free(cs->c_json);
    pthread_mutex_destroy(&cs->c_mu);
}

/* --shape-links: each user's radio link from the wireless model (its seeded distance and
 * round 1's fading; the edge's band shared as the scheme shares it: alone in splitllm and
 * sl, with the edge's other users in sfl and fl), and the backhaul. In the two-tier
 * schemes a user's messages cross the radio link and the backhaul in series. */
static int make_shaping(cloud_state *cs) {
    const sl_run_config *c = cs->c_cfg;
    const int N = c->users;
    sl_wireless_config wc;
    sl_wireless_defaults(&wc);
    double *dist = calloc((size_t)N, sizeof(double)), *up = calloc((size_t)N, sizeof(double));
    double *down = calloc((size_t)N, sizeof(double));
    unsigned char *on = calloc((size_t)N, 1);
    cs->c_shape = sl_alloc(sizeof(float) * 4 * (size_t)(N + 1));
    int rc = (!dist || !up || !down || !on || !cs->c_shape) ? sl_fail(SL_ENOMEM, "cloud: out of memory") : SL_OK;
    if (rc == 0) rc = sl_wireless_place_users(&wc, N, c->seed, dist);
    const int shared = cs->c_scheme == CLOUD_SFL || cs->c_scheme == CLOUD_FL;
    for (int u = 0; u < N && rc == 0; u++) {
        double u_up, u_down;
        if (shared) {
            memset(on, 1, (size_t)N);
        } else {
            memset(on, 0, (size_t)N);
            on[u] = 1;
        }
        rc = sl_wireless_round_rates(&wc, N, dist, on, cs->c_edge_of_user, c->edges, 1, c->seed, up, down);
        u_up = up[u];
        u_down = down[u];
        float *s = cs->c_shape + 4 * u;
        if (cs->c_scheme == CLOUD_SPLITLLM) {
            s[0] = (float)u_up, s[1] = 0.0f, s[2] = (float)u_down, s[3] = 0.0f;
        } else { /* radio then backhaul, in series */
            s[0] = (float)(1.0 / (1.0 / u_up + 1.0 / wc.wc_backhaul_bps));
            s[2] = (float)(1.0 / (1.0 / u_down + 1.0 / wc.wc_backhaul_bps));
            s[1] = s[3] = (float)wc.wc_backhaul_delay_s;
        }
    }
    if (rc == 0) {
        float *b = cs->c_shape + 4 * N;
        b[0] = b[2] = (float)wc.wc_backhaul_bps;
        b[1] = b[3] = (float)wc.wc_backhaul_delay_s;
    }
    free(dist);
    free(up);
    free(down);
    free(on);
    return rc;
}

static int parse_scheme(const char *name, cloud_scheme *out) {
    if (name == NULL || strcmp(name, "splitllm") == 0) *out = CLOUD_SPLITLLM;
    else if (strcmp(name, "sfl") == 0) *out = CLOUD_SFL;
    else if (strcmp(name, "sl") == 0) *out = CLOUD_SL;
    else if (strcmp(name, "fl") == 0) *out = CLOUD_FL;
    else return sl_fail(SL_EINVAL, "--scheme '%s': the cloud runs splitllm, sfl, sl or fl", name);
    return SL_OK;
}

int sl_cloud_run(const sl_run_config *c, const char *url, sl_tier_report *rep) {
    memset(rep, 0, sizeof(*rep));
    sl_gemm_warmup(); /* library work buffers belong to the baseline, not to the breakdown */
    rep->memory.start_rss = sl_current_rss_bytes();
    double t0 = sl_now_s();
    int rc = sl_run_config_validate(c);
    if (rc) return rc;
    if ((rc = sl_make_dirs(c->out_dir))) return rc;
    cloud_state cs;
    memset(&cs, 0, sizeof(cs));
    cs.c_cfg = c;
    pthread_mutex_init(&cs.c_mu, NULL);
    cs.c_round = 1;
    if ((rc = parse_scheme(c->scheme, &cs.c_scheme))) goto done;
    const int M = c->edges, N = c->users;
    switch (cs.c_scheme) {
    case CLOUD_SPLITLLM: cs.c_n_clients = M; cs.c_n_streams = M; cs.c_client_tier = SL_TIER_EDGE; break;
    case CLOUD_SFL: cs.c_n_clients = N; cs.c_n_streams = N; cs.c_client_tier = SL_TIER_USER; break;
    case CLOUD_SL: cs.c_n_clients = N; cs.c_n_streams = 1; cs.c_client_tier = SL_TIER_USER; break;
    case CLOUD_FL: cs.c_n_clients = N; cs.c_n_streams = 0; cs.c_client_tier = SL_TIER_USER; break;
    }
    cs.c_seg_begin = cs.c_scheme == CLOUD_SPLITLLM ? c->cut2 : c->cut1;
    if ((rc = make_parts(&cs))) goto done;
    const int L = cs.c_mc.n_layers;
    cs.c_edge_of_user = sl_alloc(sizeof(int) * (size_t)N);
    if (cs.c_edge_of_user == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    for (int u = 0; u < N; u++) cs.c_edge_of_user[u] = sl_run_edge_of_user(c, u);
    if (cs.c_scheme == CLOUD_SPLITLLM)
        for (int e = 0; e < M; e++)
            if (pick_user(&cs, e, 1) < 0) {
                rc = sl_fail(SL_EINVAL, "edge %d has no users: every edge needs at least one (N=%d, M=%d)", e, N, M);
                goto done;
            }
    /* the global adapter starts exactly as central's */
    if ((rc = sl_lora_init(&cs.c_global, &cs.c_mc, &c->lora, 0, L))) goto done;
    const size_t lp = cs.c_global.layer_params;
    if (cs.c_scheme == CLOUD_FL) {
        cs.c_n_user = lp * (size_t)L;
    } else {
        cs.c_n_user = lp * (size_t)c->cut1;
        cs.c_n_edge = cs.c_scheme == CLOUD_SPLITLLM ? lp * (size_t)(c->cut2 - c->cut1) : 0;
        cs.c_n_cloud = lp * (size_t)(L - cs.c_seg_begin);
    }
    sl_adamw_config oc = c->optim;
    if (oc.total_steps == 0) oc.total_steps = c->rounds * c->local_steps;
    cs.c_clients = sl_alloc(sizeof(cloud_client) * (size_t)cs.c_n_clients);
    cs.c_told_done = sl_alloc(sizeof(int) * (size_t)cs.c_n_clients);
    cs.c_streams = sl_alloc(sizeof(cloud_stream) * (size_t)(cs.c_n_streams + 1));
    if (cs.c_clients == NULL || cs.c_streams == NULL || cs.c_told_done == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    for (int k = 0; k < cs.c_n_clients && rc == 0; k++) {
        cs.c_clients[k].user_adapter = sl_alloc((cs.c_n_user + 1) * sizeof(float));
        cs.c_clients[k].edge_adapter = sl_alloc((cs.c_n_edge + 1) * sizeof(float));
        if (!cs.c_clients[k].user_adapter || !cs.c_clients[k].edge_adapter) rc = SL_ENOMEM;
    }
    const size_t act_floats = (size_t)c->batch * c->seq * cs.c_mc.dim;
    for (int s = 0; s < cs.c_n_streams && rc == 0; s++) {
        cloud_stream *st = &cs.c_streams[s];
        sl_segment_config sc = {cs.c_seg_begin, L, 0, 1, c->batch, c->seq};
        if ((rc = sl_lora_init(&st->lora, &cs.c_mc, &c->lora, cs.c_seg_begin, L))) break;
        if ((rc = sl_adamw_init(&st->opt, &oc, st->lora.n_params))) break;
        if ((rc = sl_segment_create(&st->seg, &cs.c_model, &st->lora, &sc))) break;
        st->grad = sl_alloc(act_floats * sizeof(float));
        st->act_in = sl_alloc(act_floats * sizeof(float));
        if (!st->grad || !st->act_in) rc = SL_ENOMEM;
    }
    if (rc) goto done;
    snprintf(cs.c_tier.scheme, sizeof(cs.c_tier.scheme), "%s", scheme_name(cs.c_scheme));
    cs.c_tier.n_layers = L;
    cs.c_tier.dim = cs.c_mc.dim;
    cs.c_tier.cut1 = c->cut1;
    cs.c_tier.cut2 = c->cut2;
    cs.c_tier.batch = c->batch;
    cs.c_tier.seq = c->seq;
    cs.c_tier.packing = c->packing;
    cs.c_tier.rounds = c->rounds;
    cs.c_tier.local_steps = c->local_steps;
    cs.c_tier.seed = c->seed;
    cs.c_tier.lora = c->lora;
    cs.c_tier.optim = oc;
    cs.c_tier.compress = c->compress;
    if ((rc = sl_tier_config_to_json(&cs.c_tier, &cs.c_json))) goto done;
    if (c->shape_links && (rc = make_shaping(&cs))) goto done;
    {
        sl_memory_breakdown *m = &rep->memory;
        m->adapters = (cs.c_global.n_params + (size_t)cs.c_n_clients * (cs.c_n_user + cs.c_n_edge)) * sizeof(float);
        for (int s = 0; s < cs.c_n_streams; s++) {
            const sl_segment_memory sm = sl_segment_memory_use(cs.c_streams[s].seg);
            m->adapters += 2 * cs.c_streams[s].lora.n_params * sizeof(float);
            m->optimizer += 2 * cs.c_streams[s].opt.n * sizeof(float);
            m->activations += sm.activation_bytes + sm.scratch_bytes + 2 * act_floats * sizeof(float);
        }
        /* every stream's FORWARD and BACKWARD can be in flight at once (fl: the clients'
         * adapters) — or, while the clients join, the part chunks it serves them */
        const size_t step = cs.c_n_streams > 0
                                ? 2 * (size_t)cs.c_n_streams * sl_step_message_bytes(c->batch, c->seq, cs.c_mc.dim)
                                : 2 * (size_t)cs.c_n_clients * cs.c_n_user * sizeof(float);
        const size_t serving = sl_part_serving_bytes(cs.c_n_clients);
        m->messages = step > serving ? step : serving;
        rep->setup_peak_rss_bytes = sl_peak_rss_bytes();
        sl_reset_peak_rss(); /* from here on the peak is the training's */
    }
    char path[1200];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", c->out_dir);
    cs.c_metrics = fopen(path, "w");
    if (cs.c_metrics == NULL) {
        rc = sl_fail(SL_EIO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    sl_server_config sc;
    sl_server_config_default(&sc);
    sc.sc_url = url;
    sc.sc_name = "cloud";
    sc.sc_tier = SL_TIER_CLOUD;
    sc.sc_id = 0;
    sc.sc_workers = cs.c_n_clients + 1;
    sc.sc_busy_wait_ms = c->timeout_ms;
    /* A reply may wait long for its pipe when many clients download parts at once over one
     * machine's sockets (16 users x 4 MiB chunks): give it the whole timeout, not NNG's
     * default, or a dropped reply stalls its client for a receive timeout. */
    if (c->timeout_ms > 0) sc.sc_send_timeout_ms = c->timeout_ms;
    sc.sc_handler = cloud_handler;
    sc.sc_handler_arg = &cs;
    if ((rc = sl_server_open(&cs.c_server, &sc))) goto done;
    fprintf(stderr, "cloud: %s on %s; %d %ss, %d streams; cloud blocks [%d,%d)\n", scheme_name(cs.c_scheme),
            sl_server_url(cs.c_server), cs.c_n_clients, sl_tier_name(cs.c_client_tier), cs.c_n_streams,
            cs.c_n_streams ? cs.c_seg_begin : L, L);
    fprintf(cs.c_metrics, "{\"tier\":\"cloud\",\"scheme\":\"%s\",\"clients\":%d,\"streams\":%d,"
            "\"cloud_blocks\":[%d,%d]}\n", scheme_name(cs.c_scheme), cs.c_n_clients, cs.c_n_streams,
            cs.c_n_streams ? cs.c_seg_begin : L, L);
    cs.c_round_start_s = sl_now_s();
    cs.c_train_start_s = cs.c_round_start_s;
    sl_progress_start(&cs.c_progress, stderr, "step", (long)c->rounds * c->local_steps * cs.c_n_clients);
    /* Wait for the last round to be aggregated. */
    double last_progress = sl_now_s();
    int seen_round = 1;
    for (;;) {
        pthread_mutex_lock(&cs.c_mu);
        int r = cs.c_round;
        pthread_mutex_unlock(&cs.c_mu);
        if (r > c->rounds) break;
        if (r != seen_round) {
            seen_round = r;
            last_progress = sl_now_s();
        } else if (c->timeout_ms > 0 && (sl_now_s() - last_progress) * 1e3 > 4.0 * c->timeout_ms) {
            rc = sl_fail(SL_ETIMEDOUT, "cloud: round %d made no progress for %.0f s: a client stopped answering", r,
                         sl_now_s() - last_progress);
            goto done;
        }
        sl_sleep_ms(SL_POLL_MAX_MS);
    }
    /* User clients poll until they hear DONE: wait for all of them (edges stop by
     * themselves after the last round). Then let the last replies leave the socket. */
    double done_since = sl_now_s();
    for (;;) {
        int all = 1;
        pthread_mutex_lock(&cs.c_mu);
        for (int k = 0; k < cs.c_n_clients; k++) all &= cs.c_told_done[k];
        pthread_mutex_unlock(&cs.c_mu);
        if (all || cs.c_client_tier != SL_TIER_USER) break;
        if (c->timeout_ms > 0 && (sl_now_s() - done_since) * 1e3 > c->timeout_ms) break;
        sl_sleep_ms(SL_POLL_MIN_MS);
    }
    sl_sleep_ms(2 * SL_POLL_MAX_MS);
    fprintf(cs.c_metrics, "{\"tier\":\"cloud\",\"max_concurrent_streams\":%d}\n", cs.c_max_in_flight);
    sl_server_stats ss;
    sl_server_stats_get(cs.c_server, &ss);
    rep->bytes_down_received = ss.ss_bytes_received;
    rep->bytes_down_sent = ss.ss_bytes_sent;
done:
    /* its own part (all streams share one mapping) and the parts it served: resident pages */
    rep->memory.base_weights = sl_model_resident_bytes(&cs.c_model) +
                               sl_resident_bytes(cs.c_user_file.m_data, cs.c_user_file.m_bytes) +
                               sl_resident_bytes(cs.c_edge_file.m_data, cs.c_edge_file.m_bytes);
    cloud_free(&cs);
    rep->peak_rss_bytes = sl_peak_rss_bytes();
    rep->seconds = sl_now_s() - t0;
    return rc;
}
