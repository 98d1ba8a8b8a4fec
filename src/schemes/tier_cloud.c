/* tier_cloud.c: the cloud of the splitllm scheme (see run.h). It cuts the base model into
 * the three parts, serves the edge and user parts, runs blocks [c2,L) + head + loss for M
 * concurrent streams (one per edge, each with its own adapter copy and optimizer state),
 * and at the end of each round averages the user-side, edge-side and cloud-side adapters
 * of the round (FedAvg by samples) into the global adapter it sends down next round.
 *
 * Concurrency: the server runs M+1 workers. Round bookkeeping is under c_mu; a stream's
 * segment, adapter and buffers are touched only by requests of its own edge, which come one
 * at a time (an edge's link is synchronous), so the heavy work runs without the lock. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/part.h"
#include "model/segment.h"
#include "schemes/fedavg.h"
#include "schemes/run.h"
#include "schemes/tier_common.h"
#include "util/progress.h"

typedef struct {
    sl_lora lora;        /* blocks [c2,L): this round's copy of the cloud-side adapter */
    sl_adamw opt;
    sl_segment *seg;
    float *grad;         /* (B,T,C): gradient of the stream's input, the BACKWARD reply */
    float loss;          /* the last step's, for the reply */
    int32_t count;
    int task_round;      /* round whose task this stream's edge received */
    int reported_round;  /* round whose report arrived */
    float *edge_adapter; /* (n_edge) as the edge trained it this round */
    float *user_adapter; /* (n_user) */
    double samples;
    int user;
    double loss_sum;     /* this round's training loss over steps */
    int loss_steps;
} cloud_stream;

typedef struct {
    const sl_run_config *c_cfg;
    sl_model c_model;        /* the cloud part */
    sl_config c_mc;          /* the whole model's configuration */
    sl_tier_config c_tier;   /* what edges and users are told */
    char *c_json;
    char c_edge_path[1100], c_user_path[1100], c_cloud_path[1100];
    sl_mapped_file c_edge_file, c_user_file;
    sl_lora c_global;        /* blocks [0,L): the aggregated adapter */
    size_t c_n_user, c_n_edge, c_n_cloud; /* floats of each tier's slice */
    cloud_stream *c_streams; /* [M] */
    int *c_edge_of_user;     /* [N] */
    pthread_mutex_t c_mu;
    int c_round;             /* current round, 1..R; R+1 when training is over */
    int c_reports;           /* reports of the current round */
    double c_round_start_s;
    FILE *c_metrics;
    sl_server *c_server;
    sl_progress c_progress;  /* steps of all streams, under c_mu */
    long c_steps_done;
    double c_train_start_s;
} cloud_state;

/* The user that edge e trains with in round r. */
static int pick_user(const cloud_state *cs, int e, int r) {
    const sl_run_config *c = cs->c_cfg;
    int count = 0;
    for (int u = 0; u < c->users; u++) count += cs->c_edge_of_user[u] == e;
    if (count == 0) return -1;
    int k;
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

static int save_slice(const cloud_state *cs, const float *params, int begin, int end, const char *path) {
    sl_lora l;
    int rc = sl_lora_init(&l, &cs->c_mc, &cs->c_cfg->lora, begin, end);
    if (rc) return rc;
    memcpy(l.params, params, l.n_params * sizeof(float));
    rc = sl_lora_save(&l, path);
    sl_lora_free(&l);
    return rc;
}

/* FedAvg of the round's reports into the global adapter; writes the round's files. Called
 * with c_mu held, once all M streams reported. */
static int aggregate_round(cloud_state *cs) {
    const sl_run_config *c = cs->c_cfg;
    const int M = c->edges, r = cs->c_round;
    const float **in = calloc((size_t)M, sizeof(float *));
    double *w = calloc((size_t)M, sizeof(double));
    if (in == NULL || w == NULL) {
        free(in);
        free(w);
        return sl_fail(SL_ENOMEM, "cloud: out of memory aggregating round %d", r);
    }
    for (int e = 0; e < M; e++) w[e] = cs->c_streams[e].samples;
    int rc;
    for (int e = 0; e < M; e++) in[e] = cs->c_streams[e].user_adapter;
    rc = sl_fedavg(cs->c_global.params, in, w, M, cs->c_n_user);
    for (int e = 0; e < M; e++) in[e] = cs->c_streams[e].edge_adapter;
    if (rc == 0) rc = sl_fedavg(cs->c_global.params + cs->c_n_user, in, w, M, cs->c_n_edge);
    for (int e = 0; e < M; e++) in[e] = cs->c_streams[e].lora.params;
    if (rc == 0) rc = sl_fedavg(cs->c_global.params + cs->c_n_user + cs->c_n_edge, in, w, M, cs->c_n_cloud);
    free(in);
    free(w);
    if (rc) return rc;
    /* the round's adapters, so that the aggregation can be checked independently */
    char dir[1200], path[1300];
    snprintf(dir, sizeof(dir), "%s/rounds/r%03d", c->out_dir, r);
    if ((rc = sl_make_dirs(dir))) return rc;
    double loss_sum = 0.0, samples = 0.0;
    int loss_steps = 0;
    char users[512] = "";
    size_t used = 0;
    for (int e = 0; e < M && rc == 0; e++) {
        cloud_stream *st = &cs->c_streams[e];
        snprintf(path, sizeof(path), "%s/user_%03d.safetensors", dir, st->user);
        rc = save_slice(cs, st->user_adapter, 0, c->cut1, path);
        snprintf(path, sizeof(path), "%s/edge_%d.safetensors", dir, e);
        if (rc == 0) rc = save_slice(cs, st->edge_adapter, c->cut1, c->cut2, path);
        snprintf(path, sizeof(path), "%s/cloud_stream_%d.safetensors", dir, e);
        if (rc == 0) rc = sl_lora_save(&st->lora, path);
        loss_sum += st->loss_sum;
        loss_steps += st->loss_steps;
        samples += st->samples;
        int n = snprintf(users + used, sizeof(users) - used, "%s{\"edge\":%d,\"user\":%d,\"samples\":%.0f}",
                         e ? "," : "", e, st->user, st->samples);
        if (n > 0 && (size_t)n < sizeof(users) - used) used += (size_t)n;
    }
    snprintf(path, sizeof(path), "%s/global.safetensors", dir);
    if (rc == 0) rc = sl_lora_save(&cs->c_global, path);
    snprintf(path, sizeof(path), "%s/lora.safetensors", c->out_dir);
    if (rc == 0) rc = sl_lora_save(&cs->c_global, path);
    if (rc) return rc;
    double now = sl_now_s();
    fprintf(cs->c_metrics, "{\"tier\":\"cloud\",\"round\":%d,\"train_loss\":%.9g,\"samples\":%.0f,\"seconds\":%.4f,"
            "\"streams\":[%s]}\n", r, loss_steps ? loss_sum / loss_steps : NAN, samples, now - cs->c_round_start_s,
            users);
    fflush(cs->c_metrics);
    if (cs->c_progress.p_tty) fprintf(stderr, "\n");
    fprintf(stderr, "cloud: round %d/%d done: train loss %.4f over %d steps, %.1f s\n", r, c->rounds,
            loss_steps ? loss_sum / loss_steps : NAN, loss_steps, now - cs->c_round_start_s);
    cs->c_round_start_s = now;
    return SL_OK;
}

static int on_hello(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const uint32_t e = req->m_header.h_sender;
    if (req->m_header.h_sender_tier != SL_TIER_EDGE || e >= (uint32_t)cs->c_cfg->edges)
        return sl_fail(SL_EINVAL, "cloud: HELLO from %s %u: this deployment has edges 0..%d",
                       sl_tier_name(req->m_header.h_sender_tier), e, cs->c_cfg->edges - 1);
    sl_msg_init(reply, SL_MSG_HELLO_OK, 0, 0, e);
    uint32_t shape[1] = {(uint32_t)strlen(cs->c_json)};
    int rc = sl_msg_add(reply, "config", SL_DTYPE_U8, 1, shape, cs->c_json);
    /* the users attached to this edge, so it knows whom to tell that training is over */
    int32_t *users = sl_msg_alloc(reply, sizeof(int32_t) * (size_t)cs->c_cfg->users);
    if (users == NULL) return SL_ENOMEM;
    uint32_t n = 0;
    for (int u = 0; u < cs->c_cfg->users; u++)
        if (cs->c_edge_of_user[u] == (int)e) users[n++] = u;
    if (rc == 0) rc = sl_msg_add(reply, "users", SL_DTYPE_I32, 1, &n, users);
    return rc;
}

static int on_part_chunk(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const sl_tensor *name = sl_msg_find(req, "part");
    if (name != NULL && name->t_bytes == 4 && memcmp(name->t_data, "user", 4) == 0)
        return sl_serve_part_chunk(req, reply, "user", cs->c_user_file.m_data, cs->c_user_file.m_bytes);
    return sl_serve_part_chunk(req, reply, "edge", cs->c_edge_file.m_data, cs->c_edge_file.m_bytes);
}

static int on_round_poll(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const int e = (int)req->m_header.h_stream, r = (int)req->m_header.h_round;
    if (e < 0 || e >= cs->c_cfg->edges) return sl_fail(SL_EINVAL, "cloud: ROUND_POLL for stream %d", e);
    cloud_stream *st = &cs->c_streams[e];
    pthread_mutex_lock(&cs->c_mu);
    int current = cs->c_round;
    int give_task = current <= cs->c_cfg->rounds && r == current && st->reported_round < current;
    if (give_task && st->task_round != current) {
        /* this round's cloud-side copy starts from the global adapter */
        memcpy(st->lora.params, cs->c_global.params + cs->c_n_user + cs->c_n_edge, cs->c_n_cloud * sizeof(float));
        st->task_round = current;
        st->loss_sum = 0.0;
        st->loss_steps = 0;
        st->user = pick_user(cs, e, current);
    }
    pthread_mutex_unlock(&cs->c_mu);
    if (current > cs->c_cfg->rounds) {
        sl_msg_init(reply, SL_MSG_ROUND_DONE, (uint32_t)current, 0, (uint32_t)e);
        return SL_OK;
    }
    if (!give_task) {
        sl_msg_init(reply, SL_MSG_ROUND_WAIT, (uint32_t)current, 0, (uint32_t)e);
        return SL_OK;
    }
    sl_msg_init(reply, SL_MSG_ROUND_TASK, (uint32_t)current, 0, (uint32_t)e);
    int32_t *ints = sl_msg_alloc(reply, 2 * sizeof(int32_t));
    if (ints == NULL) return SL_ENOMEM;
    ints[0] = st->user;
    ints[1] = cs->c_cfg->local_steps;
    uint32_t nu[1] = {(uint32_t)cs->c_n_user}, ne[1] = {(uint32_t)cs->c_n_edge};
    int rc = sl_msg_add(reply, "user", SL_DTYPE_I32, 0, NULL, &ints[0]);
    if (rc == 0) rc = sl_msg_add(reply, "steps", SL_DTYPE_I32, 0, NULL, &ints[1]);
    /* the global adapter only changes between rounds, under c_mu, after every stream has
     * reported: it is stable while this reply is encoded */
    if (rc == 0) rc = sl_msg_add(reply, "user_adapter", SL_DTYPE_F32, 1, nu, cs->c_global.params);
    if (rc == 0) rc = sl_msg_add(reply, "edge_adapter", SL_DTYPE_F32, 1, ne, cs->c_global.params + cs->c_n_user);
    return rc;
}

static int on_forward(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const sl_run_config *c = cs->c_cfg;
    const int e = (int)req->m_header.h_stream, r = (int)req->m_header.h_round, step = (int)req->m_header.h_step;
    if (e < 0 || e >= c->edges) return sl_fail(SL_EINVAL, "cloud: FORWARD for stream %d", e);
    cloud_stream *st = &cs->c_streams[e];
    if (r != st->task_round || r != cs->c_round || step >= c->local_steps)
        return sl_fail(SL_ESTATE, "cloud: FORWARD for round %d step %d on stream %d, which is at round %d (%d steps)",
                       r, step, e, st->task_round, c->local_steps);
    const int B = c->batch, T = c->seq, C = cs->c_mc.dim;
    const int64_t act_shape[3] = {B, T, C}, tok_shape[2] = {B, T};
    const sl_tensor *act, *targets, *mask;
    int rc = sl_msg_get(req, "act", SL_DTYPE_F32, 3, act_shape, &act);
    if (rc == 0) rc = sl_msg_get(req, "targets", SL_DTYPE_I32, 2, tok_shape, &targets);
    if (rc == 0) rc = sl_msg_get(req, "mask", SL_DTYPE_U8, 2, tok_shape, &mask);
    if (rc) return rc;
    sl_segment_input in = {.B = B, .T = T, .input = act->t_data, .targets = targets->t_data, .mask = mask->t_data,
                           .want_grad = 1, .dropout_seed = sl_step_seed(c->seed, r, c->local_steps, step)};
    sl_lora_zero_grad(&st->lora);
    if ((rc = sl_segment_forward(st->seg, &in))) return rc;
    if ((rc = sl_segment_backward(st->seg, NULL, st->grad))) return rc;
    const size_t ends[1] = {st->lora.n_params};
    sl_adamw_update_groups(&st->opt, st->lora.params, st->lora.grads, 1, ends);
    st->loss = sl_segment_loss(st->seg);
    st->count = sl_segment_loss_count(st->seg);
    st->loss_sum += st->loss;
    st->loss_steps++;
    pthread_mutex_lock(&cs->c_mu);
    fprintf(cs->c_metrics, "{\"tier\":\"cloud\",\"round\":%d,\"step\":%d,\"stream\":%d,\"loss\":%.9g,\"count\":%d}\n", r,
            step, e, st->loss, st->count);
    cs->c_steps_done++;
    char extra[96];
    snprintf(extra, sizeof(extra), "round %d/%d  loss %.4f", r, c->rounds, st->loss);
    double elapsed = sl_now_s() - cs->c_train_start_s;
    sl_progress_update(&cs->c_progress, cs->c_steps_done,
                       elapsed > 0 ? (double)cs->c_steps_done * B * T / elapsed : 0.0, "tok/s", extra);
    pthread_mutex_unlock(&cs->c_mu);
    sl_msg_init(reply, SL_MSG_BACKWARD, (uint32_t)r, (uint32_t)step, (uint32_t)e);
    uint32_t gshape[3] = {(uint32_t)B, (uint32_t)T, (uint32_t)C};
    rc = sl_msg_add(reply, "grad", SL_DTYPE_F32, 3, gshape, st->grad);
    if (rc == 0) rc = sl_msg_add(reply, "loss", SL_DTYPE_F32, 0, NULL, &st->loss);
    if (rc == 0) rc = sl_msg_add(reply, "count", SL_DTYPE_I32, 0, NULL, &st->count);
    return rc;
}

static int on_report(cloud_state *cs, const sl_msg *req, sl_msg *reply) {
    const int e = (int)req->m_header.h_stream, r = (int)req->m_header.h_round;
    if (e < 0 || e >= cs->c_cfg->edges) return sl_fail(SL_EINVAL, "cloud: ROUND_REPORT for stream %d", e);
    cloud_stream *st = &cs->c_streams[e];
    const int64_t su[1] = {(int64_t)cs->c_n_user}, se[1] = {(int64_t)cs->c_n_edge};
    const sl_tensor *ua, *ea, *samples, *user;
    int rc = sl_msg_get(req, "user_adapter", SL_DTYPE_F32, 1, su, &ua);
    if (rc == 0) rc = sl_msg_get(req, "edge_adapter", SL_DTYPE_F32, 1, se, &ea);
    if (rc == 0) rc = sl_msg_get(req, "samples", SL_DTYPE_U64, 0, NULL, &samples);
    if (rc == 0) rc = sl_msg_get(req, "user", SL_DTYPE_I32, 0, NULL, &user);
    if (rc) return rc;
    pthread_mutex_lock(&cs->c_mu);
    if (r != cs->c_round || st->task_round != r || st->reported_round >= r) {
        int cur = cs->c_round;
        pthread_mutex_unlock(&cs->c_mu);
        return sl_fail(SL_ESTATE, "cloud: ROUND_REPORT of round %d from edge %d, the cloud is at round %d", r, e, cur);
    }
    memcpy(st->user_adapter, ua->t_data, ua->t_bytes);
    memcpy(st->edge_adapter, ea->t_data, ea->t_bytes);
    uint64_t n;
    memcpy(&n, samples->t_data, sizeof(n));
    st->samples = (double)n;
    st->reported_round = r;
    cs->c_reports++;
    if (cs->c_reports == cs->c_cfg->edges) {
        rc = aggregate_round(cs);
        cs->c_reports = 0;
        cs->c_round++;
    }
    pthread_mutex_unlock(&cs->c_mu);
    if (rc) return rc;
    sl_msg_init(reply, SL_MSG_ACK, (uint32_t)r, 0, (uint32_t)e);
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

/* Cuts the model into parts under out_dir/parts and maps the cloud's own. */
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
    if ((rc = sl_model_write_part(&full, 0, c->cut1, 1, 0, cs->c_user_path))) goto out;
    if ((rc = sl_model_write_part(&full, c->cut1, c->cut2, 0, 0, cs->c_edge_path))) goto out;
    if ((rc = sl_model_write_part(&full, c->cut2, L, 0, 1, cs->c_cloud_path))) goto out;
out:
    sl_model_free(&full);
    if (rc) return rc;
    if ((rc = sl_model_load(&cs->c_model, cs->c_cloud_path))) return rc;
    if ((rc = sl_map_file(&cs->c_user_file, cs->c_user_path))) return rc;
    if ((rc = sl_map_file(&cs->c_edge_file, cs->c_edge_path))) return rc;
    sl_sha256(cs->c_user_file.m_data, cs->c_user_file.m_bytes, cs->c_tier.user_part_sha256);
    sl_sha256(cs->c_edge_file.m_data, cs->c_edge_file.m_bytes, cs->c_tier.edge_part_sha256);
    cs->c_tier.user_part_bytes = cs->c_user_file.m_bytes;
    cs->c_tier.edge_part_bytes = cs->c_edge_file.m_bytes;
    return SL_OK;
}

static void cloud_free(cloud_state *cs) {
    sl_server_close(cs->c_server);
    if (cs->c_streams != NULL) {
        for (int e = 0; e < cs->c_cfg->edges; e++) {
            cloud_stream *st = &cs->c_streams[e];
            sl_segment_free(st->seg);
            sl_adamw_free(&st->opt);
            sl_lora_free(&st->lora);
            sl_free(st->grad);
            sl_free(st->edge_adapter);
            sl_free(st->user_adapter);
        }
        sl_free(cs->c_streams);
    }
    if (cs->c_metrics) fclose(cs->c_metrics);
    sl_free(cs->c_edge_of_user);
    sl_lora_free(&cs->c_global);
    sl_unmap_file(&cs->c_user_file);
    sl_unmap_file(&cs->c_edge_file);
    sl_model_free(&cs->c_model);
    sl_free(cs->c_json);
    pthread_mutex_destroy(&cs->c_mu);
}

int sl_cloud_run(const sl_run_config *c, const char *url, sl_tier_report *rep) {
    memset(rep, 0, sizeof(*rep));
    double t0 = sl_now_s();
    int rc = sl_run_config_validate(c);
    if (rc) return rc;
    if ((rc = sl_make_dirs(c->out_dir))) return rc;
    cloud_state cs;
    memset(&cs, 0, sizeof(cs));
    cs.c_cfg = c;
    pthread_mutex_init(&cs.c_mu, NULL);
    cs.c_round = 1;
    if ((rc = make_parts(&cs))) goto done;
    const int M = c->edges, L = cs.c_mc.n_layers;
    cs.c_edge_of_user = sl_alloc(sizeof(int) * (size_t)c->users);
    if (cs.c_edge_of_user == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    for (int u = 0; u < c->users; u++) {
        cs.c_edge_of_user[u] = sl_run_edge_of_user(c, u);
        if (cs.c_edge_of_user[u] < 0) {
            rc = sl_fail(SL_EINVAL, "--assign '%s': no valid edge for user %d", c->assign ? c->assign : "", u);
            goto done;
        }
    }
    for (int e = 0; e < M; e++)
        if (pick_user(&cs, e, 1) < 0) {
            rc = sl_fail(SL_EINVAL, "edge %d has no users: every edge needs at least one (N=%d, M=%d)", e, c->users, M);
            goto done;
        }
    /* the global adapter starts exactly as central's */
    if ((rc = sl_lora_init(&cs.c_global, &cs.c_mc, &c->lora, 0, L))) goto done;
    cs.c_n_user = cs.c_global.layer_params * (size_t)c->cut1;
    cs.c_n_edge = cs.c_global.layer_params * (size_t)(c->cut2 - c->cut1);
    cs.c_n_cloud = cs.c_global.layer_params * (size_t)(L - c->cut2);
    sl_adamw_config oc = c->optim;
    if (oc.total_steps == 0) oc.total_steps = c->rounds * c->local_steps;
    cs.c_streams = sl_alloc(sizeof(cloud_stream) * (size_t)M);
    if (cs.c_streams == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    const size_t act_floats = (size_t)c->batch * c->seq * cs.c_mc.dim;
    for (int e = 0; e < M && rc == 0; e++) {
        cloud_stream *st = &cs.c_streams[e];
        sl_segment_config sc = {c->cut2, L, 0, 1, c->batch, c->seq};
        if ((rc = sl_lora_init(&st->lora, &cs.c_mc, &c->lora, c->cut2, L))) break;
        if ((rc = sl_adamw_init(&st->opt, &oc, st->lora.n_params))) break;
        if ((rc = sl_segment_create(&st->seg, &cs.c_model, &st->lora, &sc))) break;
        st->grad = sl_alloc(act_floats * sizeof(float));
        st->edge_adapter = sl_alloc((cs.c_n_edge + 1) * sizeof(float));
        st->user_adapter = sl_alloc((cs.c_n_user + 1) * sizeof(float));
        if (!st->grad || !st->edge_adapter || !st->user_adapter) rc = SL_ENOMEM;
    }
    if (rc) goto done;
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
    if ((rc = sl_tier_config_to_json(&cs.c_tier, &cs.c_json))) goto done;
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
    sc.sc_workers = M + 1;
    sc.sc_busy_wait_ms = c->timeout_ms;
    sc.sc_handler = cloud_handler;
    sc.sc_handler_arg = &cs;
    if ((rc = sl_server_open(&cs.c_server, &sc))) goto done;
    fprintf(stderr, "cloud: listening on %s; %d edges, %d users, blocks [%d,%d) user, [%d,%d) edge, [%d,%d) cloud\n",
            sl_server_url(cs.c_server), M, c->users, 0, c->cut1, c->cut1, c->cut2, c->cut2, L);
    cs.c_round_start_s = sl_now_s();
    cs.c_train_start_s = cs.c_round_start_s;
    sl_progress_start(&cs.c_progress, stderr, "step", (long)c->rounds * c->local_steps * M);
    /* Wait for the last round to be aggregated, then give the edges time to hear DONE. */
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
            rc = sl_fail(SL_ETIMEDOUT, "cloud: round %d made no progress for %.0f s: an edge or user stopped answering",
                         r, sl_now_s() - last_progress);
            goto done;
        }
        sl_sleep_ms(SL_POLL_MAX_MS);
    }
    /* edges poll once more and hear DONE; wait until they have (or a few poll periods) */
    sl_sleep_ms(4 * SL_POLL_MAX_MS);
    sl_server_stats ss;
    sl_server_stats_get(cs.c_server, &ss);
    rep->bytes_down_received = ss.ss_bytes_received;
    rep->bytes_down_sent = ss.ss_bytes_sent;
done:
    cloud_free(&cs);
    rep->peak_rss_bytes = sl_peak_rss_bytes();
    rep->seconds = sl_now_s() - t0;
    return rc;
}
