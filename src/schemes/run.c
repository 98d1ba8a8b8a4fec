/* run.c: see run.h — the configuration and the whole deployment on one machine. */
#include "schemes/run.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "data/shard.h"
#include "schemes/central.h"
#include "schemes/evaluate.h"
#include "schemes/latency.h"
#include "schemes/tier_common.h"

void sl_run_config_defaults(sl_run_config *c) {
    memset(c, 0, sizeof(*c));
    c->scheme = "splitllm";
    c->out_dir = "out/run";
    c->users = 8;
    c->edges = 2;
    c->cut1 = 1;
    c->cut2 = 3;
    c->rounds = 4;
    c->local_steps = 5;
    c->batch = 8;
    c->seq = 128;
    c->lora = (sl_lora_config){.rank = 8, .alpha = 16.0f, .dropout = 0.0f, .seed = 1337};
    c->optim = sl_adamw_defaults();
    c->optim.grad_clip = 1.0f;
    c->seed = 1337;
    c->eval_batches = 0;
    c->select = "round-robin";
    c->timeout_ms = 60000;
    c->transport = "inproc";
    c->base_port = 0;
}

int sl_run_config_validate(const sl_run_config *c) {
    if (c->users < 1 || c->edges < 1 || c->users < c->edges)
        return sl_fail(SL_EINVAL, "--users %d --edges %d: expected 1 <= edges <= users", c->users, c->edges);
    if (c->rounds < 1 || c->local_steps < 1)
        return sl_fail(SL_EINVAL, "--rounds %d --local-steps %d: expected both >= 1", c->rounds, c->local_steps);
    if (c->batch < 1 || c->seq < 1)
        return sl_fail(SL_EINVAL, "--batch %d --seq %d: expected both >= 1", c->batch, c->seq);
    if (c->cut1 < 0 || c->cut1 > c->cut2)
        return sl_fail(SL_EINVAL, "--cuts %d,%d: expected 0 <= c1 <= c2", c->cut1, c->cut2);
    if (c->select && strcmp(c->select, "round-robin") != 0 && strcmp(c->select, "random") != 0)
        return sl_fail(SL_EINVAL, "--select '%s': expected round-robin or random", c->select);
    if (c->transport && strcmp(c->transport, "inproc") != 0 && strcmp(c->transport, "ipc") != 0 &&
        strcmp(c->transport, "tcp") != 0)
        return sl_fail(SL_EINVAL, "--transport '%s': expected inproc, ipc or tcp", c->transport);
    if (c->processes && c->transport && strcmp(c->transport, "inproc") == 0)
        return sl_fail(SL_EINVAL, "--processes needs --transport ipc or tcp (inproc links threads of one process)");
    for (int u = 0; u < c->users; u++)
        if (sl_run_edge_of_user(c, u) < 0)
            return sl_fail(SL_EINVAL, "--assign '%s': expected %d edge numbers in [0,%d), comma-separated",
                           c->assign ? c->assign : "", c->users, c->edges);
    return SL_OK;
}

int sl_run_edge_of_user(const sl_run_config *c, int user) {
    if (user < 0 || user >= c->users) return -1;
    if (c->assign == NULL || c->assign[0] == '\0') return user % c->edges;
    const char *p = c->assign;
    for (int i = 0; *p; i++) {
        char *end;
        long e = strtol(p, &end, 10);
        if (end == p) return -1;
        if (i == user) return (e >= 0 && e < c->edges) ? (int)e : -1;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return -1;
}

/* ---------------------------------------------------------------- deployment */

typedef struct {
    const sl_run_config *cfg;
    int tier; /* SL_TIER_* */
    int id;
    char url[SL_URL_MAX], up_url[SL_URL_MAX], shard[1100], cache[1100];
    sl_tier_report rep;
    int rc;
    char error[1024];
} tier_job;

static void *tier_thread(void *arg) {
    tier_job *j = arg;
    if (j->tier == SL_TIER_CLOUD) j->rc = sl_cloud_run(j->cfg, j->url, &j->rep);
    else if (j->tier == SL_TIER_EDGE) j->rc = sl_edge_run(j->id, j->up_url, j->url, j->cache, j->cfg->timeout_ms, &j->rep);
    else j->rc = sl_user_run(j->id, j->up_url, j->shard, j->cache, j->cfg->timeout_ms, &j->rep);
    if (j->rc) snprintf(j->error, sizeof(j->error), "%s", sl_last_error());
    return NULL;
}

static void make_url(const sl_run_config *c, char *out, const char *what, int index) {
    const char *t = c->transport ? c->transport : "inproc";
    if (strcmp(t, "tcp") == 0) {
        int base = c->base_port > 0 ? c->base_port : 20000 + (int)(getpid() % 20000);
        snprintf(out, SL_URL_MAX, "tcp://127.0.0.1:%d", base + (strcmp(what, "cloud") == 0 ? 0 : 1 + index));
    } else if (strcmp(t, "ipc") == 0) {
        snprintf(out, SL_URL_MAX, "ipc:///tmp/splitllm-%d-%s-%d.ipc", (int)getpid(), what, index);
    } else {
        snprintf(out, SL_URL_MAX, "inproc://splitllm-%d-%s-%d", (int)getpid(), what, index);
    }
}

/* Reads out/<tier>-<id>/report.json written by a tier process. */
static int read_report(const char *path, sl_tier_report *rep) {
    char *text;
    size_t n;
    int rc = sl_read_file(path, &text, &n);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    sl_free(text);
    if (j == NULL) return sl_fail(SL_EFORMAT, "%s: not JSON", path);
    const char *keys[] = {"peak_rss_bytes", "bytes_up_sent", "bytes_up_received", "bytes_down_sent",
                          "bytes_down_received", "seconds", "setup_peak_rss_bytes"};
    double v[7] = {0};
    for (int i = 0; i < 7; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        if (cJSON_IsNumber(x)) v[i] = x->valuedouble;
    }
    rep->peak_rss_bytes = (size_t)v[0];
    rep->bytes_up_sent = (uint64_t)v[1];
    rep->bytes_up_received = (uint64_t)v[2];
    rep->bytes_down_sent = (uint64_t)v[3];
    rep->bytes_down_received = (uint64_t)v[4];
    rep->seconds = v[5];
    rep->setup_peak_rss_bytes = (size_t)v[6];
    const cJSON *mem = cJSON_GetObjectItemCaseSensitive(j, "memory");
    const char *mkeys[] = {"base_weights", "adapters", "optimizer", "activations", "messages", "data", "start_rss"};
    size_t *mdst[] = {&rep->memory.base_weights, &rep->memory.adapters, &rep->memory.optimizer,
                      &rep->memory.activations, &rep->memory.messages, &rep->memory.data, &rep->memory.start_rss};
    for (int i = 0; i < 7; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(mem, mkeys[i]);
        if (cJSON_IsNumber(x)) *mdst[i] = (size_t)x->valuedouble;
    }
    cJSON_Delete(j);
    return SL_OK;
}

int sl_tier_report_write(const sl_tier_report *rep, const char *tier, int id, const char *path) {
    char text[2048];
    const sl_memory_breakdown *m = &rep->memory;
    int n = snprintf(text, sizeof(text),
                     "{\"tier\":\"%s\",\"id\":%d,\"peak_rss_bytes\":%zu,\"setup_peak_rss_bytes\":%zu,\"bytes_up_sent\":%llu,"
                     "\"bytes_up_received\":%llu,\"bytes_down_sent\":%llu,\"bytes_down_received\":%llu,"
                     "\"seconds\":%.3f,\"memory\":{\"base_weights\":%zu,\"adapters\":%zu,\"optimizer\":%zu,"
                     "\"activations\":%zu,\"messages\":%zu,\"data\":%zu,\"start_rss\":%zu}}\n",
                     tier, id, rep->peak_rss_bytes, rep->setup_peak_rss_bytes, (unsigned long long)rep->bytes_up_sent,
                     (unsigned long long)rep->bytes_up_received, (unsigned long long)rep->bytes_down_sent,
                     (unsigned long long)rep->bytes_down_received, rep->seconds, m->base_weights, m->adapters,
                     m->optimizer, m->activations, m->messages, m->data, m->start_rss);
    return sl_write_file_atomic(path, text, (size_t)n);
}

/* argv for a tier process: splitllm cloud|edge|user ... */
static pid_t spawn(const char *argv0, char *const *args) {
    pid_t pid = fork();
    if (pid == 0) {
        /* N+M+1 tier processes share this machine's cores: OpenMP threads that spin while
         * they wait for work (libgomp's default) take the cores from the processes that have
         * work; on 2 cores the N=4, M=2 test run took 5-10x longer. Unless the user chose. */
        setenv("OMP_WAIT_POLICY", "passive", 0);
        execv(argv0, args);
        fprintf(stderr, "splitllm run: cannot start %s: %s\n", argv0, strerror(errno));
        _exit(127);
    }
    return pid;
}

static int run_processes(const sl_run_config *c, const char *argv0, tier_job *jobs, int n_jobs) {
    pid_t *pids = calloc((size_t)n_jobs, sizeof(pid_t));
    if (pids == NULL) return sl_fail(SL_ENOMEM, "run: out of memory");
    char num[16][32];
    int rc = SL_OK;
    for (int k = 0; k < n_jobs; k++) {
        tier_job *j = &jobs[k];
        char report[1200];
        snprintf(report, sizeof(report), "%s/report.json", j->cache);
        char *args[64];
        int a = 0;
        args[a++] = (char *)argv0;
        if (j->tier == SL_TIER_CLOUD) {
            /* the cloud gets the whole configuration */
            snprintf(num[0], 32, "%d", c->users);
            snprintf(num[1], 32, "%d", c->edges);
            snprintf(num[2], 32, "%d,%d", c->cut1, c->cut2);
            snprintf(num[3], 32, "%d", c->rounds);
            snprintf(num[4], 32, "%d", c->local_steps);
            snprintf(num[5], 32, "%d", c->batch);
            snprintf(num[6], 32, "%d", c->seq);
            snprintf(num[7], 32, "%d", c->lora.rank);
            snprintf(num[8], 32, "%.9g", c->lora.alpha);
            snprintf(num[9], 32, "%.9g", c->optim.lr);
            snprintf(num[10], 32, "%llu", (unsigned long long)c->seed);
            snprintf(num[11], 32, "%d", c->timeout_ms);
            snprintf(num[12], 32, "%.9g", c->optim.grad_clip);
            snprintf(num[13], 32, "%d", c->optim.warmup_steps);
            snprintf(num[14], 32, "%.9g", c->optim.weight_decay);
            snprintf(num[15], 32, "%.9g", c->lora.dropout);
            char targets[128];
            static char targets_arg[128];
            sl_lora_format_targets(c->lora.targets, targets, sizeof(targets));
            snprintf(targets_arg, sizeof(targets_arg), "%s", targets);
            const char *fixed[] = {"cloud", "--listen", j->url, "--model", c->model_path, "--out", c->out_dir,
                                   "--users", num[0], "--edges", num[1], "--cuts", num[2], "--rounds", num[3],
                                   "--local-steps", num[4], "--batch", num[5], "--seq", num[6], "--lora-rank",
                                   num[7], "--lora-alpha", num[8], "--lr", num[9], "--seed", num[10],
                                   "--timeout-ms", num[11], "--grad-clip", num[12], "--warmup", num[13],
                                   "--weight-decay", num[14], "--lora-dropout", num[15], "--lora-targets",
                                   targets_arg, "--report", report};
            for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) args[a++] = (char *)fixed[i];
            static char codec_arg[64];
            sl_codec_format(&c->compress, codec_arg, sizeof(codec_arg));
            args[a++] = "--compress";
            args[a++] = codec_arg;
            if (c->shape_links) args[a++] = "--shape-links";
            args[a++] = "--scheme";
            args[a++] = (char *)(c->scheme ? c->scheme : "splitllm");
            if (c->assign) {
                args[a++] = "--assign";
                args[a++] = (char *)c->assign;
            }
            if (c->select) {
                args[a++] = "--select";
                args[a++] = (char *)c->select;
            }
            if (c->packing) args[a++] = "--packing";
        } else {
            static char ids[4096][16];
            static char timeouts[4096][16];
            snprintf(ids[k % 4096], 16, "%d", j->id);
            snprintf(timeouts[k % 4096], 16, "%d", c->timeout_ms);
            if (j->tier == SL_TIER_EDGE) {
                const char *fixed[] = {"edge", "--id", ids[k % 4096], "--cloud", j->up_url, "--listen", j->url,
                                       "--cache", j->cache, "--timeout-ms", timeouts[k % 4096], "--report", report};
                for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) args[a++] = (char *)fixed[i];
            } else {
                const char *fixed[] = {"user", "--id", ids[k % 4096], "--edge", j->up_url, "--data", j->shard,
                                       "--cache", j->cache, "--timeout-ms", timeouts[k % 4096], "--report", report};
                for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) args[a++] = (char *)fixed[i];
            }
        }
        args[a] = NULL;
        if ((rc = sl_make_dirs(j->cache))) break;
        pids[k] = spawn(argv0, args);
        if (pids[k] < 0) {
            rc = sl_fail(SL_EIO, "run: fork failed: %s", strerror(errno));
            break;
        }
    }
    int failed = -1;
    for (int k = 0; k < n_jobs; k++) {
        if (pids[k] <= 0) continue;
        int status = 0;
        waitpid(pids[k], &status, 0);
        jobs[k].rc = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : SL_ESTATE;
        if (jobs[k].rc != 0 && failed < 0) failed = k;
        if (jobs[k].rc != 0)
            for (int k2 = 0; k2 < n_jobs; k2++) /* one tier failed: the others would only time out */
                if (k2 != k && pids[k2] > 0) kill(pids[k2], SIGTERM);
        char report[1200];
        snprintf(report, sizeof(report), "%s/report.json", jobs[k].cache);
        if (jobs[k].rc == 0) read_report(report, &jobs[k].rep);
    }
    free(pids);
    if (rc == 0 && failed >= 0) {
        const tier_job *j = &jobs[failed];
        rc = sl_fail(SL_ESTATE, "run: the %s %d process failed (its error is above)",
                     j->tier == SL_TIER_CLOUD ? "cloud" : j->tier == SL_TIER_EDGE ? "edge" : "user", j->id);
    }
    return rc;
}

static int run_threads(tier_job *jobs, int n_jobs) {
    pthread_t *th = calloc((size_t)n_jobs, sizeof(pthread_t));
    if (th == NULL) return sl_fail(SL_ENOMEM, "run: out of memory");
    for (int k = 0; k < n_jobs; k++) {
        pthread_create(&th[k], NULL, tier_thread, &jobs[k]);
        if (k == 0) sl_sleep_ms(20); /* the cloud listens before the edges dial (they would retry anyway) */
    }
    for (int k = 0; k < n_jobs; k++) pthread_join(th[k], NULL);
    free(th);
    for (int k = 0; k < n_jobs; k++)
        if (jobs[k].rc)
            return sl_fail(jobs[k].rc, "%s %d: %s",
                           jobs[k].tier == SL_TIER_CLOUD ? "cloud" : jobs[k].tier == SL_TIER_EDGE ? "edge" : "user",
                           jobs[k].id, jobs[k].error);
    return SL_OK;
}

/* Per round, from the cloud's metrics.jsonl and the round adapters: measured seconds, the
 * users that trained, the modeled latency and the eval loss of the round's global adapter. */
typedef struct {
    int n;
    double *measured_s, *modeled_s;
    float *eval_loss;
} round_series;

static void round_series_free(round_series *rs) {
    free(rs->measured_s);
    free(rs->modeled_s);
    free(rs->eval_loss);
    memset(rs, 0, sizeof(*rs));
}

/* What run evaluates with: the whole base model and the validation shard, loaded once. */
typedef struct {
    sl_model ev_model;
    sl_shard ev_val;
} evaluator;

static int evaluator_open(evaluator *ev, const sl_run_config *c) {
    memset(ev, 0, sizeof(*ev));
    int rc = sl_model_load(&ev->ev_model, c->model_path);
    if (rc) return rc;
    char path[1200];
    snprintf(path, sizeof(path), "%s/val.shard", c->data_dir);
    if ((rc = sl_shard_read(&ev->ev_val, path))) sl_model_free(&ev->ev_model);
    return rc;
}

static void evaluator_close(evaluator *ev) {
    sl_shard_free(&ev->ev_val);
    sl_model_free(&ev->ev_model);
}

/* Eval loss of the base model + an adapter file (NULL: a fresh adapter, i.e. the base). */
static int evaluate_adapter(evaluator *ev, const sl_run_config *c, const char *adapter_path, float *out) {
    sl_lora l;
    memset(&l, 0, sizeof(l));
    int rc = adapter_path ? sl_lora_open(&l, &ev->ev_model.config, adapter_path) : SL_OK;
    if (rc == 0)
        rc = sl_evaluate(&ev->ev_model, adapter_path ? &l : NULL, &ev->ev_val, c->batch, c->seq, c->eval_batches, out);
    sl_lora_free(&l);
    return rc;
}

static int collect_rounds(const sl_run_config *c, evaluator *ev, round_series *rs) {
    memset(rs, 0, sizeof(*rs));
    rs->n = c->rounds;
    rs->measured_s = calloc((size_t)c->rounds, sizeof(double));
    rs->modeled_s = calloc((size_t)c->rounds, sizeof(double));
    rs->eval_loss = calloc((size_t)c->rounds, sizeof(float));
    int *active = calloc((size_t)c->users, sizeof(int));
    double *dist = calloc((size_t)c->users, sizeof(double));
    if (!rs->measured_s || !rs->modeled_s || !rs->eval_loss || !active || !dist) {
        free(active);
        free(dist);
        return sl_fail(SL_ENOMEM, "run: out of memory");
    }
    sl_wireless_config wc;
    sl_wireless_defaults(&wc);
    int rc = sl_wireless_place_users(&wc, c->users, c->seed, dist);
    char path[1200];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", c->out_dir);
    FILE *fp = rc == 0 ? fopen(path, "r") : NULL;
    if (rc == 0 && fp == NULL) rc = sl_fail(SL_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    while (rc == 0 && getline(&line, &cap, fp) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *round = cJSON_GetObjectItemCaseSensitive(j, "round");
        const cJSON *secs = cJSON_GetObjectItemCaseSensitive(j, "seconds");
        const cJSON *streams = cJSON_GetObjectItemCaseSensitive(j, "streams");
        if (cJSON_IsNumber(round) && cJSON_IsNumber(secs) && cJSON_IsArray(streams)) {
            int r = (int)round->valuedouble, n = 0;
            const cJSON *s;
            cJSON_ArrayForEach(s, streams) {
                const cJSON *u = cJSON_GetObjectItemCaseSensitive(s, "user");
                if (cJSON_IsNumber(u) && n < c->users) active[n++] = (int)u->valuedouble;
            }
            if (r >= 1 && r <= c->rounds) {
                rs->measured_s[r - 1] = secs->valuedouble;
                rc = sl_modeled_round_latency(c, &ev->ev_model.config, &wc, dist, r, active, n,
                                              &rs->modeled_s[r - 1]);
            }
        }
        cJSON_Delete(j);
    }
    free(line);
    if (fp) fclose(fp);
    free(active);
    free(dist);
    /* the eval loss after each round (the last round's global adapter is lora.safetensors) */
    for (int r = 1; rc == 0 && r <= c->rounds; r++) {
        snprintf(path, sizeof(path), "%s/rounds/r%03d/global.safetensors", c->out_dir, r);
        rc = evaluate_adapter(ev, c, path, &rs->eval_loss[r - 1]);
    }
    return rc;
}

static int write_run_summary(const sl_run_config *c, const tier_job *jobs, int n_jobs, float eval0, float eval1,
                             double wall_s, const round_series *rs) {
    size_t rss[4] = {0};
    uint64_t user_edge = 0, edge_cloud = 0;
    for (int k = 0; k < n_jobs; k++) {
        const tier_job *j = &jobs[k];
        if (j->rep.peak_rss_bytes > rss[j->tier]) rss[j->tier] = j->rep.peak_rss_bytes;
        if (j->tier == SL_TIER_USER) user_edge += j->rep.bytes_up_sent + j->rep.bytes_up_received;
        if (j->tier == SL_TIER_EDGE) edge_cloud += j->rep.bytes_up_sent + j->rep.bytes_up_received;
    }
    const char *scheme = c->scheme ? c->scheme : "splitllm";
    const int three_tier = strcmp(scheme, "splitllm") == 0;
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "scheme", scheme);
    cJSON_AddStringToObject(s, "mode", c->processes ? "processes" : "threads");
    cJSON_AddStringToObject(s, "transport", c->transport ? c->transport : "inproc");
    cJSON_AddNumberToObject(s, "users", c->users);
    cJSON_AddNumberToObject(s, "edges", three_tier ? c->edges : 0);
    cJSON_AddNumberToObject(s, "rounds", c->rounds);
    cJSON_AddNumberToObject(s, "local_steps", c->local_steps);
    cJSON *cuts = cJSON_AddArrayToObject(s, "cuts");
    cJSON_AddItemToArray(cuts, cJSON_CreateNumber(c->cut1));
    cJSON_AddItemToArray(cuts, cJSON_CreateNumber(c->cut2));
    cJSON_AddNumberToObject(s, "eval_loss_initial", eval0);
    cJSON_AddNumberToObject(s, "eval_loss_final", eval1);
    cJSON_AddNumberToObject(s, "eval_perplexity_initial", exp(eval0));
    cJSON_AddNumberToObject(s, "eval_perplexity_final", exp(eval1));
    cJSON *r = cJSON_AddObjectToObject(s, "peak_rss_bytes");
    if (c->processes) {
        cJSON_AddNumberToObject(r, "user", (double)rss[SL_TIER_USER]);
        if (three_tier) cJSON_AddNumberToObject(r, "edge", (double)rss[SL_TIER_EDGE]);
        cJSON_AddNumberToObject(r, "cloud", (double)rss[SL_TIER_CLOUD]);
    } else {
        /* threads share one process: only the whole is meaningful */
        cJSON_AddNumberToObject(r, "process", (double)sl_peak_rss_bytes());
    }
    if (c->processes) {
        /* the breakdown of the process with the largest peak in each tier */
        cJSON *mb = cJSON_AddObjectToObject(s, "memory_breakdown");
        const char *names[4] = {NULL, "user", "edge", "cloud"};
        for (int t = SL_TIER_USER; t <= SL_TIER_CLOUD; t++) {
            const tier_job *best = NULL;
            for (int k = 0; k < n_jobs; k++)
                if (jobs[k].tier == t && (best == NULL || jobs[k].rep.peak_rss_bytes > best->rep.peak_rss_bytes))
                    best = &jobs[k];
            if (best == NULL) continue;
            const sl_memory_breakdown *m = &best->rep.memory;
            cJSON *o = cJSON_AddObjectToObject(mb, names[t]);
            cJSON_AddNumberToObject(o, "peak_rss", (double)best->rep.peak_rss_bytes);
            cJSON_AddNumberToObject(o, "setup_peak_rss", (double)best->rep.setup_peak_rss_bytes);
            cJSON_AddNumberToObject(o, "start_rss", (double)m->start_rss);
            cJSON_AddNumberToObject(o, "base_weights", (double)m->base_weights);
            cJSON_AddNumberToObject(o, "adapters", (double)m->adapters);
            cJSON_AddNumberToObject(o, "optimizer", (double)m->optimizer);
            cJSON_AddNumberToObject(o, "activations", (double)m->activations);
            cJSON_AddNumberToObject(o, "messages", (double)m->messages);
            cJSON_AddNumberToObject(o, "data", (double)m->data);
        }
    }
    cJSON *b = cJSON_AddObjectToObject(s, "bytes");
    if (three_tier) {
        cJSON_AddNumberToObject(b, "user_edge", (double)user_edge);
        cJSON_AddNumberToObject(b, "edge_cloud", (double)edge_cloud);
    } else {
        cJSON_AddNumberToObject(b, "user_cloud", (double)user_edge); /* users talk to the server directly */
    }
    cJSON_AddNumberToObject(s, "wall_seconds", wall_s);
    char codec[64];
    sl_codec_format(&c->compress, codec, sizeof(codec));
    cJSON_AddStringToObject(s, "compress", codec);
    cJSON_AddBoolToObject(s, "shape_links", c->shape_links);
    cJSON *el = cJSON_AddArrayToObject(s, "eval_loss_per_round");
    cJSON *ms = cJSON_AddArrayToObject(s, "round_seconds_measured");
    cJSON *md = cJSON_AddArrayToObject(s, "round_seconds_modeled");
    for (int r = 0; r < rs->n; r++) {
        cJSON_AddItemToArray(el, cJSON_CreateNumber(rs->eval_loss[r]));
        cJSON_AddItemToArray(ms, cJSON_CreateNumber(rs->measured_s[r]));
        cJSON_AddItemToArray(md, cJSON_CreateNumber(rs->modeled_s[r]));
    }
    char *text = cJSON_Print(s);
    cJSON_Delete(s);
    if (text == NULL) return sl_fail(SL_ENOMEM, "summary.json: out of memory");
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", c->out_dir);
    int rc = sl_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

int sl_run(const sl_run_config *c, const char *argv0) {
    int rc = sl_run_config_validate(c);
    if (rc) return rc;
    if (c->model_path == NULL || c->data_dir == NULL)
        return sl_fail(SL_EINVAL, "run: --model and --data are required");
    if ((rc = sl_make_dirs(c->out_dir))) return rc;
    if (c->scheme && strcmp(c->scheme, "central") == 0) {
        sl_central_config cc;
        memset(&cc, 0, sizeof(cc));
        cc.model_path = c->model_path;
        cc.data_dir = c->data_dir;
        cc.out_dir = c->out_dir;
        cc.steps = c->rounds * c->local_steps;
        cc.batch = c->batch;
        cc.seq = c->seq;
        cc.packing = c->packing;
        cc.cut1 = c->cut1;
        cc.cut2 = c->cut2;
        cc.lora = c->lora;
        cc.optim = c->optim;
        cc.eval_batches = c->eval_batches;
        cc.eval_every = c->local_steps; /* an evaluation per "round" of samples, as the others */
        cc.seed = c->seed;
        sl_central_result r;
        int crc = sl_central_run(&cc, &r);
        free(r.eval_losses);
        return crc;
    }
    const char *scheme = c->scheme ? c->scheme : "splitllm";
    const int three_tier = strcmp(scheme, "splitllm") == 0;
    if (!three_tier && strcmp(scheme, "sfl") != 0 && strcmp(scheme, "sl") != 0 && strcmp(scheme, "fl") != 0)
        return sl_fail(SL_EINVAL, "--scheme '%s': expected splitllm, sfl, sl, fl or central", scheme);
    float eval0 = NAN, eval1 = NAN;
    evaluator ev;
    if ((rc = evaluator_open(&ev, c))) return rc;
    if ((rc = evaluate_adapter(&ev, c, NULL, &eval0))) {
        evaluator_close(&ev);
        return rc;
    }
    fprintf(stderr, "run: eval loss before training %.4f (perplexity %.2f)\n", eval0, exp(eval0));
    const int n_edges = three_tier ? c->edges : 0; /* the two-tier schemes and fl have no edges */
    const int n_jobs = 1 + n_edges + c->users;
    tier_job *jobs = calloc((size_t)n_jobs, sizeof(tier_job));
    if (jobs == NULL) {
        evaluator_close(&ev);
        return sl_fail(SL_ENOMEM, "run: out of memory");
    }
    char cloud_url[SL_URL_MAX];
    make_url(c, cloud_url, "cloud", 0);
    jobs[0] = (tier_job){.cfg = c, .tier = SL_TIER_CLOUD, .id = 0};
    snprintf(jobs[0].url, SL_URL_MAX, "%s", cloud_url);
    snprintf(jobs[0].cache, sizeof(jobs[0].cache), "%s/cloud", c->out_dir);
    for (int e = 0; e < n_edges; e++) {
        tier_job *j = &jobs[1 + e];
        *j = (tier_job){.cfg = c, .tier = SL_TIER_EDGE, .id = e};
        make_url(c, j->url, "edge", e);
        snprintf(j->up_url, SL_URL_MAX, "%s", cloud_url);
        snprintf(j->cache, sizeof(j->cache), "%s/edge-%d", c->out_dir, e);
    }
    for (int u = 0; u < c->users; u++) {
        tier_job *j = &jobs[1 + n_edges + u];
        *j = (tier_job){.cfg = c, .tier = SL_TIER_USER, .id = u};
        if (three_tier) make_url(c, j->up_url, "edge", sl_run_edge_of_user(c, u));
        else snprintf(j->up_url, SL_URL_MAX, "%s", cloud_url);
        snprintf(j->shard, sizeof(j->shard), "%s/user_%03d.shard", c->data_dir, u);
        snprintf(j->cache, sizeof(j->cache), "%s/user-%d", c->out_dir, u);
    }
    double t0 = sl_now_s();
    rc = c->processes ? run_processes(c, argv0, jobs, n_jobs) : run_threads(jobs, n_jobs);
    double wall = sl_now_s() - t0;
    if (rc == 0) {
        round_series rs;
        rc = collect_rounds(c, &ev, &rs);
        if (rc == 0) {
            eval1 = rs.eval_loss[c->rounds - 1];
            fprintf(stderr, "run: eval loss %.4f -> %.4f (perplexity %.2f -> %.2f) in %.1f s\n", eval0, eval1,
                    exp(eval0), exp(eval1), wall);
            rc = write_run_summary(c, jobs, n_jobs, eval0, eval1, wall, &rs);
        }
        round_series_free(&rs);
    }
    free(jobs);
    evaluator_close(&ev);
    return rc;
}
