/* experiment.c: see experiment.h. */
#include "schemes/experiment.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/codec.h"
#include "schemes/run.h"
#include "util/common.h"
#include "util/progress.h"

#define EXP_MAX_LIST 64
#define EXP_MAX_ARGS 160
#define EXP_PATH 1400

static const char *const KNOWN_SCHEMES[] = {"splitllm", "sfl", "sl", "fl", "central"};

void sl_experiment_config_defaults(sl_experiment_config *c) {
    memset(c, 0, sizeof(*c));
    sl_run_config r;
    sl_run_config_defaults(&r);
    c->out_dir = "out/experiment";
    c->max_seq = -1;
    c->schemes = "splitllm,sfl,sl,fl,central";
    c->users = "4,8,16,32";
    c->edges = "1,2,4";
    c->cuts = "1:3"; /* run's default --cuts 1,3 */
    c->rounds = r.rounds;
    c->local_steps = r.local_steps;
    c->batch = r.batch;
    c->seq = r.seq;
    c->lora_rank = r.lora.rank;
    c->eval_batches = r.eval_batches;
    c->timeout_ms = r.timeout_ms;
    c->seed = 1337; /* run's and prepare's default */
    c->processes = 1;
    c->plots = 1;
}

/* ------------------------------------------------------------------ small helpers */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->s ? b->s + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->n <= (size_t)k) cap *= 2;
        char *s = realloc(b->s, cap);
        if (s == NULL) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* An argument vector of owned strings. */
typedef struct {
    char *v[EXP_MAX_ARGS + 1];
    int n;
    int overflow;
} argvec;

static void av_add(argvec *a, const char *s) {
    if (a->n >= EXP_MAX_ARGS) {
        a->overflow = 1;
        return;
    }
    a->v[a->n] = strdup(s);
    if (a->v[a->n] == NULL) a->overflow = 1;
    else a->n++;
    a->v[a->n] = NULL;
}

static void av_addf(argvec *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_addf(argvec *a, const char *fmt, ...) {
    char buf[EXP_PATH];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    av_add(a, buf);
}

static void av_free(argvec *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
    a->v[0] = NULL;
}

/* Appends s quoted for a POSIX shell (only when it needs it). */
static void sb_shell_word(sbuf *b, const char *s) {
    int plain = s[0] != '\0';
    for (const char *p = s; *p; p++)
        if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
              strchr("_./:,=+-@%", *p)))
            plain = 0;
    if (plain) {
        sb_printf(b, "%s", s);
        return;
    }
    sb_printf(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'') sb_printf(b, "'\\''");
        else sb_printf(b, "%c", *p);
    }
    sb_printf(b, "'");
}

static void sb_command_line(sbuf *b, char *const *args, int n) {
    for (int i = 0; i < n; i++) {
        if (i) sb_printf(b, " ");
        sb_shell_word(b, args[i]);
    }
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Parses "a,b,c" of positive integers. */
static int parse_int_list(const char *flag, const char *text, int *out, int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 1000000 || (*end != ',' && *end != '\0'))
            return sl_fail(SL_EINVAL, "%s '%s': expected positive integers separated by commas", flag, text);
        if (*n >= EXP_MAX_LIST) return sl_fail(SL_EINVAL, "%s '%s': at most %d values", flag, text, EXP_MAX_LIST);
        for (int i = 0; i < *n; i++)
            if (out[i] == (int)v) return sl_fail(SL_EINVAL, "%s '%s': %ld appears twice", flag, text, v);
        out[(*n)++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (*n == 0) return sl_fail(SL_EINVAL, "%s: expected at least one value", flag);
    return SL_OK;
}

static int parse_cuts(const char *text, int (*cuts)[2], int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p || *end != ':') goto bad;
        const char *q = end + 1;
        long b = strtol(q, &end, 10);
        if (end == q || (*end != ',' && *end != '\0') || a < 0 || b < a || b > 100000) goto bad;
        if (*n >= EXP_MAX_LIST) return sl_fail(SL_EINVAL, "--cuts '%s': at most %d pairs", text, EXP_MAX_LIST);
        for (int i = 0; i < *n; i++)
            if (cuts[i][0] == a && cuts[i][1] == b) return sl_fail(SL_EINVAL, "--cuts '%s': %ld:%ld appears twice", text, a, b);
        cuts[*n][0] = (int)a;
        cuts[*n][1] = (int)b;
        (*n)++;
        p = *end == ',' ? end + 1 : end;
    }
    if (*n == 0) goto bad;
    return SL_OK;
bad:
    return sl_fail(SL_EINVAL, "--cuts '%s': expected c1:c2 pairs (0 <= c1 <= c2) separated by commas, e.g. 1:3,2:4",
                   text);
}

static int parse_schemes(const char *text, const char **out, int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int k = 0; k < (int)(sizeof(KNOWN_SCHEMES) / sizeof(KNOWN_SCHEMES[0])); k++)
            if (strlen(KNOWN_SCHEMES[k]) == len && strncmp(p, KNOWN_SCHEMES[k], len) == 0) found = k;
        if (found < 0)
            return sl_fail(SL_EINVAL, "--schemes '%s': '%.*s' is not one of splitllm, sfl, sl, fl, central", text,
                           (int)len, p);
        for (int i = 0; i < *n; i++)
            if (out[i] == KNOWN_SCHEMES[found])
                return sl_fail(SL_EINVAL, "--schemes '%s': %s appears twice", text, KNOWN_SCHEMES[found]);
        out[(*n)++] = KNOWN_SCHEMES[found];
        p += len;
        if (*p == ',') p++;
    }
    if (*n == 0) return sl_fail(SL_EINVAL, "--schemes: expected at least one scheme");
    return SL_OK;
}

/* Splits "none,int8,topk:0.1" into owned words (each a codec sl_codec_parse accepts). */
static int parse_codecs(const char *text, char (*out)[32], int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= 32) return sl_fail(SL_EINVAL, "--compress '%s': expected codecs separated by commas", text);
        if (*n >= EXP_MAX_LIST) return sl_fail(SL_EINVAL, "--compress '%s': at most %d codecs", text, EXP_MAX_LIST);
        snprintf(out[*n], 32, "%.*s", (int)len, p);
        sl_codec c;
        if (sl_codec_parse(out[*n], &c)) return sl_fail(SL_EINVAL, "--compress: %s", sl_last_error());
        for (int i = 0; i < *n; i++)
            if (strcmp(out[i], out[*n]) == 0) return sl_fail(SL_EINVAL, "--compress '%s': %s appears twice", text, out[i]);
        (*n)++;
        p += len;
        if (*p == ',') p++;
    }
    if (*n == 0) return sl_fail(SL_EINVAL, "--compress: expected at least one codec");
    return SL_OK;
}

/* ------------------------------------------------------------------ cells and rows */

typedef enum { CELL_PENDING, CELL_OK, CELL_FAILED } cell_status;

typedef struct {
    const char *scheme;
    int users, edges, cut1, cut2; /* edges: 0 for the schemes without edges */
    const char *compress;         /* the codec this cell passes (--compress list), or NULL */
    char name[128];
    char dir[EXP_PATH];
    cell_status status;
    int done_before; /* summary.json was there when this invocation started */
    char error[200];
    double cell_seconds; /* the child's whole run (this invocation); NaN when not run here */
    /* from summary.json; NaN / "" when absent */
    double loss0, loss1, ppl0, ppl1;
    double rss_user, rss_edge, rss_cloud, rss_process;
    double bytes_user_edge, bytes_edge_cloud, bytes_user_cloud;
    double wall_s, round_measured_s, round_modeled_s;
    double train_samples; /* from metrics.jsonl */
    char round_source[16]; /* where round_measured_s came from: "summary" or "metrics" */
    char mode[16], transport[16], compress_used[32], shape_links[32];
    char *loss_per_round;   /* "l1;l2;..." or NULL */
    char *memory_breakdown; /* "tier.key=bytes;..." or NULL */
} exp_cell;

static void cell_clear_values(exp_cell *c) {
    c->loss0 = c->loss1 = c->ppl0 = c->ppl1 = NAN;
    c->rss_user = c->rss_edge = c->rss_cloud = c->rss_process = NAN;
    c->bytes_user_edge = c->bytes_edge_cloud = c->bytes_user_cloud = NAN;
    c->wall_s = c->round_measured_s = c->round_modeled_s = c->train_samples = NAN;
    c->mode[0] = c->transport[0] = c->round_source[0] = c->compress_used[0] = c->shape_links[0] = '\0';
    free(c->loss_per_round);
    free(c->memory_breakdown);
    c->loss_per_round = c->memory_breakdown = NULL;
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static double json_array_mean(const cJSON *o, const char *key) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a)) return NAN;
    double sum = 0;
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) if (cJSON_IsNumber(v)) {
        sum += v->valuedouble;
        n++;
    }
    return n ? sum / n : NAN;
}

static void flatten_breakdown(sbuf *b, const cJSON *o, const char *prefix) {
    const cJSON *v;
    cJSON_ArrayForEach(v, o) {
        char key[256];
        snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", v->string ? v->string : "?");
        for (char *p = key; *p; p++)
            if (*p == ',' || *p == ';' || *p == '=' || *p == '"' || *p == '\n') *p = '_';
        if (cJSON_IsObject(v)) flatten_breakdown(b, v, key);
        else if (cJSON_IsNumber(v)) sb_printf(b, "%s%s=%.0f", b->n ? ";" : "", key, v->valuedouble);
    }
}

static void copy_word(char *dst, size_t n, const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    dst[0] = '\0';
    if (cJSON_IsString(v)) {
        snprintf(dst, n, "%s", v->valuestring);
        for (char *p = dst; *p; p++)
            if (*p == ',' || *p == '"' || *p == '\n') *p = '_';
    }
}

/* From the cell's metrics.jsonl: the samples trained (the cloud's round lines, or central's
 * steps × batch) and, when the summary has no round times, the cloud's measured seconds per
 * round (central: its step seconds summed over the run / rounds). */
static void cell_read_metrics(exp_cell *c, int batch, int rounds) {
    char path[EXP_PATH + 32];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", c->dir);
    char *text;
    size_t n;
    if (sl_read_file(path, &text, &n)) {
        sl_clear_error();
        return;
    }
    double samples = 0, round_s = 0, step_s = 0;
    long n_rounds = 0, n_steps = 0;
    for (char *line = text; line < text + n;) {
        char *nl = memchr(line, '\n', (size_t)(text + n - line));
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        const cJSON *tier = cJSON_GetObjectItemCaseSensitive(j, "tier");
        if (cJSON_IsString(tier) && strcmp(tier->valuestring, "cloud") == 0 &&
            cJSON_GetObjectItemCaseSensitive(j, "round") && !isnan(json_num(j, "samples"))) {
            samples += json_num(j, "samples");
            double sec = json_num(j, "seconds");
            if (!isnan(sec)) round_s += sec, n_rounds++;
        } else if (cJSON_IsString(tier) && strcmp(tier->valuestring, "central") == 0 && !isnan(json_num(j, "loss")) &&
                   !isnan(json_num(j, "step"))) {
            n_steps++;
            double sec = json_num(j, "seconds");
            if (!isnan(sec)) step_s += sec;
        }
        cJSON_Delete(j);
        if (nl == NULL) break;
        line = nl + 1;
    }
    sl_free(text);
    if (samples > 0) c->train_samples = samples;
    else if (n_steps > 0) c->train_samples = (double)n_steps * batch;
    if (isnan(c->round_measured_s)) {
        if (n_rounds > 0) c->round_measured_s = round_s / (double)n_rounds;
        else if (n_steps > 0 && rounds > 0) c->round_measured_s = step_s / rounds;
        if (!isnan(c->round_measured_s)) snprintf(c->round_source, sizeof(c->round_source), "metrics");
    }
}

/* Fills the cell's values from its summary.json (and metrics.jsonl). */
static int cell_read_summary(exp_cell *c, int batch, int rounds) {
    char path[EXP_PATH + 32];
    snprintf(path, sizeof(path), "%s/summary.json", c->dir);
    char *text;
    size_t n;
    int rc = sl_read_file(path, &text, &n);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    sl_free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return sl_fail(SL_EFORMAT, "%s: not a JSON object", path);
    }
    cell_clear_values(c);
    c->loss0 = json_num(j, "eval_loss_initial");
    c->loss1 = json_num(j, "eval_loss_final");
    c->ppl0 = json_num(j, "eval_perplexity_initial");
    c->ppl1 = json_num(j, "eval_perplexity_final");
    if (isnan(c->ppl0) && !isnan(c->loss0)) c->ppl0 = exp(c->loss0);
    if (isnan(c->ppl1) && !isnan(c->loss1)) c->ppl1 = exp(c->loss1);
    const cJSON *rss = cJSON_GetObjectItemCaseSensitive(j, "peak_rss_bytes");
    if (cJSON_IsObject(rss)) {
        c->rss_user = json_num(rss, "user");
        c->rss_edge = json_num(rss, "edge");
        c->rss_cloud = json_num(rss, "cloud");
        c->rss_process = json_num(rss, "process");
        if (isnan(c->rss_process)) c->rss_process = json_num(rss, "central");
    }
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(j, "bytes");
    if (cJSON_IsObject(bytes)) {
        c->bytes_user_edge = json_num(bytes, "user_edge");
        c->bytes_edge_cloud = json_num(bytes, "edge_cloud");
        c->bytes_user_cloud = json_num(bytes, "user_cloud");
    }
    c->wall_s = json_num(j, "wall_seconds");
    c->round_measured_s = json_array_mean(j, "round_seconds_measured");
    if (!isnan(c->round_measured_s)) snprintf(c->round_source, sizeof(c->round_source), "summary");
    c->round_modeled_s = json_array_mean(j, "round_seconds_modeled");
    copy_word(c->mode, sizeof(c->mode), j, "mode");
    copy_word(c->transport, sizeof(c->transport), j, "transport");
    copy_word(c->compress_used, sizeof(c->compress_used), j, "compress");
    if (c->compress_used[0] == '\0' && c->compress) snprintf(c->compress_used, sizeof(c->compress_used), "%s", c->compress);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape_links");
    if (cJSON_IsBool(shape)) snprintf(c->shape_links, sizeof(c->shape_links), "%d", cJSON_IsTrue(shape) ? 1 : 0);
    else if (cJSON_IsNumber(shape)) snprintf(c->shape_links, sizeof(c->shape_links), "%g", shape->valuedouble);
    else copy_word(c->shape_links, sizeof(c->shape_links), j, "shape_links");
    const cJSON *lpr = cJSON_GetObjectItemCaseSensitive(j, "eval_loss_per_round");
    if (cJSON_IsArray(lpr)) {
        sbuf b = {0};
        const cJSON *v;
        cJSON_ArrayForEach(v, lpr) if (cJSON_IsNumber(v)) sb_printf(&b, "%s%.6g", b.n ? ";" : "", v->valuedouble);
        if (!b.oom && b.n) c->loss_per_round = b.s;
        else free(b.s);
    }
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(j, "memory_breakdown");
    if (cJSON_IsObject(mb)) {
        sbuf b = {0};
        flatten_breakdown(&b, mb, "");
        if (!b.oom && b.n) c->memory_breakdown = b.s;
        else free(b.s);
    }
    cJSON_Delete(j);
    cell_read_metrics(c, batch, rounds);
    return SL_OK;
}

/* ------------------------------------------------------------------ results.csv */

static const char CSV_HEADER[] =
    "cell,scheme,model,users,edges,cut1,cut2,rounds,local_steps,batch,seq,status,"
    "eval_loss_initial,eval_loss_final,ppl_initial,ppl_final,"
    "peak_rss_user_bytes,peak_rss_edge_bytes,peak_rss_cloud_bytes,peak_rss_process_bytes,"
    "bytes_user_edge,bytes_edge_cloud,bytes_user_cloud,wall_seconds,"
    "round_seconds_measured,round_seconds_source,round_seconds_modeled,train_samples,eval_loss_per_round,"
    "memory_breakdown,"
    "mode,transport,compress,shape_links,cell_seconds,dir,log,error\n";

static void csv_num(sbuf *b, double v, const char *fmt) {
    sb_printf(b, ",");
    if (!isnan(v)) sb_printf(b, fmt, v);
}

/* The rows of an existing results.csv whose cells are not in this grid (an earlier invocation
 * on the same folder with other schemes, users or flags), when their folder still has a
 * summary.json: they stay in results.csv, after this grid's rows. Rows of another header
 * (an older version) are dropped. Returns a malloc'd string (maybe empty) or NULL. */
static char *other_rows(const sl_experiment_config *cfg, const exp_cell *cells, int n, int *kept, int *dropped) {
    *kept = *dropped = 0;
    char path[EXP_PATH];
    snprintf(path, sizeof(path), "%s/results.csv", cfg->out_dir);
    char *text;
    size_t len;
    sbuf b = {0};
    sb_printf(&b, "%s", "");
    if (sl_read_file(path, &text, &len)) {
        sl_clear_error();
        return b.s;
    }
    const size_t head_len = strlen(CSV_HEADER);
    const int same_header = len >= head_len && memcmp(text, CSV_HEADER, head_len) == 0;
    char *line = strchr(text, '\n');
    line = line ? line + 1 : text + len;
    while (line < text + len) {
        char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        size_t name_len = strcspn(line, ",\n");
        int in_grid = 0;
        for (int i = 0; i < n && !in_grid; i++)
            in_grid = strlen(cells[i].name) == name_len && strncmp(cells[i].name, line, name_len) == 0;
        if (!in_grid && ll > 0) {
            char summary[EXP_PATH + 300];
            snprintf(summary, sizeof(summary), "%s/cells/%.*s/summary.json", cfg->out_dir, (int)name_len, line);
            if (same_header && file_exists(summary)) {
                sb_printf(&b, "%.*s\n", (int)ll, line);
                (*kept)++;
            } else {
                (*dropped)++;
            }
        }
        if (nl == NULL) break;
        line = nl + 1;
    }
    sl_free(text);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static int write_results(const sl_experiment_config *cfg, const char *model_name, exp_cell *cells, int n,
                         const char *others) {
    sbuf b = {0};
    sb_printf(&b, "%s", CSV_HEADER);
    for (int i = 0; i < n; i++) {
        const exp_cell *c = &cells[i];
        const char *status = c->status == CELL_OK ? "ok" : c->status == CELL_FAILED ? "failed" : "pending";
        sb_printf(&b, "%s,%s,%s,%d,%d,%d,%d,%d,%d,%d,%d,%s", c->name, c->scheme, model_name, c->users, c->edges,
                  c->cut1, c->cut2, cfg->rounds, cfg->local_steps, cfg->batch, cfg->seq, status);
        csv_num(&b, c->loss0, "%.6f");
        csv_num(&b, c->loss1, "%.6f");
        csv_num(&b, c->ppl0, "%.4f");
        csv_num(&b, c->ppl1, "%.4f");
        csv_num(&b, c->rss_user, "%.0f");
        csv_num(&b, c->rss_edge, "%.0f");
        csv_num(&b, c->rss_cloud, "%.0f");
        csv_num(&b, c->rss_process, "%.0f");
        csv_num(&b, c->bytes_user_edge, "%.0f");
        csv_num(&b, c->bytes_edge_cloud, "%.0f");
        csv_num(&b, c->bytes_user_cloud, "%.0f");
        csv_num(&b, c->wall_s, "%.3f");
        csv_num(&b, c->round_measured_s, "%.4f");
        sb_printf(&b, ",%s", c->round_source);
        csv_num(&b, c->round_modeled_s, "%.4f");
        csv_num(&b, c->train_samples, "%.0f");
        sb_printf(&b, ",%s,%s,%s,%s,%s,%s", c->loss_per_round ? c->loss_per_round : "",
                  c->memory_breakdown ? c->memory_breakdown : "", c->mode, c->transport, c->compress_used,
                  c->shape_links);
        csv_num(&b, c->cell_seconds, "%.2f");
        sb_printf(&b, ",cells/%s,cells/%s/run.log,%s\n", c->name, c->name, c->error);
    }
    if (others) sb_printf(&b, "%s", others);
    if (b.oom) {
        free(b.s);
        return sl_fail(SL_ENOMEM, "results.csv: out of memory");
    }
    char path[EXP_PATH];
    snprintf(path, sizeof(path), "%s/results.csv", cfg->out_dir);
    int rc = sl_write_file_atomic(path, b.s, b.n);
    free(b.s);
    return rc;
}

/* ------------------------------------------------------------------ child processes */

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

typedef enum { CHILD_OK, CHILD_FAILED, CHILD_INTERRUPTED } child_result;

typedef void (*tick_fn)(void *arg, double running_s);

static void kill_group(pid_t pid, int *status) {
    kill(-pid, SIGTERM);
    double t0 = sl_now_s();
    while (waitpid(pid, status, WNOHANG) == 0) {
        if (sl_now_s() - t0 > 5.0) {
            kill(-pid, SIGKILL);
            waitpid(pid, status, 0);
            break;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL); /* tier processes left behind by a killed run */
}

/* Runs args (args[0] the binary) in its own process group with stdout and stderr to
 * log_path; waits, calling tick about once a second. why says how a failure ended. */
static child_result run_child(char *const *args, const char *log_path, double timeout_s, tick_fn tick, void *arg,
                              char *why, size_t why_n) {
    why[0] = '\0';
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        snprintf(why, why_n, "cannot write its log: %s", strerror(errno));
        return CHILD_FAILED;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_n, "fork failed: %s", strerror(errno));
        close(log_fd);
        return CHILD_FAILED;
    }
    if (pid == 0) {
        setpgid(0, 0); /* its tier processes with it: one kill stops them all */
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execv(args[0], args);
        dprintf(2, "experiment: cannot run %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: whichever runs first */
    close(log_fd);
    double t0 = sl_now_s(), last_tick = t0;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) {
            snprintf(why, why_n, "waitpid failed: %s", strerror(errno));
            kill_group(pid, &status);
            return CHILD_FAILED;
        }
        double now = sl_now_s();
        if (g_stop_signal) {
            kill_group(pid, &status);
            snprintf(why, why_n, "interrupted");
            return CHILD_INTERRUPTED;
        }
        if (timeout_s > 0 && now - t0 > timeout_s) {
            kill_group(pid, &status);
            snprintf(why, why_n, "timed out after %.0f s", timeout_s);
            return CHILD_FAILED;
        }
        if (tick && now - last_tick >= 1.0) {
            last_tick = now;
            tick(arg, now - t0);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL); /* nothing of the cell outlives it */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return CHILD_OK;
    if (WIFEXITED(status)) snprintf(why, why_n, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(why, why_n, "killed by signal %d", WTERMSIG(status));
    else snprintf(why, why_n, "ended abnormally");
    return CHILD_FAILED;
}

/* Prints the last lines of a log (after a failure). */
static void print_log_tail(FILE *out, const char *path, int lines) {
    char *text;
    size_t n;
    if (sl_read_file(path, &text, &n)) {
        sl_clear_error();
        return;
    }
    size_t end = n;
    if (end > 0 && text[end - 1] == '\n') end--;
    size_t start = end;
    int seen = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && ++seen >= lines) break;
        start--;
    }
    fprintf(out, "    | ");
    for (size_t i = start; i < end; i++) {
        fputc(text[i], out);
        if (text[i] == '\n') fprintf(out, "    | ");
    }
    fputc('\n', out);
    sl_free(text);
}

/* ------------------------------------------------------------------ files beside the cells */

/* Writes args one per line; *out (malloc'd) gets the same text. */
static char *args_text(char *const *args, int from, int n, int skip_timeout) {
    sbuf b = {0};
    for (int i = from; i < n; i++) {
        if (skip_timeout && strcmp(args[i], "--timeout-ms") == 0) {
            i++;
            continue;
        }
        sb_printf(&b, "%s\n", args[i]);
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    if (b.s == NULL) b.s = strdup("");
    return b.s;
}

/* 1: path holds exactly text; 0: it holds something else; -1: it is absent or unreadable. */
static int file_equals(const char *path, const char *text) {
    char *have;
    size_t n;
    if (sl_read_file(path, &have, &n)) {
        sl_clear_error();
        return -1;
    }
    int eq = n == strlen(text) && memcmp(have, text, n) == 0;
    sl_free(have);
    return eq;
}

static void machine_json(cJSON *m) {
    struct utsname u;
    if (uname(&u) == 0) {
        char k[600];
        snprintf(k, sizeof(k), "%s %s %s", u.sysname, u.release, u.machine);
        cJSON_AddStringToObject(m, "kernel", k);
    }
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "model name", 10) == 0) {
                char *v = strchr(line, ':');
                if (v) {
                    v++;
                    while (*v == ' ' || *v == '\t') v++;
                    v[strcspn(v, "\n")] = '\0';
                    cJSON_AddStringToObject(m, "cpu", v);
                }
                break;
            }
        fclose(f);
    }
    cJSON_AddNumberToObject(m, "cpus_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    double load[1];
    if (getloadavg(load, 1) == 1) cJSON_AddNumberToObject(m, "loadavg_1m", load[0]);
    f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            unsigned long long kb;
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
                cJSON_AddNumberToObject(m, "memory_bytes", (double)kb * 1024.0);
                break;
            }
        }
        fclose(f);
    }
    f = fopen("/etc/os-release", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "PRETTY_NAME=", 12) == 0) {
                char *v = line + 12;
                v[strcspn(v, "\n")] = '\0';
                size_t len = strlen(v);
                if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
                    v[len - 1] = '\0';
                    v++;
                }
                cJSON_AddStringToObject(m, "os", v);
                break;
            }
        fclose(f);
    }
    const char *omp = getenv("OMP_NUM_THREADS");
    if (omp) cJSON_AddStringToObject(m, "OMP_NUM_THREADS", omp);
}

static void iso_time(char *out, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* DIR/experiment.json: {"invocations": [...]} — this invocation is appended (or, at the end,
 * its entry is completed). */
static int record_invocation(const sl_experiment_config *cfg, int final, int n_cells, int n_ok, int n_failed,
                             int n_run, const char *status) {
    char path[EXP_PATH];
    snprintf(path, sizeof(path), "%s/experiment.json", cfg->out_dir);
    cJSON *root = NULL;
    char *text;
    size_t n;
    if (sl_read_file(path, &text, &n) == 0) {
        root = cJSON_Parse(text);
        sl_free(text);
    } else {
        sl_clear_error();
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = cJSON_CreateObject();
    }
    cJSON *inv = cJSON_GetObjectItemCaseSensitive(root, "invocations");
    if (!cJSON_IsArray(inv)) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "invocations");
        inv = cJSON_AddArrayToObject(root, "invocations");
    }
    char now[32];
    iso_time(now, sizeof(now));
    cJSON *e;
    if (!final) {
        e = cJSON_CreateObject();
        sbuf b = {0};
        sb_printf(&b, "splitllm experiment");
        cJSON *argv = cJSON_AddArrayToObject(e, "argv");
        for (int i = 0; i < cfg->argc; i++) {
            sb_printf(&b, " ");
            sb_shell_word(&b, cfg->argv[i]);
            cJSON_AddItemToArray(argv, cJSON_CreateString(cfg->argv[i]));
        }
        cJSON_AddStringToObject(e, "command_line", b.oom ? "" : b.s);
        free(b.s);
        char cwd[EXP_PATH];
        if (getcwd(cwd, sizeof(cwd))) cJSON_AddStringToObject(e, "cwd", cwd);
        cJSON_AddStringToObject(e, "binary", cfg->self_exe);
        cJSON_AddStringToObject(e, "started", now);
        machine_json(cJSON_AddObjectToObject(e, "machine"));
        cJSON_AddItemToArray(inv, e);
    } else {
        e = cJSON_GetArrayItem(inv, cJSON_GetArraySize(inv) - 1);
        if (e == NULL) e = cJSON_CreateObject(), cJSON_AddItemToArray(inv, e);
        cJSON_AddStringToObject(e, "finished", now);
        cJSON_AddStringToObject(e, "status", status);
        cJSON_AddNumberToObject(e, "cells", n_cells);
        cJSON_AddNumberToObject(e, "cells_run", n_run);
        cJSON_AddNumberToObject(e, "cells_ok", n_ok);
        cJSON_AddNumberToObject(e, "cells_failed", n_failed);
    }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (out == NULL) return sl_fail(SL_ENOMEM, "%s: out of memory", path);
    size_t len = strlen(out);
    int rc = sl_write_file_atomic(path, out, len);
    free(out);
    return rc;
}

/* ------------------------------------------------------------------ data */

static int data_dir_for(const sl_experiment_config *cfg, int users, char *out, size_t n) {
    if (cfg->data_pattern == NULL) {
        snprintf(out, n, "%s/data-%d", cfg->out_dir, users);
        return SL_OK;
    }
    size_t o = 0;
    for (const char *p = cfg->data_pattern; *p && o + 1 < n;) {
        if (strncmp(p, "{users}", 7) == 0) {
            int k = snprintf(out + o, n - o, "%d", users);
            if (k < 0 || (size_t)k >= n - o) break;
            o += (size_t)k;
            p += 7;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return SL_OK;
}

/* The `splitllm prepare` command for N users into DIR/data-N. */
static void build_prepare_args(const sl_experiment_config *cfg, int users, const char *dir, argvec *a) {
    av_add(a, cfg->self_exe);
    av_add(a, "prepare");
    av_add(a, "--tokenizer");
    av_add(a, cfg->tokenizer_path);
    av_add(a, "--input");
    av_add(a, cfg->input_path);
    if (cfg->format) av_add(a, "--format"), av_add(a, cfg->format);
    if (cfg->max_seq >= 0) av_add(a, "--max-seq"), av_addf(a, "%d", cfg->max_seq);
    av_add(a, "--users");
    av_addf(a, "%d", users);
    if (cfg->partition) av_add(a, "--partition"), av_add(a, cfg->partition);
    if (cfg->key) av_add(a, "--key"), av_add(a, cfg->key);
    if (cfg->alpha) av_add(a, "--alpha"), av_add(a, cfg->alpha);
    if (cfg->val_fraction) av_add(a, "--val-fraction"), av_add(a, cfg->val_fraction);
    av_add(a, "--seed");
    av_addf(a, "%d", cfg->seed);
    av_add(a, "--out");
    av_add(a, dir);
}

/* Checks (prepare = 0) that DIR/data-N, when there, was prepared with this experiment's
 * flags; or (prepare = 1) also prepares it unless it is there from the same flags. With
 * --data-pattern: checks that the folder holds val.shard. */
static int ensure_data(const sl_experiment_config *cfg, int users, int prepare, FILE *log) {
    char dir[EXP_PATH], stamp[EXP_PATH + 16], manifest[EXP_PATH + 16];
    data_dir_for(cfg, users, dir, sizeof(dir));
    if (cfg->data_pattern) {
        char val[EXP_PATH + 16];
        snprintf(val, sizeof(val), "%s/val.shard", dir);
        if (!file_exists(val))
            return sl_fail(SL_EINVAL, "--data-pattern: %s has no val.shard (expected a folder written by splitllm prepare "
                           "--users %d)", dir, users);
        return SL_OK;
    }
    argvec a = {0};
    build_prepare_args(cfg, users, dir, &a);
    char *want = a.overflow ? NULL : args_text(a.v, 1, a.n, 0);
    if (want == NULL) {
        av_free(&a);
        return sl_fail(SL_ENOMEM, "prepare: out of memory");
    }
    snprintf(stamp, sizeof(stamp), "%s.args", dir);
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", dir);
    int have = file_equals(stamp, want);
    int rc = SL_OK;
    if (have == 0 && file_exists(manifest)) {
        rc = sl_fail(SL_EINVAL, "%s was prepared with other flags than this experiment's (see %s); delete %s and the "
                     "cells that used it, or choose another --out", dir, stamp, dir);
    } else if (!prepare) {
        /* checked only */
    } else if (have == 1 && file_exists(manifest)) {
        fprintf(log, "experiment: %s prepared earlier with the same flags; reused\n", dir);
    } else {
        char log_path[EXP_PATH + 16], why[256];
        snprintf(log_path, sizeof(log_path), "%s.log", dir);
        fprintf(log, "experiment: preparing %s (%d users; log %s)\n", dir, users, log_path);
        if (run_child(a.v, log_path, 0, NULL, NULL, why, sizeof(why)) != CHILD_OK) {
            fprintf(log, "experiment: prepare failed (%s); the end of %s:\n", why, log_path);
            print_log_tail(log, log_path, 6);
            rc = g_stop_signal ? sl_fail(SL_ESTATE, "interrupted while preparing %s", dir)
                               : sl_fail(SL_EIO, "splitllm prepare for %d users failed (%s); see %s", users, why,
                                         log_path);
        } else {
            rc = sl_write_file_atomic(stamp, want, strlen(want));
        }
    }
    free(want);
    av_free(&a);
    return rc;
}

/* Removes the model part copies the cell's tiers cached (see experiment.h); returns bytes freed. */
static double remove_part_copies(const char *cell_dir) {
    static const char *const parts[] = {"user.safetensors", "edge.safetensors", "cloud.safetensors"};
    double freed = 0;
    DIR *d = opendir(cell_dir);
    if (d == NULL) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strcmp(n, "parts") != 0 && strcmp(n, "cloud") != 0 && strncmp(n, "user-", 5) != 0 &&
            strncmp(n, "edge-", 5) != 0)
            continue;
        for (int k = 0; k < 3; k++) {
            char path[EXP_PATH + 300];
            snprintf(path, sizeof(path), "%s/%s/%s", cell_dir, n, parts[k]);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && unlink(path) == 0) freed += (double)st.st_size;
        }
    }
    closedir(d);
    return freed;
}

/* ------------------------------------------------------------------ the grid */

static void build_cell_args(const sl_experiment_config *cfg, const exp_cell *c, argvec *a) {
    char data[EXP_PATH];
    data_dir_for(cfg, c->users, data, sizeof(data));
    av_add(a, cfg->self_exe);
    av_add(a, "run");
    av_add(a, "--scheme");
    av_add(a, c->scheme);
    av_add(a, "--model");
    av_add(a, cfg->model_path);
    av_add(a, "--data");
    av_add(a, data);
    av_add(a, "--out");
    av_add(a, c->dir);
    av_add(a, "--users");
    av_addf(a, "%d", c->users);
    av_add(a, "--edges"); /* the schemes without edges ignore it; run wants 1 <= M <= N */
    av_addf(a, "%d", c->edges > 0 ? c->edges : 1);
    av_add(a, "--cuts");
    av_addf(a, "%d,%d", c->cut1, c->cut2);
    av_add(a, "--rounds");
    av_addf(a, "%d", cfg->rounds);
    av_add(a, "--local-steps");
    av_addf(a, "%d", cfg->local_steps);
    av_add(a, "--batch");
    av_addf(a, "%d", cfg->batch);
    av_add(a, "--seq");
    av_addf(a, "%d", cfg->seq);
    av_add(a, "--lora-rank");
    av_addf(a, "%d", cfg->lora_rank);
    if (cfg->lora_targets) av_add(a, "--lora-targets"), av_add(a, cfg->lora_targets);
    if (cfg->lr) av_add(a, "--lr"), av_add(a, cfg->lr);
    av_add(a, "--seed");
    av_addf(a, "%d", cfg->seed);
    av_add(a, "--eval-batches");
    av_addf(a, "%d", cfg->eval_batches);
    if (cfg->processes) {
        av_add(a, "--processes");
        av_add(a, "--transport");
        av_add(a, cfg->transport ? cfg->transport : "ipc");
    } else if (cfg->transport) {
        av_add(a, "--transport");
        av_add(a, cfg->transport);
    }
    if (c->compress) av_add(a, "--compress"), av_add(a, c->compress);
    if (cfg->run_args) {
        const char *p = cfg->run_args;
        while (*p) {
            p += strspn(p, " \t\n");
            size_t len = strcspn(p, " \t\n");
            if (len == 0) break;
            char word[EXP_PATH];
            snprintf(word, sizeof(word), "%.*s", (int)len, p);
            av_add(a, word);
            p += len;
        }
    }
    av_add(a, "--timeout-ms"); /* last: cell.args leaves it out, a resume may change it */
    av_addf(a, "%d", cfg->timeout_ms);
}

typedef struct {
    sl_progress *p;
    int tty;
    long done, total;
    const char *name;
    double run_start_s;
} tick_state;

static void tick(void *arg, double running_s) {
    tick_state *t = arg;
    if (!t->tty) return;
    char extra[200];
    snprintf(extra, sizeof(extra), "running %s (%.0f s)", t->name, running_s);
    double elapsed = sl_now_s() - t->run_start_s;
    sl_progress_update(t->p, t->done, t->done > 0 ? t->done / elapsed * 60.0 : 0.0, "cells/min", extra);
}

static int find_on_path(const char *name) {
    const char *path = getenv("PATH");
    if (path == NULL) return 0;
    while (*path) {
        size_t len = strcspn(path, ":");
        char full[EXP_PATH];
        snprintf(full, sizeof(full), "%.*s/%s", (int)len, path, name);
        if (len > 0 && access(full, X_OK) == 0) return 1;
        path += len;
        if (*path == ':') path++;
    }
    return 0;
}

/* The plot script: --plot-script, else scripts/plot_results.sh above the binary (build
 * folders live in the source tree), else in the current folder. */
static int find_plot_script(const sl_experiment_config *cfg, char *out, size_t n) {
    if (cfg->plot_script) {
        snprintf(out, n, "%s", cfg->plot_script);
        return file_exists(out);
    }
    char base[EXP_PATH];
    snprintf(base, sizeof(base), "%s", cfg->self_exe);
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(base, '/');
        if (slash == NULL) break;
        *slash = '\0';
        snprintf(out, n, "%.1300s/scripts/plot_results.sh", base);
        if (file_exists(out)) return 1;
    }
    snprintf(out, n, "scripts/plot_results.sh");
    return file_exists(out);
}

static void make_plots(const sl_experiment_config *cfg, FILE *log) {
    char script[EXP_PATH];
    if (!find_plot_script(cfg, script, sizeof(script))) {
        fprintf(log, "experiment: plots skipped: scripts/plot_results.sh not found (give --plot-script F)\n");
        return;
    }
    if (!find_on_path("gnuplot")) {
        fprintf(log, "experiment: plots skipped: gnuplot is not installed (scripts/setup.sh installs gnuplot-nox); "
                     "later: bash %s %s\n", script, cfg->out_dir);
        return;
    }
    argvec a = {0};
    av_add(&a, "/bin/bash");
    av_add(&a, script);
    av_add(&a, cfg->out_dir);
    char log_path[EXP_PATH], why[256];
    snprintf(log_path, sizeof(log_path), "%s/plots.log", cfg->out_dir);
    if (!a.overflow && run_child(a.v, log_path, 600, NULL, NULL, why, sizeof(why)) == CHILD_OK) {
        fprintf(log, "experiment: plots in %s/plots/\n", cfg->out_dir);
    } else {
        fprintf(log, "experiment: the plot script failed (%s); the end of %s:\n", why, log_path);
        print_log_tail(log, log_path, 6);
    }
    av_free(&a);
}

static void model_name_of(const sl_experiment_config *cfg, char *out, size_t n) {
    const char *src = cfg->model_name;
    if (src == NULL) {
        const char *slash = strrchr(cfg->model_path, '/');
        src = slash ? slash + 1 : cfg->model_path;
    }
    snprintf(out, n, "%s", src);
    if (cfg->model_name == NULL) {
        char *dot = strrchr(out, '.');
        if (dot && dot != out) *dot = '\0';
    }
    for (char *p = out; *p; p++)
        if (*p == ',' || *p == '"' || *p == '\n' || *p == '\r') *p = '_';
}

static int check_config(const sl_experiment_config *cfg) {
    if (cfg->out_dir == NULL || cfg->out_dir[0] == '\0') return sl_fail(SL_EINVAL, "--out is required");
    if (cfg->model_path == NULL) return sl_fail(SL_EINVAL, "--model is required");
    if (cfg->self_exe == NULL) return sl_fail(SL_EINVAL, "experiment: the splitllm binary is unknown");
    if (!file_exists(cfg->model_path)) return sl_fail(SL_EINVAL, "--model %s: no such file", cfg->model_path);
    if (cfg->data_pattern && (cfg->input_path || cfg->tokenizer_path))
        return sl_fail(SL_EINVAL, "--data-pattern uses prepared folders: give it or --tokenizer with --input, not both");
    if (cfg->data_pattern == NULL && (cfg->input_path == NULL || cfg->tokenizer_path == NULL))
        return sl_fail(SL_EINVAL, "data: give --tokenizer F --input F (prepared here into DIR/data-N) or --data-pattern "
                       "'DIR/data-{users}'");
    if (cfg->rounds < 1 || cfg->local_steps < 1 || cfg->batch < 1 || cfg->seq < 1 || cfg->lora_rank < 1)
        return sl_fail(SL_EINVAL, "--rounds %d --local-steps %d --batch %d --seq %d --lora-rank %d: expected all >= 1",
                       cfg->rounds, cfg->local_steps, cfg->batch, cfg->seq, cfg->lora_rank);
    if (cfg->eval_batches < 0 || cfg->timeout_ms < 1 || cfg->seed < 0)
        return sl_fail(SL_EINVAL, "--eval-batches %d --timeout-ms %d --seed %d: expected >= 0, >= 1, >= 0",
                       cfg->eval_batches, cfg->timeout_ms, cfg->seed);
    if (cfg->lr) {
        char *end;
        double lr = strtod(cfg->lr, &end);
        if (end == cfg->lr || *end != '\0' || !(lr > 0))
            return sl_fail(SL_EINVAL, "--lr '%s': expected a positive number", cfg->lr);
    }
    if (cfg->transport && strcmp(cfg->transport, "ipc") != 0 && strcmp(cfg->transport, "tcp") != 0 &&
        (cfg->processes || strcmp(cfg->transport, "inproc") != 0))
        return sl_fail(SL_EINVAL, "--transport '%s': expected ipc or tcp with --processes (inproc without)",
                       cfg->transport);
    if (cfg->cell_timeout_s < 0) return sl_fail(SL_EINVAL, "--cell-timeout: expected >= 0 seconds");
    return SL_OK;
}

int sl_experiment_run(const sl_experiment_config *cfg) {
    int rc = check_config(cfg);
    if (rc) return rc;
    const char *schemes[EXP_MAX_LIST];
    int users[EXP_MAX_LIST], edges[EXP_MAX_LIST], cuts[EXP_MAX_LIST][2];
    int n_schemes, n_users, n_edges, n_cuts;
    if ((rc = parse_schemes(cfg->schemes, schemes, &n_schemes)) || (rc = parse_int_list("--users", cfg->users, users, &n_users)) ||
        (rc = parse_int_list("--edges", cfg->edges, edges, &n_edges)) || (rc = parse_cuts(cfg->cuts, cuts, &n_cuts)))
        return rc;
    char codecs[EXP_MAX_LIST][32];
    int n_codecs = 1;
    if (cfg->compress && (rc = parse_codecs(cfg->compress, codecs, &n_codecs))) return rc;
    if (cfg->data_pattern && n_users > 1 && strstr(cfg->data_pattern, "{users}") == NULL)
        return sl_fail(SL_EINVAL, "--data-pattern '%s': needs {users} when --users lists several N", cfg->data_pattern);

    /* The cells, in order: cut, N, scheme, M, codec. */
    const long long combos_ll = (long long)n_cuts * n_users * n_schemes * n_edges * n_codecs;
    if (combos_ll > 100000) return sl_fail(SL_EINVAL, "experiment: %lld combinations: at most 100000", combos_ll);
    const int combos = (int)combos_ll;
    exp_cell *cells = calloc((size_t)combos, sizeof(exp_cell));
    if (cells == NULL) return sl_fail(SL_ENOMEM, "experiment: out of memory");
    int n = 0, skipped_edges = 0, skipped_repeat = 0, skipped_codec = 0, n_run = 0, n_failed = 0;
    for (int k = 0; k < n_cuts; k++)
        for (int u = 0; u < n_users; u++)
            for (int s = 0; s < n_schemes; s++) {
                const int split = strcmp(schemes[s], "splitllm") == 0;
                const int central = strcmp(schemes[s], "central") == 0;
                for (int e = 0; e < n_edges; e++)
                    for (int z = 0; z < n_codecs; z++) {
                        if (!split && e > 0) {
                            skipped_repeat++;
                            continue;
                        }
                        if (split && edges[e] > users[u]) {
                            skipped_edges++;
                            continue;
                        }
                        if (central && z > 0) { /* no links: nothing to compress */
                            skipped_codec++;
                            continue;
                        }
                        exp_cell *c = &cells[n++];
                        c->scheme = schemes[s];
                        c->users = users[u];
                        c->edges = split ? edges[e] : 0;
                        c->cut1 = cuts[k][0];
                        c->cut2 = cuts[k][1];
                        c->compress = cfg->compress && !central ? codecs[z] : NULL;
                        char suffix[40] = "";
                        if (c->compress) {
                            size_t o = 0;
                            suffix[o++] = '-';
                            for (const char *p = c->compress; *p && o + 1 < sizeof(suffix); p++)
                                if (*p != ':') suffix[o++] = *p;
                            suffix[o] = '\0';
                        }
                        snprintf(c->name, sizeof(c->name), "%s-n%d-m%d-c%d_%d%s", c->scheme, c->users, c->edges,
                                 c->cut1, c->cut2, suffix);
                        snprintf(c->dir, sizeof(c->dir), "%s/cells/%s", cfg->out_dir, c->name);
                        c->cell_seconds = NAN;
                        c->loss_per_round = c->memory_breakdown = NULL;
                        cell_clear_values(c);
                    }
            }
    char model_name[256];
    model_name_of(cfg, model_name, sizeof(model_name));
    FILE *log = stderr;

    /* Which cells are done, and were they run with these flags? */
    int n_done = 0, n_to_run = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        exp_cell *c = &cells[i];
        char summary[EXP_PATH + 16];
        snprintf(summary, sizeof(summary), "%s/summary.json", c->dir);
        if (!file_exists(summary)) {
            n_to_run++;
            continue;
        }
        argvec a = {0};
        build_cell_args(cfg, c, &a);
        char *want = a.overflow ? NULL : args_text(a.v, 1, a.n, 1);
        char stamp[EXP_PATH + 16];
        snprintf(stamp, sizeof(stamp), "%s/cell.args", c->dir);
        if (want == NULL) rc = sl_fail(SL_ENOMEM, "experiment: out of memory");
        else if (file_equals(stamp, want) == 0)
            rc = sl_fail(SL_EINVAL, "%s was run with other flags than this experiment's (see %s); delete that folder "
                         "or choose another --out", c->dir, stamp);
        free(want);
        av_free(&a);
        if (rc) break;
        if (cell_read_summary(c, cfg->batch, cfg->rounds)) {
            fprintf(log, "experiment: %s: %s; the cell runs again\n", c->name, sl_last_error());
            sl_clear_error();
            cell_clear_values(c);
            n_to_run++;
            continue;
        }
        c->status = CELL_OK;
        c->done_before = 1;
        n_done++;
    }
    /* The data folders: made with these flags (all N), there (the N that still have cells to run). */
    for (int u = 0; u < n_users && rc == 0; u++) {
        int needed = 0;
        for (int i = 0; i < n; i++)
            if (cells[i].users == users[u] && cells[i].status != CELL_OK) needed = 1;
        if (!cfg->data_pattern || needed) rc = ensure_data(cfg, users[u], 0, log);
    }
    if (rc == 0) {
        fprintf(log,
                "experiment: %d cells in the grid (%d combinations skipped: %d with edges > users, %d edge counts of "
                "schemes without edges, %d codecs of central); %d done already, %d to run\n",
                n, combos - n, skipped_edges, skipped_repeat, skipped_codec, n_done, n_to_run);
    }
    if (rc == 0 && cfg->list_only) {
        for (int i = 0; i < n; i++)
            printf("%-32s %s\n", cells[i].name, cells[i].status == CELL_OK ? "done" : "to run");
        goto out;
    }
    if (rc == 0 && (rc = sl_make_dirs(cfg->out_dir)) == 0) {
        char cells_dir[EXP_PATH];
        snprintf(cells_dir, sizeof(cells_dir), "%s/cells", cfg->out_dir);
        rc = sl_make_dirs(cells_dir);
    }
    char *others = NULL;
    if (rc == 0) {
        int kept, dropped;
        others = other_rows(cfg, cells, n, &kept, &dropped);
        if (others == NULL) rc = sl_fail(SL_ENOMEM, "experiment: out of memory");
        if (kept) fprintf(log, "experiment: results.csv keeps %d rows of cells outside this grid (earlier invocations)\n", kept);
        if (dropped)
            fprintf(log, "experiment: results.csv drops %d rows of earlier invocations (cell folder without summary.json, "
                         "or another results.csv layout)\n", dropped);
    }
    int recorded = 0;
    if (rc == 0) rc = record_invocation(cfg, 0, n, 0, 0, 0, NULL);
    if (rc == 0) recorded = 1;
    if (rc == 0) rc = write_results(cfg, model_name, cells, n, others);

    struct sigaction sa, old_int, old_term, old_hup;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    g_stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);

    /* Data for every N that still has a cell to run. */
    for (int u = 0; u < n_users && rc == 0; u++) {
        int needed = 0;
        for (int i = 0; i < n; i++)
            if (cells[i].users == users[u] && cells[i].status != CELL_OK) needed = 1;
        if (needed) rc = ensure_data(cfg, users[u], 1, log);
    }

    sl_progress prog;
    sl_progress_start(&prog, log, "cell", n_to_run);
    const int tty = prog.p_tty;
    const double t_start = sl_now_s();
    for (int i = 0; i < n && rc == 0; i++) {
        exp_cell *c = &cells[i];
        if (c->status == CELL_OK) continue;
        if ((rc = sl_make_dirs(c->dir))) break;
        argvec a = {0};
        build_cell_args(cfg, c, &a);
        char *stamp_text = a.overflow ? NULL : args_text(a.v, 1, a.n, 1);
        sbuf line = {0};
        sb_command_line(&line, a.v, a.n);
        sb_printf(&line, "\n");
        char path[EXP_PATH + 32], log_path[EXP_PATH + 32];
        snprintf(log_path, sizeof(log_path), "%s/run.log", c->dir);
        if (stamp_text == NULL || line.oom) rc = sl_fail(SL_ENOMEM, "experiment: out of memory");
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/cell.args", c->dir);
            rc = sl_write_file_atomic(path, stamp_text, strlen(stamp_text));
        }
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/command.txt", c->dir);
            rc = sl_write_file_atomic(path, line.s, line.n);
        }
        free(stamp_text);
        free(line.s);
        if (rc) {
            av_free(&a);
            break;
        }
        if (!tty)
            fprintf(log, "cell %d/%d %s: running (log %s)\n", n_run + 1, n_to_run, c->name, log_path);
        tick_state ts = {&prog, tty, n_run, n_to_run, c->name, t_start};
        tick(&ts, 0.0);
        char why[200];
        double t0 = sl_now_s();
        child_result cr = run_child(a.v, log_path, cfg->cell_timeout_s, tick, &ts, why, sizeof(why));
        av_free(&a);
        c->cell_seconds = sl_now_s() - t0;
        if (cr == CHILD_INTERRUPTED) {
            c->cell_seconds = NAN;
            if (tty) fprintf(log, "\r\033[K");
            fprintf(log, "experiment: interrupted during %s; it runs again when the grid is resumed\n", c->name);
            rc = sl_fail(SL_ESTATE, "interrupted by signal %d", (int)g_stop_signal);
            break;
        }
        if (cr == CHILD_OK && cell_read_summary(c, cfg->batch, cfg->rounds) == 0) {
            c->status = CELL_OK;
            c->error[0] = '\0';
        } else {
            if (cr == CHILD_OK) {
                snprintf(why, sizeof(why), "no readable summary.json");
                sl_clear_error();
            }
            c->status = CELL_FAILED;
            snprintf(c->error, sizeof(c->error), "%s", why);
            for (char *p = c->error; *p; p++)
                if (*p == ',' || *p == '"' || *p == '\n') *p = ';';
            n_failed++;
        }
        if (!cfg->keep_parts) remove_part_copies(c->dir);
        n_run++;
        double elapsed = sl_now_s() - t_start;
        double eta = elapsed / n_run * (n_to_run - n_run);
        if (tty) fprintf(log, "\r\033[K");
        if (c->status == CELL_OK)
            fprintf(log, "cell %d/%d %s: ok in %.1f s (eval loss %.4f -> %.4f); elapsed %.0f s, ETA %.0f s\n", n_run,
                    n_to_run, c->name, c->cell_seconds, c->loss0, c->loss1, elapsed, eta);
        else {
            fprintf(log, "cell %d/%d %s: FAILED (%s) after %.1f s; log %s; elapsed %.0f s, ETA %.0f s\n", n_run,
                    n_to_run, c->name, c->error, c->cell_seconds, log_path, elapsed, eta);
            print_log_tail(log, log_path, 4);
        }
        if (tty && n_run < n_to_run) sl_progress_update(&prog, n_run, n_run / elapsed * 60.0, "cells/min", "");
        if ((rc = write_results(cfg, model_name, cells, n, others))) break;
    }
    if (tty) fflush(log);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);

    int n_ok = 0;
    for (int i = 0; i < n; i++) n_ok += cells[i].status == CELL_OK;
    if (rc == 0) {
        rc = write_results(cfg, model_name, cells, n, others);
        if (rc == 0 && cfg->plots) make_plots(cfg, log);
    }
    {
        int keep = rc;
        char saved[512];
        snprintf(saved, sizeof(saved), "%s", rc ? sl_last_error() : "");
        const char *status = rc ? (g_stop_signal ? "interrupted" : "error") : n_failed ? "some cells failed" : "ok";
        if (recorded && record_invocation(cfg, 1, n, n_ok, n_failed, n_run, status) && keep == 0) keep = SL_EIO;
        if (keep && saved[0]) sl_fail(keep, "%s", saved);
        rc = keep;
    }
    if (rc == 0)
        printf("experiment: %d cells: %d ok, %d failed, %d pending (%d run now, %.0f s); results %s/results.csv\n", n,
               n_ok, n_failed, n - n_ok - n_failed, n_run, sl_now_s() - t_start, cfg->out_dir);
    free(others);
out:
    for (int i = 0; i < n; i++) cell_clear_values(&cells[i]);
    free(cells);
    if (rc) return rc;
    return n_failed ? 1 : 0;
}
