/* test_run.c: the split runtime end to end, through the CLI (`splitllm prepare | run | cloud |
 * edge | user`) on stories260K and a small E2E subset:
 *   1. N=1, M=1: three tiers as threads over inproc://, and as processes over tcp loopback,
 *      give the per-step losses and the final adapter of `--scheme central` bit for bit;
 *   2. N=4, M=2: each round's global adapter is the sample-weighted average (computed here in
 *      double) of that round's user, edge and cloud-stream adapters, weights that differ, and
 *      round 2 is trained from round 1's global adapter;
 *   3. the demo setting (non-IID users, 2 edges, processes over ipc) lowers the eval loss and
 *      writes a complete summary.json;
 *   4. a peer that is not there, or that dies (SIGKILL of the cloud mid-run), ends the others
 *      with an error naming it within a bounded time, never a hang or a false success;
 *   5. malformed, truncated, replayed, out-of-order and wrong-sender messages from a raw NNG
 *      REQ socket are answered with ERROR by a live edge and cloud, and the deployment still
 *      trains to the adapter central computes, bit for bit.
 * SPLITLLM_TEST_QUICK=1 shrinks the runs (fewer rounds, less data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "model/model.h"
#include "model/optim.h"
#include "net/protocol.h"
#include "util/common.h"
#include "util/safetensors.h"

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLOW_FACTOR 4.0 /* deadlines under ASan+UBSan */
#else
#define SLOW_FACTOR 1.0
#endif

#define PATHN 512
#define MAX_STEPS 256

/* ---------------------------------------------------------------- fixture */

static struct {
    int ready;                  /* assets found and data prepared */
    int quick;
    char dir[PATHN];            /* temp folder of this run */
    char model[PATHN], tok[PATHN];
    char data1[PATHN], data4[PATHN];
    char data_ts[PATHN];        /* tiny-shakespeare, 4 users: samples of many lengths */
    int have_ts;
    int dim;
    char central[PATHN];        /* output folder of the central reference (test 1 flags) */
    int central_done;
} F;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* argv built from printf-style pieces */
typedef struct {
    int n;
    char s[80][PATHN];
    char *p[81];
} args;

static args *args_new(void) {
    args *a = calloc(1, sizeof(args));
    assert_non_null(a);
    return a;
}

static void arg(args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(args *a, const char *fmt, ...) {
    assert_true(a->n < 80);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->s[a->n], PATHN, fmt, ap);
    va_end(ap);
    a->p[a->n] = a->s[a->n];
    a->n++;
    a->p[a->n] = NULL;
}

/* Starts argv (argv[0] the binary) with stdout+stderr into log, in a process group of its
 * own so that a timeout can end it and whatever it started. */
static pid_t spawn(args *a, const char *log) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int in = open("/dev/null", O_RDONLY);
        if (in >= 0) dup2(in, 0);
        execv(a->p[0], a->p);
        _exit(127);
    }
    assert_true(pid > 0);
    setpgid(pid, pid);
    return pid;
}

/* Exit status (0..255, 128+signal), or -1 when it ran past timeout_s (then killed). */
static int wait_for(pid_t pid, double timeout_s, double *took) {
    double t0 = now_s();
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (took) *took = now_s() - t0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        }
        if (r < 0) return -2;
        if (now_s() - t0 > timeout_s) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            if (took) *took = now_s() - t0;
            return -1;
        }
        sleep_ms(20);
    }
}

/* Whether pid has not exited yet (without reaping it: wait_for still gets its status). */
static int still_running(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

static void dump_log(const char *log) {
    FILE *f = fopen(log, "r");
    if (f == NULL) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, n > 3000 ? n - 3000 : 0, SEEK_SET);
    char buf[3001];
    size_t k = fread(buf, 1, 3000, f);
    buf[k] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s (tail) ----\n%s\n----\n", log, buf);
}

/* Runs a to completion (bounded); its status, with the log printed when it is not 0. */
static int run_args(args *a, const char *name, double timeout_s, double *took) {
    char log[PATHN];
    snprintf(log, sizeof(log), "%s/%s.log", F.dir, name);
    pid_t pid = spawn(a, log);
    int st = wait_for(pid, timeout_s * SLOW_FACTOR, took);
    if (st != 0) {
        fprintf(stderr, "%s: exit status %d\n", name, st);
        dump_log(log);
    }
    return st;
}

static char *slurp(const char *path, size_t *n) {
    char *text = NULL;
    size_t bytes = 0;
    if (sl_read_file(path, &text, &bytes) != 0) return NULL;
    if (n) *n = bytes;
    return text;
}

static int log_contains(const char *name, const char *needle) {
    char log[PATHN];
    snprintf(log, sizeof(log), "%s/%s.log", F.dir, name);
    char *text = slurp(log, NULL);
    int found = text != NULL && strstr(text, needle) != NULL;
    if (!found) {
        fprintf(stderr, "%s does not contain '%s'\n", log, needle);
        dump_log(log);
    }
    sl_free(text);
    return found;
}

/* An error exit must be the program's own, not a sanitizer's (AddressSanitizer, LeakSanitizer
 * on an error path, UBSan): their reports never appear in a log. */
static int log_clean(const char *name) {
    char log[PATHN];
    snprintf(log, sizeof(log), "%s/%s.log", F.dir, name);
    char *text = slurp(log, NULL);
    int clean = text != NULL && strstr(text, "Sanitizer") == NULL && strstr(text, "runtime error:") == NULL;
    if (!clean) dump_log(log);
    sl_free(text);
    return clean;
}

/* A message about a peer that did not answer in time (the link's or a tier's wording). */
static int log_says_timeout(const char *name) {
    char log[PATHN];
    snprintf(log, sizeof(log), "%s/%s.log", F.dir, name);
    char *text = slurp(log, NULL);
    int found = text != NULL && (strstr(text, "no reply") || strstr(text, "timed out") || strstr(text, "timeout") ||
                                 strstr(text, "did not"));
    if (!found) dump_log(log);
    sl_free(text);
    return found;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int eq = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;
    sl_free(x);
    sl_free(y);
    return eq;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A base port such that base..base+n-1 can be bound on 127.0.0.1 now. */
static int free_ports(int n) {
    static int next;
    if (next == 0) next = 20000 + (int)((unsigned)getpid() * 7u % 30000u);
    for (int attempt = 0; attempt < 200; attempt++) {
        int base = next;
        next += n + 3;
        if (next > 60000) next = 20000;
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in sa = {0};
            sa.sin_family = AF_INET;
            sa.sin_port = htons((uint16_t)(base + i));
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
            if (fd >= 0) close(fd);
        }
        if (ok) return base;
    }
    fail_msg("no free tcp ports on 127.0.0.1");
    return 0;
}

static void add_prepare(args *a, const char *input, const char *format, const char *out, int users,
                        const char *partition) {
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "prepare");
    arg(a, "--tokenizer");
    arg(a, "%s", F.tok);
    arg(a, "--input");
    arg(a, "%s", input);
    arg(a, "--format");
    arg(a, "%s", format);
    arg(a, "--max-seq");
    arg(a, "128");
    arg(a, "--users");
    arg(a, "%d", users);
    arg(a, "--partition");
    arg(a, "%s", partition);
    arg(a, "--out");
    arg(a, "%s", out);
}

static int group_setup(void **state) {
    (void)state;
    memset(&F, 0, sizeof(F));
    const char *q = getenv("SPLITLLM_TEST_QUICK");
    F.quick = q != NULL && q[0] != '\0' && strcmp(q, "0") != 0;
    const char *model = test_asset("models/stories260K/stories260K.bin");
    const char *tok = test_asset("models/stories260K/tok512.bin");
    const char *csv = test_asset("datasets/e2e_devset.csv");
    if (model == NULL || tok == NULL || csv == NULL) return 0; /* tests skip */
    snprintf(F.model, PATHN, "%s", model);
    snprintf(F.tok, PATHN, "%s", tok);
    snprintf(F.dir, PATHN, "/tmp/splitllm-test-run-XXXXXX");
    if (mkdtemp(F.dir) == NULL) return -1;
    sl_model m;
    if (sl_model_load(&m, F.model) != 0) return -1;
    F.dim = m.config.dim;
    sl_model_free(&m);
    /* the first lines of the E2E dev set: enough for a few steps on every user */
    char subset[PATHN];
    snprintf(subset, PATHN, "%s/e2e.csv", F.dir);
    FILE *in = fopen(csv, "r"), *out = fopen(subset, "w");
    if (in == NULL || out == NULL) return -1;
    char line[8192];
    for (int i = 0; i < (F.quick ? 260 : 400) && fgets(line, sizeof(line), in); i++) fputs(line, out);
    fclose(in);
    fclose(out);
    snprintf(F.data1, PATHN, "%s/data1", F.dir);
    snprintf(F.data4, PATHN, "%s/data4", F.dir);
    args *a = args_new();
    add_prepare(a, subset, "e2e", F.data1, 1, "iid");
    int st = run_args(a, "prepare1", 60, NULL);
    free(a);
    if (st != 0) return -1;
    a = args_new();
    add_prepare(a, subset, "e2e", F.data4, 4, "dirichlet");
    arg(a, "--key");
    arg(a, "eatType");
    arg(a, "--alpha");
    arg(a, "0.5");
    arg(a, "--seed");
    arg(a, "1");
    st = run_args(a, "prepare4", 60, NULL);
    free(a);
    if (st != 0) return -1;
    /* speeches of tiny-shakespeare vary in length, so packed batches of different users hold
     * different numbers of samples: the FedAvg weights differ */
    const char *ts = test_asset("datasets/tinyshakespeare.txt");
    if (ts != NULL) {
        snprintf(subset, PATHN, "%s/shakespeare.txt", F.dir);
        in = fopen(ts, "r");
        out = fopen(subset, "w");
        if (in == NULL || out == NULL) return -1;
        for (int i = 0; i < 1000 && fgets(line, sizeof(line), in); i++) fputs(line, out);
        fclose(in);
        fclose(out);
        snprintf(F.data_ts, PATHN, "%s/data_ts", F.dir);
        a = args_new();
        add_prepare(a, subset, "text", F.data_ts, 4, "iid");
        st = run_args(a, "prepare_ts", 60, NULL);
        free(a);
        if (st != 0) return -1;
        F.have_ts = 1;
    }
    snprintf(F.central, PATHN, "%s/central", F.dir);
    F.ready = 1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (F.dir[0] != '\0' && getenv("SPLITLLM_TEST_KEEP") == NULL) {
        char cmd[PATHN + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", F.dir);
    }
    return 0;
}

#define NEED_ASSETS()                                                                                                \
    do {                                                                                                             \
        if (!F.ready) {                                                                                              \
            fprintf(stderr, "stories260K / tok512 / e2e_devset.csv not found: skipped\n");                          \
            skip();                                                                                                  \
        }                                                                                                            \
    } while (0)

/* ---------------------------------------------------------------- flags of the runs */

static int rounds_1(void) { return F.quick ? 2 : 3; }

/* The N=1, M=1 configuration of test 1 (also the reference of tests 4 and 5). */
static void add_flags_1(args *a) {
    const char *fixed[] = {"--users", "1", "--edges", "1", "--cuts", "2,4", "--local-steps", "2", "--batch", "4",
                           "--seq", "128", "--lora-targets", "all", "--lora-dropout", "0.1", "--grad-clip", "1",
                           "--seed", "1337", "--lr", "0.001"};
    arg(a, "--model");
    arg(a, "%s", F.model);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) arg(a, "%s", fixed[i]);
    arg(a, "--rounds");
    arg(a, "%d", rounds_1());
}

static void add_run(args *a, const char *out, const char *data) {
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "run");
    arg(a, "--out");
    arg(a, "%s", out);
    arg(a, "--data");
    arg(a, "%s", data);
    arg(a, "--eval-batches");
    arg(a, "2");
}

/* The central reference with test 1's flags, run once. */
static void ensure_central(void) {
    if (F.central_done) return;
    args *a = args_new();
    add_run(a, F.central, F.data1);
    add_flags_1(a);
    arg(a, "--scheme");
    arg(a, "central");
    double took = 0;
    assert_int_equal(run_args(a, "central", 120, &took), 0);
    free(a);
    fprintf(stderr, "  central reference: %.1f s\n", took);
    F.central_done = 1;
}

/* ---------------------------------------------------------------- metrics.jsonl */

typedef struct {
    int round, step, stream;
    char loss[48]; /* the text printed with %.9g: equal text <=> equal float */
} step_loss;

static int cmp_step(const void *pa, const void *pb) {
    const step_loss *a = pa, *b = pb;
    if (a->round != b->round) return a->round - b->round;
    if (a->step != b->step) return a->step - b->step;
    return a->stream - b->stream;
}

static int num_field(const cJSON *j, const char *name, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : dflt;
}

/* The per-step losses that tier wrote in dir/metrics.jsonl, in (round, step, stream) order. */
static int read_step_losses(const char *dir, const char *tier, step_loss *out, int max) {
    char path[PATHN];
    snprintf(path, PATHN, "%s/metrics.jsonl", dir);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    int n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tier");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(j, "loss");
        if (cJSON_IsString(t) && strcmp(t->valuestring, tier) == 0 && cJSON_IsNumber(loss) &&
            cJSON_GetObjectItemCaseSensitive(j, "step") != NULL) {
            assert_true(n < max);
            step_loss *s = &out[n++];
            s->round = num_field(j, "round", 0);
            s->step = num_field(j, "step", 0);
            s->stream = num_field(j, "stream", 0);
            const char *p = strstr(line, "\"loss\":");
            assert_non_null(p);
            p += strlen("\"loss\":");
            size_t k = strcspn(p, ",}");
            assert_true(k > 0 && k < sizeof(s->loss));
            memcpy(s->loss, p, k);
            s->loss[k] = '\0';
        }
        cJSON_Delete(j);
    }
    sl_free(text);
    qsort(out, (size_t)n, sizeof(*out), cmp_step);
    return n;
}

/* The cloud's per-round line of round r (a cJSON the caller deletes), or NULL. */
static cJSON *read_round_line(const char *dir, int r) {
    char path[PATHN];
    snprintf(path, PATHN, "%s/metrics.jsonl", dir);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    cJSON *found = NULL;
    for (char *line = strtok(text, "\n"); line != NULL && found == NULL; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        if (cJSON_GetObjectItemCaseSensitive(j, "streams") != NULL && num_field(j, "round", -1) == r)
            found = j;
        else
            cJSON_Delete(j);
    }
    sl_free(text);
    return found;
}

/* The split run in dir has the losses of central, step for step, as the same float. */
static void assert_losses_match_central(const char *dir) {
    static step_loss c[MAX_STEPS], s[MAX_STEPS];
    int nc = read_step_losses(F.central, "central", c, MAX_STEPS);
    int ns = read_step_losses(dir, "cloud", s, MAX_STEPS);
    assert_int_equal(nc, rounds_1() * 2);
    assert_int_equal(ns, nc);
    for (int i = 0; i < nc; i++) {
        assert_int_equal(c[i].step, i + 1);
        assert_int_equal(s[i].round, i / 2 + 1);
        assert_int_equal(s[i].step, i % 2);
        if (strcmp(c[i].loss, s[i].loss) != 0)
            fail_msg("step %d (round %d step %d): central loss %s, split loss %s", i + 1, s[i].round, s[i].step,
                     c[i].loss, s[i].loss);
    }
}

static void assert_adapter_matches_central(const char *dir) {
    char a[PATHN], b[PATHN];
    snprintf(a, PATHN, "%s/lora.safetensors", F.central);
    snprintf(b, PATHN, "%s/lora.safetensors", dir);
    if (!files_equal(a, b)) fail_msg("%s differs from %s", b, a);
}

/* ---------------------------------------------------------------- 1. equivalence with central */

static void test_n1_m1_equals_central(void **state) {
    (void)state;
    NEED_ASSETS();
    ensure_central();
    /* (a) threads over inproc */
    char out[PATHN];
    snprintf(out, PATHN, "%s/threads", F.dir);
    args *a = args_new();
    add_run(a, out, F.data1);
    add_flags_1(a);
    double took = 0;
    assert_int_equal(run_args(a, "run_threads", 120, &took), 0);
    free(a);
    fprintf(stderr, "  threads over inproc: %.1f s\n", took);
    assert_losses_match_central(out);
    assert_adapter_matches_central(out);
    /* (b) processes over tcp loopback */
    snprintf(out, PATHN, "%s/tcp", F.dir);
    a = args_new();
    add_run(a, out, F.data1);
    add_flags_1(a);
    arg(a, "--processes");
    arg(a, "--transport");
    arg(a, "tcp");
    arg(a, "--base-port");
    arg(a, "%d", free_ports(2));
    arg(a, "--timeout-ms");
    arg(a, "%d", (int)(20000 * SLOW_FACTOR));
    assert_int_equal(run_args(a, "run_tcp", 120, &took), 0);
    free(a);
    fprintf(stderr, "  processes over tcp: %.1f s\n", took);
    assert_losses_match_central(out);
    assert_adapter_matches_central(out);
    char path[PATHN];
    snprintf(path, PATHN, "%s/summary.json", out);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    cJSON *s = cJSON_Parse(text);
    sl_free(text);
    assert_non_null(s);
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(s, "mode");
    const cJSON *transport = cJSON_GetObjectItemCaseSensitive(s, "transport");
    assert_true(cJSON_IsString(mode) && strcmp(mode->valuestring, "processes") == 0);
    assert_true(cJSON_IsString(transport) && strcmp(transport->valuestring, "tcp") == 0);
    cJSON_Delete(s);
}

/* ---------------------------------------------------------------- 2. FedAvg of a round */

typedef struct {
    sl_st_reader *user, *edge, *cloud;
    double w;
    int user_id;
} round_source;

static sl_st_reader *open_st(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static sl_st_reader *open_st(const char *fmt, ...) {
    char path[PATHN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, PATHN, fmt, ap);
    va_end(ap);
    sl_st_reader *r = NULL;
    if (sl_st_open(&r, path) != 0) fail_msg("%s", sl_last_error());
    return r;
}

static float *tensor_f32(const sl_st_tensor *t) {
    float *x = malloc(t->t_numel * sizeof(float) + 1);
    assert_non_null(x);
    assert_int_equal(sl_st_to_f32(t, x), 0);
    return x;
}

static int layer_of(const char *name) {
    int layer = -1;
    assert_int_equal(sscanf(name, "lora.%d.", &layer), 1);
    return layer;
}

static int is_b(const char *name) {
    size_t n = strlen(name);
    return n > 2 && strcmp(name + n - 2, ".B") == 0;
}

/* Largest |x - y| over the tensors of a that b also holds (every one of a must be in b). */
static double max_abs_diff(const sl_st_reader *a, const sl_st_reader *b, double *max_abs_b_of_a) {
    double d = 0.0, mb = 0.0;
    for (size_t i = 0; i < sl_st_count(a); i++) {
        const sl_st_tensor *ta = sl_st_tensor_at(a, i);
        const sl_st_tensor *tb = sl_st_lookup(b, ta->t_name);
        assert_non_null(tb);
        assert_int_equal(ta->t_numel, tb->t_numel);
        float *x = tensor_f32(ta), *y = tensor_f32(tb);
        for (size_t j = 0; j < ta->t_numel; j++) {
            d = fmax(d, fabs((double)x[j] - (double)y[j]));
            if (is_b(ta->t_name)) mb = fmax(mb, fabs((double)x[j]));
        }
        free(x);
        free(y);
    }
    if (max_abs_b_of_a) *max_abs_b_of_a = mb;
    return d;
}

static void test_n4_m2_fedavg(void **state) {
    (void)state;
    NEED_ASSETS();
    if (!F.have_ts) {
        fprintf(stderr, "datasets/tinyshakespeare.txt not found: skipped\n");
        skip();
    }
    const int R = 2, E = 2, C1 = 2, C2 = 4;
    char out[PATHN];
    snprintf(out, PATHN, "%s/fedavg", F.dir);
    args *a = args_new();
    add_run(a, out, F.data_ts);
    const char *fixed[] = {"--users", "4", "--edges", "2", "--cuts", "2,4", "--rounds", "2", "--local-steps", "2",
                           "--batch", "4", "--seq", "128", "--packing", "--lora-targets", "all", "--lr", "0.001",
                           "--warmup", "0", "--weight-decay", "0.01", "--grad-clip", "1", "--seed", "7"};
    arg(a, "--model");
    arg(a, "%s", F.model);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) arg(a, "%s", fixed[i]);
    double took = 0;
    assert_int_equal(run_args(a, "run_fedavg", 120, &took), 0);
    free(a);
    fprintf(stderr, "  N=4 M=2 threads: %.1f s\n", took);

    int unequal_weights = 0;
    sl_st_reader *global[3] = {NULL, NULL, NULL};
    round_source src[3][2];
    memset(src, 0, sizeof(src));
    for (int r = 1; r <= R; r++) {
        cJSON *line = read_round_line(out, r);
        assert_non_null(line);
        const cJSON *streams = cJSON_GetObjectItemCaseSensitive(line, "streams");
        assert_true(cJSON_IsArray(streams));
        assert_int_equal(cJSON_GetArraySize(streams), 2);
        char rdir[PATHN];
        snprintf(rdir, PATHN, "%s/rounds/r%03d", out, r);
        double total = 0.0;
        for (int k = 0; k < 2; k++) {
            const cJSON *s = cJSON_GetArrayItem(streams, k);
            /* the edge is "client" (or "edge" in the first format) */
            int e = num_field(s, "client", num_field(s, "edge", -1));
            int u = num_field(s, "user", -1);
            assert_int_equal(e, k);
            assert_true(u >= 0 && u < 4);
            assert_int_equal(u % 2, e); /* default assignment: user mod M */
            assert_int_equal(u, e + 2 * (r - 1)); /* round-robin over the edge's users */
            round_source *rs = &src[r][k];
            rs->user_id = u;
            rs->w = (double)num_field(s, "samples", -1);
            assert_true(rs->w > 0);
            total += rs->w;
            rs->user = open_st("%s/user_%03d.safetensors", rdir, u);
            rs->edge = open_st("%s/edge_%d.safetensors", rdir, e);
            rs->cloud = open_st("%s/cloud_stream_%d.safetensors", rdir, e);
        }
        cJSON_Delete(line);
        if (src[r][0].w != src[r][1].w) unequal_weights = 1;
        global[r] = open_st("%s/global.safetensors", rdir);
        const size_t n_global = sl_st_count(global[r]);
        size_t checked = 0;
        double worst = 0.0;
        for (int k = 0; k < 2; k++) /* each tier's file holds exactly its blocks */
            assert_int_equal(sl_st_count(src[r][k].user) + sl_st_count(src[r][k].edge) + sl_st_count(src[r][k].cloud),
                             n_global);
        for (size_t i = 0; i < n_global; i++) {
            const sl_st_tensor *g = sl_st_tensor_at(global[r], i);
            const int layer = layer_of(g->t_name);
            float *gv = tensor_f32(g);
            float *xs[2];
            for (int k = 0; k < 2; k++) {
                const sl_st_reader *from = layer < C1 ? src[r][k].user : layer < C2 ? src[r][k].edge : src[r][k].cloud;
                const sl_st_tensor *t = sl_st_lookup(from, g->t_name);
                if (t == NULL) fail_msg("round %d: %s is not in %s", r, g->t_name, sl_st_path(from));
                assert_int_equal(t->t_numel, g->t_numel);
                xs[k] = tensor_f32(t);
            }
            for (size_t j = 0; j < g->t_numel; j++) {
                double want = 0.0, scale = 0.0;
                for (int k = 0; k < 2; k++) {
                    want += src[r][k].w / total * (double)xs[k][j];
                    scale += src[r][k].w / total * fabs((double)xs[k][j]);
                }
                double err = fabs((double)gv[j] - want);
                if (err > 1e-6 * scale + 1e-30)
                    fail_msg("round %d %s[%zu]: global %.9g, weighted average %.9g (weights %g, %g)", r, g->t_name, j,
                             (double)gv[j], want, src[r][0].w, src[r][1].w);
                if (scale > 0) worst = fmax(worst, err / scale);
                checked++;
            }
            for (int k = 0; k < 2; k++) free(xs[k]);
            free(gv);
        }
        fprintf(stderr, "  round %d: global = average weighted %g:%g of users %d,%d (%zu values, worst rel. err %.2g)\n",
                r, src[r][0].w, src[r][1].w, src[r][0].user_id, src[r][1].user_id, checked, worst);
        /* the average is not trivial: the two users' (and edges', streams') adapters differ */
        assert_true(max_abs_diff(src[r][0].user, src[r][1].user, NULL) > 0.0);
        assert_true(max_abs_diff(src[r][0].edge, src[r][1].edge, NULL) > 0.0);
        assert_true(max_abs_diff(src[r][0].cloud, src[r][1].cloud, NULL) > 0.0);
    }
    /* packing makes the samples of a batch depend on the user's data: the weights differ */
    assert_true(unequal_weights);
    /* The final adapter is the last global one. */
    char p1[PATHN], p2[PATHN];
    snprintf(p1, PATHN, "%s/lora.safetensors", out);
    snprintf(p2, PATHN, "%s/rounds/r%03d/global.safetensors", out, R);
    assert_true(files_equal(p1, p2));
    /* Round 2 starts from round 1's global adapter. Users 2 and 3 train first in round 2, with
     * fresh AdamW state: within E=2 steps no element moves by more than the sum of the step
     * learning rates (|m_hat/sqrt(v_hat)| <= 1.0014 for t <= 2, plus weight decay). So every
     * element of their round-2 adapter lies within that bound of round 1's global adapter —
     * and the B matrices, zero at initialisation, reach beyond it, which a start from the
     * initial adapter could not. */
    sl_adamw_config oc = sl_adamw_defaults();
    oc.lr = 0.001f;
    oc.warmup_steps = 0;
    oc.weight_decay = 0.01f;
    oc.total_steps = R * E;
    double bound = 0.0;
    for (int s = 0; s < E; s++) bound += (double)sl_adamw_lr(&oc, s) * (1.002 + oc.weight_decay * 1.0);
    bound += 1e-6; /* float rounding of values below 1 */
    for (int k = 0; k < 2; k++) {
        double max_b = 0.0;
        double d = max_abs_diff(src[2][k].user, global[1], &max_b);
        fprintf(stderr, "  round 2 user %d: max |x - global r1| %.3g <= %.3g < max |B| %.3g\n", src[2][k].user_id, d,
                bound, max_b);
        assert_true(d > 0.0);
        assert_true(d <= bound);
        assert_true(max_b > bound);
        /* the edge's and the cloud stream's round-2 adapters were trained too */
        assert_true(max_abs_diff(src[2][k].edge, global[1], NULL) > 0.0);
        assert_true(max_abs_diff(src[2][k].cloud, global[1], NULL) > 0.0);
    }
    for (int r = 1; r <= R; r++) {
        sl_st_close(global[r]);
        for (int k = 0; k < 2; k++) {
            sl_st_close(src[r][k].user);
            sl_st_close(src[r][k].edge);
            sl_st_close(src[r][k].cloud);
        }
    }
}

/* ---------------------------------------------------------------- 3. demo setting */

static double json_num(const cJSON *j, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsNumber(v)) fail_msg("summary.json: '%s' missing or not a number", name);
    return v->valuedouble;
}

static void test_demo_eval_loss_decreases(void **state) {
    (void)state;
    NEED_ASSETS();
    const int R = F.quick ? 2 : 3;
    char out[PATHN];
    snprintf(out, PATHN, "%s/demo", F.dir);
    args *a = args_new();
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "run");
    arg(a, "--out");
    arg(a, "%s", out);
    arg(a, "--data");
    arg(a, "%s", F.data4);
    arg(a, "--model");
    arg(a, "%s", F.model);
    arg(a, "--tokenizer");
    arg(a, "%s", F.tok);
    const char *fixed[] = {"--users", "4", "--edges", "2", "--cuts", "1,3", "--local-steps", "3", "--batch", "4",
                           "--seq", "128", "--lr", "0.002", "--processes", "--transport", "ipc"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) arg(a, "%s", fixed[i]);
    arg(a, "--rounds");
    arg(a, "%d", R);
    arg(a, "--timeout-ms");
    arg(a, "%d", (int)(20000 * SLOW_FACTOR));
    double took = 0;
    assert_int_equal(run_args(a, "run_demo", 180, &took), 0);
    free(a);
    char path[PATHN];
    snprintf(path, PATHN, "%s/summary.json", out);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    cJSON *s = cJSON_Parse(text);
    sl_free(text);
    assert_non_null(s);
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(s, "scheme");
    assert_true(cJSON_IsString(scheme) && strcmp(scheme->valuestring, "splitllm") == 0);
    assert_int_equal((int)json_num(s, "users"), 4);
    assert_int_equal((int)json_num(s, "edges"), 2);
    assert_int_equal((int)json_num(s, "rounds"), R);
    double e0 = json_num(s, "eval_loss_initial"), e1 = json_num(s, "eval_loss_final");
    fprintf(stderr, "  demo (%d rounds, processes over ipc): eval loss %.4f -> %.4f, %.1f s\n", R, e0, e1, took);
    assert_true(isfinite(e0) && isfinite(e1));
    assert_true(e1 < e0);
    const cJSON *rss = cJSON_GetObjectItemCaseSensitive(s, "peak_rss_bytes");
    assert_true(cJSON_IsObject(rss));
    assert_true(json_num(rss, "user") > 0);
    assert_true(json_num(rss, "edge") > 0);
    assert_true(json_num(rss, "cloud") > 0);
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(s, "bytes");
    assert_true(cJSON_IsObject(bytes));
    assert_true(json_num(bytes, "user_edge") > 0);
    assert_true(json_num(bytes, "edge_cloud") > 0);
    assert_true(json_num(s, "wall_seconds") > 0);
    cJSON_Delete(s);
    snprintf(path, PATHN, "%s/lora.safetensors", out);
    assert_true(file_exists(path));
}

/* ---------------------------------------------------------------- 4. peers that stop answering */

static void add_tier_cloud(args *a, const char *out, int port, int timeout_ms, int rounds) {
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "cloud");
    arg(a, "--listen");
    arg(a, "tcp://127.0.0.1:%d", port);
    arg(a, "--out");
    arg(a, "%s", out);
    add_flags_1(a);
    arg(a, "--rounds"); /* the later --rounds wins */
    arg(a, "%d", rounds);
    arg(a, "--timeout-ms");
    arg(a, "%d", timeout_ms);
    arg(a, "--report");
    arg(a, "%s/cloud-report.json", out);
}

static void add_tier_edge(args *a, const char *cache, int cloud_port, int port, int timeout_ms) {
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "edge");
    arg(a, "--id");
    arg(a, "0");
    arg(a, "--cloud");
    arg(a, "tcp://127.0.0.1:%d", cloud_port);
    arg(a, "--listen");
    arg(a, "tcp://127.0.0.1:%d", port);
    arg(a, "--cache");
    arg(a, "%s", cache);
    arg(a, "--timeout-ms");
    arg(a, "%d", timeout_ms);
}

static void add_tier_user(args *a, const char *cache, int edge_port, int timeout_ms) {
    arg(a, "%s", SPLITLLM_BIN);
    arg(a, "user");
    arg(a, "--id");
    arg(a, "0");
    arg(a, "--edge");
    arg(a, "tcp://127.0.0.1:%d", edge_port);
    arg(a, "--data");
    arg(a, "%s/user_000.shard", F.data1);
    arg(a, "--cache");
    arg(a, "%s", cache);
    arg(a, "--timeout-ms");
    arg(a, "%d", timeout_ms);
}

static void test_absent_peer_times_out(void **state) {
    (void)state;
    NEED_ASSETS();
    const int port = free_ports(2); /* nobody listens on port or port+1 */
    char cache[PATHN], url[64];
    double took = 0;
    /* a user whose edge is not there */
    snprintf(cache, PATHN, "%s/absent-user", F.dir);
    args *a = args_new();
    add_tier_user(a, cache, port, 500);
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    char log[PATHN];
    snprintf(log, PATHN, "%s/absent_user.log", F.dir);
    int st = wait_for(spawn(a, log), 60, &took);
    free(a);
    fprintf(stderr, "  user without an edge: exit %d after %.2f s\n", st, took);
    assert_true(st > 0 && st < 128);
    assert_true(took < 10.0 * SLOW_FACTOR);
    assert_true(log_clean("absent_user"));
    assert_true(log_contains("absent_user", url));
    assert_true(log_says_timeout("absent_user"));
    /* an edge whose cloud is not there */
    snprintf(cache, PATHN, "%s/absent-edge", F.dir);
    a = args_new();
    add_tier_edge(a, cache, port, port + 1, 500);
    snprintf(log, PATHN, "%s/absent_edge.log", F.dir);
    st = wait_for(spawn(a, log), 60, &took);
    free(a);
    fprintf(stderr, "  edge without a cloud: exit %d after %.2f s\n", st, took);
    assert_true(st > 0 && st < 128);
    assert_true(took < 10.0 * SLOW_FACTOR);
    assert_true(log_clean("absent_edge"));
    assert_true(log_contains("absent_edge", url));
    assert_true(log_contains("absent_edge", "cloud"));
    assert_true(log_says_timeout("absent_edge"));
}

/* Waits (bounded) until the cloud in out has finished round 1. */
static int wait_round_done(const char *out, double timeout_s) {
    double t0 = now_s();
    char path[PATHN];
    snprintf(path, PATHN, "%s/metrics.jsonl", out);
    while (now_s() - t0 < timeout_s) {
        char *text = slurp(path, NULL);
        int done = text != NULL && strstr(text, "\"streams\"") != NULL;
        sl_free(text);
        if (done) return 1;
        sleep_ms(50);
    }
    return 0;
}

static void test_killed_cloud_ends_edge_and_user(void **state) {
    (void)state;
    NEED_ASSETS();
    const int port = free_ports(2), T = SLOW_FACTOR > 1 ? 3000 : 2000;
    char out[PATHN], ecache[PATHN], ucache[PATHN], log[PATHN];
    snprintf(out, PATHN, "%s/kill-cloud", F.dir);
    snprintf(ecache, PATHN, "%s/kill-edge", F.dir);
    snprintf(ucache, PATHN, "%s/kill-user", F.dir);
    args *a = args_new();
    add_tier_cloud(a, out, port, T, 50);
    snprintf(log, PATHN, "%s/kill_cloud.log", F.dir);
    pid_t cloud = spawn(a, log);
    free(a);
    a = args_new();
    add_tier_edge(a, ecache, port, port + 1, T);
    snprintf(log, PATHN, "%s/kill_edge.log", F.dir);
    pid_t edge = spawn(a, log);
    free(a);
    a = args_new();
    add_tier_user(a, ucache, port + 1, T);
    snprintf(log, PATHN, "%s/kill_user.log", F.dir);
    pid_t user = spawn(a, log);
    free(a);
    int started = wait_round_done(out, 60 * SLOW_FACTOR);
    assert_true(still_running(cloud));
    kill(cloud, SIGKILL); /* mid-run: 50 rounds were asked for */
    int cst = wait_for(cloud, 10, NULL);
    double t_edge = 0, t_user = 0;
    /* the edge: at most 3 tries of (send + receive timeout) on a request, then it tells its
     * user and waits up to T for it; the user: the same on its own link */
    const double bound = 15.0 * T / 1000.0 + 5.0;
    int est = wait_for(edge, bound, &t_edge);
    int ust = wait_for(user, bound, &t_user);
    fprintf(stderr, "  cloud killed after round 1: edge exit %d after %.1f s, user exit %d after %.1f s (bound %.0f s)\n",
            est, t_edge, ust, t_edge + t_user, bound);
    if (!started || est <= 0 || est >= 128 || ust <= 0 || ust >= 128) {
        snprintf(log, PATHN, "%s/kill_cloud.log", F.dir);
        dump_log(log);
        snprintf(log, PATHN, "%s/kill_edge.log", F.dir);
        dump_log(log);
        snprintf(log, PATHN, "%s/kill_user.log", F.dir);
        dump_log(log);
    }
    assert_true(started);
    assert_int_equal(cst, 128 + SIGKILL);
    assert_true(est > 0 && est < 128); /* an error exit, not a hang (-1) or a crash */
    assert_true(ust > 0 && ust < 128);
    char cloud_url[64], edge_url[64];
    snprintf(cloud_url, sizeof(cloud_url), "cloud at tcp://127.0.0.1:%d", port);
    snprintf(edge_url, sizeof(edge_url), "tcp://127.0.0.1:%d", port + 1);
    assert_true(log_clean("kill_edge"));
    assert_true(log_clean("kill_user"));
    assert_true(log_contains("kill_edge", cloud_url));
    assert_true(log_says_timeout("kill_edge"));
    assert_true(log_contains("kill_user", edge_url));
}

/* ---------------------------------------------------------------- 5. hostile messages */

typedef struct {
    nng_socket s;
} raw_req;

static void raw_open(raw_req *q, int port, int timeout_ms) {
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    assert_int_equal(nng_req0_open(&q->s), 0);
    assert_int_equal(nng_socket_set_ms(q->s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    assert_int_equal(nng_socket_set_ms(q->s, NNG_OPT_SENDTIMEO, timeout_ms), 0);
    assert_int_equal(nng_socket_set_ms(q->s, NNG_OPT_RECVTIMEO, timeout_ms), 0);
    assert_int_equal(nng_dial(q->s, url, NULL, NNG_FLAG_NONBLOCK), 0);
}

/* Sends bytes as they are; the reply's bytes (sl_alloc'd, 64-byte aligned) or NULL on a
 * timeout. */
static uint8_t *raw_call(raw_req *q, const void *bytes, size_t n, size_t *reply_n) {
    if (nng_send(q->s, (void *)bytes, n, 0) != 0) return NULL;
    void *buf = NULL;
    size_t sz = 0;
    if (nng_recv(q->s, &buf, &sz, NNG_FLAG_ALLOC) != 0) return NULL;
    uint8_t *copy = sl_alloc(sz + 1);
    assert_non_null(copy);
    memcpy(copy, buf, sz);
    nng_free(buf, sz);
    *reply_n = sz;
    return copy;
}

/* Sends bytes; the reply must be a well-formed ERROR. Returns its text in text. */
static void expect_error(raw_req *q, const void *bytes, size_t n, const char *what, char *text, size_t text_n) {
    size_t rn = 0;
    uint8_t *rep = raw_call(q, bytes, n, &rn);
    if (rep == NULL) fail_msg("%s: no reply", what);
    static sl_msg m;
    if (sl_msg_decode(&m, rep, rn, SL_MSG_MAX_BYTES_DEFAULT, "reply") != 0) fail_msg("%s: %s", what, sl_last_error());
    if (m.m_header.h_type != SL_MSG_ERROR)
        fail_msg("%s: answered %s, expected ERROR", what, sl_msg_type_name(m.m_header.h_type));
    char buf[1024];
    sl_msg_error_text(&m, buf, sizeof(buf));
    if (text) snprintf(text, text_n, "%s", buf);
    sl_free(rep);
}

static uint8_t *encode(sl_msg *m, sl_tier tier, uint32_t sender, uint64_t seq, size_t *n) {
    sl_msg_set_sender(m, tier, sender, seq);
    uint8_t *buf = NULL;
    assert_int_equal(sl_msg_encode(m, &buf, n), 0);
    return buf;
}

static uint8_t *part_chunk(const char *part, uint64_t *offset, sl_tier tier, uint32_t sender, uint64_t seq,
                           size_t *n) {
    sl_msg m;
    sl_msg_init(&m, SL_MSG_PART_CHUNK, 0, 0, 0);
    uint32_t shape[1] = {(uint32_t)strlen(part)};
    assert_int_equal(sl_msg_add(&m, "part", SL_DTYPE_U8, 1, shape, part), 0);
    assert_int_equal(sl_msg_add(&m, "offset", SL_DTYPE_U64, 0, NULL, offset), 0);
    uint8_t *buf = encode(&m, tier, sender, seq, n);
    sl_msg_release(&m);
    return buf;
}

/* A FORWARD of round 1 step 0 on stream 0 with the right shapes. */
static uint8_t *forward_msg(sl_tier tier, uint32_t sender, uint64_t seq, size_t *n) {
    const uint32_t B = 4, T = 128, C = (uint32_t)F.dim;
    float *act = calloc((size_t)B * T * C, sizeof(float));
    int32_t *targets = calloc((size_t)B * T, sizeof(int32_t));
    uint8_t *mask = calloc((size_t)B * T, 1);
    assert_true(act && targets && mask);
    for (size_t i = 0; i < (size_t)B * T * C; i++) act[i] = (float)((i % 13) - 6) * 0.1f;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        targets[i] = (int32_t)(i % 100) + 3;
        mask[i] = 1;
    }
    sl_msg m;
    sl_msg_init(&m, SL_MSG_FORWARD, 1, 0, 0);
    uint32_t ashape[3] = {B, T, C}, tshape[2] = {B, T};
    assert_int_equal(sl_msg_add(&m, "act", SL_DTYPE_F32, 3, ashape, act), 0);
    assert_int_equal(sl_msg_add(&m, "targets", SL_DTYPE_I32, 2, tshape, targets), 0);
    assert_int_equal(sl_msg_add(&m, "mask", SL_DTYPE_U8, 2, tshape, mask), 0);
    uint8_t *buf = encode(&m, tier, sender, seq, n);
    sl_msg_release(&m);
    free(act);
    free(targets);
    free(mask);
    return buf;
}

/* Malformed bytes of every kind: each answered with ERROR. */
static void send_malformed(raw_req *q, const char *server, uint32_t sender) {
    char what[128];
    uint8_t junk[100];
    for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(0xA5 ^ (i * 29));
    snprintf(what, sizeof(what), "%s: 100 bytes of junk", server);
    expect_error(q, junk, sizeof(junk), what, NULL, 0);
    snprintf(what, sizeof(what), "%s: an empty message", server);
    expect_error(q, junk, 0, what, NULL, 0);
    uint64_t offset = 0;
    size_t n = 0;
    uint8_t *good = part_chunk("user", &offset, SL_TIER_USER, sender, 100, &n);
    uint8_t *bad = malloc(n + 16);
    assert_non_null(bad);
    struct {
        const char *what;
        size_t at;     /* byte to change (n: none) */
        uint8_t value;
        size_t length; /* bytes sent */
    } cases[] = {
        {"shorter than a header", n, 0, 30},
        {"truncated payload", n, 0, n - 5},
        {"8 bytes appended", n, 0, n + 8},
        {"wrong magic", 0, 'X', n},
        {"version 9", 4, 9, n},
        {"unknown type 99", 6, 99, n},
        {"unknown sender tier", 24, 7, n},
        {"a reserved byte set", 26, 1, n},
        {"an unknown flag", 28, 1, n},
        {"payload length off by one", 40, 0, n},
        {"a flipped payload byte (checksum)", n - 1, 0, n},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        memset(bad, 0, n + 16);
        memcpy(bad, good, n);
        if (cases[c].at < n) {
            if (cases[c].at == 40) bad[40] = (uint8_t)(bad[40] + 1);
            else if (cases[c].at == n - 1) bad[n - 1] ^= 0x40;
            else bad[cases[c].at] = cases[c].value;
        }
        snprintf(what, sizeof(what), "%s: %s", server, cases[c].what);
        expect_error(q, bad, cases[c].length, what, NULL, 0);
    }
    free(bad);
    sl_free(good);
    /* a reply type sent as a request */
    sl_msg m;
    sl_msg_init(&m, SL_MSG_BACKWARD, 1, 0, 0);
    good = encode(&m, SL_TIER_USER, sender, 101, &n);
    snprintf(what, sizeof(what), "%s: BACKWARD as a request", server);
    expect_error(q, good, n, what, NULL, 0);
    sl_free(good);
}

/* A request answered normally, then replayed (the same reply, not applied again), then an
 * older seq (refused), then a request out of range (refused). */
static void send_replayed(raw_req *q, const char *server, uint32_t sender) {
    uint64_t offset = 0;
    size_t n = 0, r1n = 0, r2n = 0;
    uint8_t *req = part_chunk("user", &offset, SL_TIER_USER, sender, 1000, &n);
    uint8_t *r1 = raw_call(q, req, n, &r1n);
    assert_non_null(r1);
    static sl_msg m;
    assert_int_equal(sl_msg_decode(&m, r1, r1n, SL_MSG_MAX_BYTES_DEFAULT, "reply"), 0);
    if (m.m_header.h_type != SL_MSG_PART_DATA)
        fail_msg("%s: PART_CHUNK answered %s", server, sl_msg_type_name(m.m_header.h_type));
    uint8_t *r2 = raw_call(q, req, n, &r2n);
    assert_non_null(r2);
    assert_int_equal(r1n, r2n);
    assert_memory_equal(r1, r2, r1n);
    sl_free(r1);
    sl_free(r2);
    sl_free(req);
    char what[128], text[1024];
    req = part_chunk("user", &offset, SL_TIER_USER, sender, 999, &n);
    snprintf(what, sizeof(what), "%s: an older seq", server);
    expect_error(q, req, n, what, text, sizeof(text));
    assert_non_null(strstr(text, "not above"));
    sl_free(req);
    offset = (uint64_t)1 << 40;
    req = part_chunk("user", &offset, SL_TIER_USER, sender, 1001, &n);
    snprintf(what, sizeof(what), "%s: an offset past the part", server);
    expect_error(q, req, n, what, NULL, 0);
    sl_free(req);
}

static void test_hostile_messages(void **state) {
    (void)state;
    NEED_ASSETS();
    ensure_central();
    const int port = free_ports(2), T = (int)(20000 * SLOW_FACTOR);
    char out[PATHN], ecache[PATHN], ucache[PATHN], log[PATHN];
    snprintf(out, PATHN, "%s/hostile-cloud", F.dir);
    snprintf(ecache, PATHN, "%s/hostile-edge", F.dir);
    snprintf(ucache, PATHN, "%s/hostile-user", F.dir);
    args *a = args_new();
    add_tier_cloud(a, out, port, T, rounds_1());
    snprintf(log, PATHN, "%s/hostile_cloud.log", F.dir);
    pid_t cloud = spawn(a, log);
    free(a);
    a = args_new();
    add_tier_edge(a, ecache, port, port + 1, T);
    snprintf(log, PATHN, "%s/hostile_edge.log", F.dir);
    pid_t edge = spawn(a, log);
    free(a);
    double t0 = now_s();
    raw_req qc, qe;
    raw_open(&qc, port, (int)(20000 * SLOW_FACTOR));     /* waits for the listener */
    raw_open(&qe, port + 1, (int)(20000 * SLOW_FACTOR)); /* the edge listens once it has its parts */
    send_malformed(&qe, "edge", 900);
    sleep_ms(300); /* by now the edge holds round 1's task for user 0 */
    send_malformed(&qc, "cloud", 900);
    send_replayed(&qe, "edge", 901);
    send_replayed(&qc, "cloud", 901);
    size_t n = 0;
    char text[1024];
    /* FORWARD with the right shapes for the round in progress, from senders not allowed to
     * send it: a cloud-tier sender claiming user 0's id to the edge, a user to the cloud */
    uint8_t *fw = forward_msg(SL_TIER_CLOUD, 0, 5000, &n);
    expect_error(&qe, fw, n, "edge: FORWARD from a cloud-tier sender", text, sizeof(text));
    if (strstr(text, "only users") == NULL) fail_msg("edge: FORWARD from a cloud-tier sender refused with: %s", text);
    sl_free(fw);
    fw = forward_msg(SL_TIER_USER, 0, 5001, &n);
    expect_error(&qc, fw, n, "cloud: FORWARD from a user", NULL, 0);
    sl_free(fw);
    fw = forward_msg(SL_TIER_USER, 902, 5002, &n); /* a user not attached to the edge */
    expect_error(&qe, fw, n, "edge: FORWARD from a user not attached", NULL, 0);
    sl_free(fw);
    /* out of order: a report for a round that has not started, from a user not picked */
    sl_msg m;
    sl_msg_init(&m, SL_MSG_ROUND_REPORT, 7, 0, 0);
    uint64_t samples = 1;
    float adapter[4] = {1, 2, 3, 4};
    uint32_t shape[1] = {4};
    assert_int_equal(sl_msg_add(&m, "user_adapter", SL_DTYPE_F32, 1, shape, adapter), 0);
    assert_int_equal(sl_msg_add(&m, "samples", SL_DTYPE_U64, 0, NULL, &samples), 0);
    uint8_t *rep = encode(&m, SL_TIER_USER, 903, 10, &n);
    expect_error(&qe, rep, n, "edge: ROUND_REPORT out of order", NULL, 0);
    sl_free(rep);
    rep = encode(&m, SL_TIER_USER, 903, 11, &n);
    expect_error(&qc, rep, n, "cloud: ROUND_REPORT from a user", NULL, 0);
    sl_free(rep);
    sl_msg_release(&m);
    sl_msg_init(&m, SL_MSG_HELLO, 0, 0, 0);
    rep = encode(&m, SL_TIER_EDGE, 7, 12, &n);
    expect_error(&qc, rep, n, "cloud: HELLO from edge 7 of 1", NULL, 0);
    sl_free(rep);
    fprintf(stderr, "  hostile messages before training answered in %.1f s\n", now_s() - t0);
    assert_true(still_running(cloud));
    assert_true(still_running(edge));
    /* now the user, with junk to the edge while it trains */
    a = args_new();
    add_tier_user(a, ucache, port + 1, T);
    snprintf(log, PATHN, "%s/hostile_user.log", F.dir);
    pid_t user = spawn(a, log);
    free(a);
    int errors_during = 0;
    uint8_t junk[64];
    memset(junk, 0x5A, sizeof(junk));
    raw_req qj;
    raw_open(&qj, port + 1, 2000);
    double t1 = now_s();
    while (still_running(user) && now_s() - t1 < 120 * SLOW_FACTOR) {
        size_t rn = 0;
        uint8_t *r = raw_call(&qj, junk, sizeof(junk), &rn);
        if (r != NULL) {
            static sl_msg d;
            if (sl_msg_decode(&d, r, rn, SL_MSG_MAX_BYTES_DEFAULT, "reply") == 0 && d.m_header.h_type == SL_MSG_ERROR)
                errors_during++;
            sl_free(r);
        }
        sleep_ms(50);
    }
    nng_close(qj.s);
    nng_close(qe.s);
    nng_close(qc.s);
    double tu = 0;
    int ust = wait_for(user, 120, &tu);
    int est = wait_for(edge, 60, NULL);
    int cst = wait_for(cloud, 60, NULL);
    fprintf(stderr, "  trained with junk arriving (%d ERROR replies): %.1f s; exits cloud %d edge %d user %d\n",
            errors_during, now_s() - t1, cst, est, ust);
    if (ust || est || cst) {
        dump_log(log);
        snprintf(log, PATHN, "%s/hostile_edge.log", F.dir);
        dump_log(log);
        snprintf(log, PATHN, "%s/hostile_cloud.log", F.dir);
        dump_log(log);
    }
    assert_int_equal(ust, 0);
    assert_int_equal(est, 0);
    assert_int_equal(cst, 0);
    assert_true(log_clean("hostile_cloud"));
    assert_true(log_clean("hostile_edge"));
    assert_true(log_clean("hostile_user"));
    assert_true(errors_during > 0);
    /* nothing the hostile messages said was applied: the run is central's, bit for bit */
    assert_losses_match_central(out);
    assert_adapter_matches_central(out);
    char path[PATHN];
    snprintf(path, PATHN, "%s/cloud-report.json", out);
    assert_true(file_exists(path));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_n1_m1_equals_central),
        cmocka_unit_test(test_n4_m2_fedavg),
        cmocka_unit_test(test_demo_eval_loss_decreases),
        cmocka_unit_test(test_absent_peer_times_out),
        cmocka_unit_test(test_killed_cloud_ends_edge_and_user),
        cmocka_unit_test(test_hostile_messages),
    };
    /* Every process this test starts shares 2 cores with the others (and with other tests):
     * OpenMP threads that spin while idle would take the cores from the ones with work. */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    const char *only = getenv("SPLITLLM_TEST_FILTER"); /* e.g. test_hostile_messages */
    if (only != NULL && only[0] != '\0') cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
