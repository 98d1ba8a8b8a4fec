/* test_experiment.c: `splitllm experiment` end to end on stories260K and the first 300 lines
 * of the E2E dev set — a grid of splitllm, sfl and central over users 2,4 and edges 1,2 (1
 * round, 2 local steps, batch 2, seq 128): results.csv holds exactly the 8 expected rows, all
 * ok, their numbers parse and fit the scheme (which tiers, which links); running the same
 * command again runs no cell (logs untouched, "0 to run"); deleting one cell's summary.json
 * reruns exactly that cell; other flags on the same folder are refused, another invocation
 * with other cells adds its rows to the earlier ones; a failing cell is
 * recorded as failed and the grid goes on; --compress makes a cell per codec; --data-pattern
 * uses prepared folders; bad flags
 * are refused by name; the plot script writes PNGs (when gnuplot is installed) and
 * make_results_md.py writes the quality table (when /usr/bin/python3 is there).
 *
 * The cells run with OMP_NUM_THREADS=1: tiny models gain nothing from threads, and on a
 * loaded machine OpenMP's spinning makes them many times slower. SPLITLLM_TEST_QUICK=1
 * (sanitizer builds) keeps the same grid; evaluation is 4 batches in every mode. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "util/common.h"

static char root[64];
static char grid[128];   /* the main grid's output folder */
static char e2e[128];    /* the E2E subset */
static char grid_cmd[4096];
static const char *model, *tok;

#define MAX_ROWS 32
#define MAX_COLS 64

typedef struct {
    char *text;
    int n_cols, n_rows;
    char *head[MAX_COLS];
    char *cell[MAX_ROWS][MAX_COLS];
} csv_table;

/* Splits a results.csv (no quoting: the writer keeps commas out of fields). */
static void csv_load(csv_table *t, const char *path) {
    memset(t, 0, sizeof(*t));
    size_t n;
    assert_int_equal(sl_read_file(path, &t->text, &n), 0);
    char *line = t->text;
    int r = -1;
    while (*line) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        *nl = '\0';
        char **dst = r < 0 ? t->head : t->cell[r];
        assert_true(r < MAX_ROWS);
        int c = 0;
        for (char *p = line;; c++) {
            assert_true(c < MAX_COLS);
            dst[c] = p;
            char *comma = strchr(p, ',');
            if (comma == NULL) break;
            *comma = '\0';
            p = comma + 1;
        }
        if (r < 0) t->n_cols = c + 1;
        else assert_int_equal(c + 1, t->n_cols);
        r++;
        line = nl + 1;
    }
    t->n_rows = r;
}

static void csv_free(csv_table *t) { sl_free(t->text); }

static const char *col(const csv_table *t, int row, const char *name) {
    for (int c = 0; c < t->n_cols; c++)
        if (strcmp(t->head[c], name) == 0) return t->cell[row][c];
    fail_msg("results.csv has no column %s", name);
    return NULL;
}

static int row_of(const csv_table *t, const char *cell) {
    for (int r = 0; r < t->n_rows; r++)
        if (strcmp(col(t, r, "cell"), cell) == 0) return r;
    return -1;
}

/* A number that must be there and finite (and > 0 when positive). */
static double need_num(const csv_table *t, int row, const char *name, int positive) {
    const char *v = col(t, row, name);
    char *end;
    double x = strtod(v, &end);
    if (v[0] == '\0' || *end != '\0' || x != x || (positive && !(x > 0)))
        fail_msg("%s: column %s = '%s': expected a%s number", col(t, row, "cell"), name, v, positive ? " positive" : "");
    return x;
}

static void need_empty(const csv_table *t, int row, const char *name) {
    if (col(t, row, name)[0] != '\0') fail_msg("%s: column %s = '%s': expected empty", col(t, row, "cell"), name, col(t, row, name));
}

/* Runs a shell command, its stdout and stderr into out_path; returns the exit status. */
static int run_shell(const char *cmd, const char *out_path) {
    char full[8192];
    snprintf(full, sizeof(full), "%s >%s 2>&1", cmd, out_path);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int file_contains(const char *path, const char *needle) {
    char *text;
    size_t n;
    if (sl_read_file(path, &text, &n)) return 0;
    int found = strstr(text, needle) != NULL;
    sl_free(text);
    return found;
}

static void print_file(const char *path) {
    char *text;
    size_t n;
    if (sl_read_file(path, &text, &n) == 0) {
        fprintf(stderr, "---- %s\n%s----\n", path, text);
        sl_free(text);
    }
}

static const char *const CELLS[] = {"splitllm-n2-m1-c1_3", "splitllm-n2-m2-c1_3", "sfl-n2-m0-c1_3",
                                    "central-n2-m0-c1_3",  "splitllm-n4-m1-c1_3", "splitllm-n4-m2-c1_3",
                                    "sfl-n4-m0-c1_3",      "central-n4-m0-c1_3"};
#define N_CELLS ((int)(sizeof(CELLS) / sizeof(CELLS[0])))

static struct timespec log_mtime(const char *cell) {
    char path[512];
    snprintf(path, sizeof(path), "%s/cells/%s/run.log", grid, cell);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mtim;
}

static int same_time(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

static int setup(void **state) {
    (void)state;
    model = test_asset("models/stories260K/stories260K.bin");
    tok = test_asset("models/stories260K/tok512.bin");
    const char *dev = test_asset("datasets/e2e_devset.csv");
    if (model == NULL || tok == NULL || dev == NULL) return 0; /* the tests skip */
    snprintf(root, sizeof(root), "/tmp/sl_test_experiment_XXXXXX");
    if (mkdtemp(root) == NULL) return -1;
    setenv("OMP_NUM_THREADS", "1", 1);
    snprintf(e2e, sizeof(e2e), "%s/e2e300.csv", root);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "head -n 300 '%s' > %s", dev, e2e);
    if (system(cmd) != 0) return -1;
    snprintf(grid, sizeof(grid), "%s/grid", root);
    snprintf(grid_cmd, sizeof(grid_cmd),
             "%s experiment --model %s --tokenizer %s --input %s --format e2e --max-seq 128 --schemes splitllm,sfl,central "
             "--users 2,4 --edges 1,2 --rounds 1 --local-steps 2 --batch 2 --seq 128 --eval-batches 4 --timeout-ms 30000 "
             "--plot-script %s/scripts/plot_results.sh --out %s",
             SPLITLLM_BIN, model, tok, e2e, SPLITLLM_SOURCE_DIR, grid);
    char out[256];
    snprintf(out, sizeof(out), "%s/first.out", root);
    double t0 = sl_now_s();
    int rc = run_shell(grid_cmd, out);
    fprintf(stderr, "test_experiment: the 8-cell grid took %.1f s\n", sl_now_s() - t0);
    if (rc != 0) {
        print_file(out);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (root[0] == '\0') return 0;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    return system(cmd);
}

#define NEED_ASSETS()                                                   \
    do {                                                                \
        if (root[0] == '\0') {                                          \
            fprintf(stderr, "stories260K or the E2E set missing\n");    \
            skip();                                                     \
        }                                                               \
    } while (0)

static void check_results(int expect_ok) {
    char path[256];
    snprintf(path, sizeof(path), "%s/results.csv", grid);
    csv_table t;
    csv_load(&t, path);
    assert_int_equal(t.n_rows, N_CELLS);
    for (int i = 0; i < N_CELLS; i++) {
        int r = row_of(&t, CELLS[i]);
        if (r < 0) fail_msg("results.csv has no row %s", CELLS[i]);
        assert_int_equal(r, i); /* grid order: N, then scheme, then M */
        const char *scheme = col(&t, r, "scheme");
        const int n = atoi(col(&t, r, "users")), m = atoi(col(&t, r, "edges"));
        assert_int_equal(n, i < 4 ? 2 : 4);
        if (expect_ok) assert_string_equal(col(&t, r, "status"), "ok");
        assert_string_equal(col(&t, r, "model"), "stories260K");
        assert_int_equal(atoi(col(&t, r, "cut1")), 1);
        assert_int_equal(atoi(col(&t, r, "cut2")), 3);
        assert_int_equal(atoi(col(&t, r, "rounds")), 1);
        assert_int_equal(atoi(col(&t, r, "local_steps")), 2);
        assert_int_equal(atoi(col(&t, r, "batch")), 2);
        assert_int_equal(atoi(col(&t, r, "seq")), 128);
        double l0 = need_num(&t, r, "eval_loss_initial", 1), l1 = need_num(&t, r, "eval_loss_final", 1);
        assert_true(l0 > 3.0 && l0 < 6.0);
        assert_true(l1 < l0); /* one round of LoRA on E2E helps every scheme */
        double p1 = need_num(&t, r, "ppl_final", 1);
        assert_true(p1 > 0.999 * exp(l1) && p1 < 1.001 * exp(l1));
        need_num(&t, r, "wall_seconds", 1);
        need_num(&t, r, "train_samples", 1);
        need_num(&t, r, "round_seconds_measured", 1);
        if (strcmp(scheme, "splitllm") == 0) {
            assert_int_equal(m, strstr(CELLS[i], "-m1-") ? 1 : 2);
            assert_string_equal(col(&t, r, "mode"), "processes");
            need_num(&t, r, "peak_rss_user_bytes", 1);
            need_num(&t, r, "peak_rss_edge_bytes", 1);
            need_num(&t, r, "peak_rss_cloud_bytes", 1);
            need_empty(&t, r, "peak_rss_process_bytes");
            need_num(&t, r, "bytes_user_edge", 1);
            need_num(&t, r, "bytes_edge_cloud", 1);
            need_empty(&t, r, "bytes_user_cloud");
            /* M streams of E steps of B samples */
            assert_int_equal((int)need_num(&t, r, "train_samples", 1), m * 2 * 2);
        } else if (strcmp(scheme, "sfl") == 0) {
            assert_int_equal(m, 0);
            need_num(&t, r, "peak_rss_user_bytes", 1);
            need_empty(&t, r, "peak_rss_edge_bytes");
            need_num(&t, r, "peak_rss_cloud_bytes", 1);
            need_num(&t, r, "bytes_user_cloud", 1);
            need_empty(&t, r, "bytes_user_edge");
            assert_int_equal((int)need_num(&t, r, "train_samples", 1), n * 2 * 2);
        } else {
            assert_string_equal(scheme, "central");
            assert_int_equal(m, 0);
            need_num(&t, r, "peak_rss_process_bytes", 1);
            need_empty(&t, r, "peak_rss_cloud_bytes");
            need_empty(&t, r, "bytes_user_cloud");
            assert_int_equal((int)need_num(&t, r, "train_samples", 1), 2 * 2);
        }
        char want[128];
        snprintf(want, sizeof(want), "cells/%s", CELLS[i]);
        assert_string_equal(col(&t, r, "dir"), want);
        char summary[512];
        snprintf(summary, sizeof(summary), "%s/%s/summary.json", grid, want);
        assert_int_equal(access(summary, R_OK), 0);
    }
    /* splitllm's cloud holds M streams, sfl's server N: at N=4 sfl's server is the larger */
    double sfl4 = need_num(&t, row_of(&t, "sfl-n4-m0-c1_3"), "peak_rss_cloud_bytes", 1);
    double split4 = need_num(&t, row_of(&t, "splitllm-n4-m1-c1_3"), "peak_rss_cloud_bytes", 1);
    assert_true(split4 < sfl4);
    csv_free(&t);
}

static void test_grid_rows(void **state) {
    (void)state;
    NEED_ASSETS();
    check_results(1);
    char path[512];
    /* every cell kept its command and log; the data was prepared once per N */
    for (int i = 0; i < N_CELLS; i++) {
        snprintf(path, sizeof(path), "%s/cells/%s/command.txt", grid, CELLS[i]);
        assert_true(file_contains(path, " run --scheme "));
        assert_true(file_contains(path, "--processes"));
    }
    /* the tiers' model part copies are gone, the adapters stay */
    snprintf(path, sizeof(path), "%s/cells/splitllm-n2-m2-c1_3/user-0/user.safetensors", grid);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/cells/splitllm-n2-m2-c1_3/parts/cloud.safetensors", grid);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/cells/splitllm-n2-m2-c1_3/lora.safetensors", grid);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof(path), "%s/cells/splitllm-n2-m2-c1_3/user-0/report.json", grid);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof(path), "%s/data-2/manifest.json", grid);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof(path), "%s/data-4/manifest.json", grid);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof(path), "%s/experiment.json", grid);
    assert_true(file_contains(path, "\"command_line\""));
    assert_true(file_contains(path, "--schemes splitllm,sfl,central"));
    assert_true(file_contains(path, "\"cpus_online\""));
    snprintf(path, sizeof(path), "%s/first.out", root);
    assert_true(file_contains(path, "8 cells in the grid"));
    assert_true(file_contains(path, "0 done already, 8 to run"));
    assert_true(file_contains(path, "cell 8/8"));
    assert_true(file_contains(path, "ETA"));
}

static void test_resume_runs_nothing(void **state) {
    (void)state;
    NEED_ASSETS();
    struct timespec before[N_CELLS];
    for (int i = 0; i < N_CELLS; i++) before[i] = log_mtime(CELLS[i]);
    char out[256];
    snprintf(out, sizeof(out), "%s/second.out", root);
    int rc = run_shell(grid_cmd, out);
    if (rc != 0) print_file(out);
    assert_int_equal(rc, 0);
    assert_true(file_contains(out, "8 done already, 0 to run"));
    assert_false(file_contains(out, "preparing"));
    for (int i = 0; i < N_CELLS; i++)
        if (!same_time(before[i], log_mtime(CELLS[i]))) fail_msg("%s ran again", CELLS[i]);
    check_results(1);
}

static void test_rerun_one_cell(void **state) {
    (void)state;
    NEED_ASSETS();
    const char *victim = "sfl-n4-m0-c1_3";
    struct timespec before[N_CELLS];
    for (int i = 0; i < N_CELLS; i++) before[i] = log_mtime(CELLS[i]);
    char path[512], out[256];
    snprintf(path, sizeof(path), "%s/cells/%s/summary.json", grid, victim);
    assert_int_equal(unlink(path), 0);
    snprintf(out, sizeof(out), "%s/third.out", root);
    int rc = run_shell(grid_cmd, out);
    if (rc != 0) print_file(out);
    assert_int_equal(rc, 0);
    assert_true(file_contains(out, "7 done already, 1 to run"));
    assert_true(file_contains(out, "cell 1/1 sfl-n4-m0-c1_3: ok"));
    for (int i = 0; i < N_CELLS; i++) {
        int same = same_time(before[i], log_mtime(CELLS[i]));
        if (strcmp(CELLS[i], victim) == 0) assert_false(same);
        else if (!same) fail_msg("%s ran again", CELLS[i]);
    }
    assert_int_equal(access(path, R_OK), 0);
    check_results(1);
    /* experiment.json: one entry per invocation */
    snprintf(path, sizeof(path), "%s/experiment.json", grid);
    char *text;
    size_t n;
    assert_int_equal(sl_read_file(path, &text, &n), 0);
    int count = 0;
    for (const char *p = text; (p = strstr(p, "\"command_line\"")) != NULL; p++) count++;
    sl_free(text);
    assert_int_equal(count, 3);
}

static void test_other_flags_refused(void **state) {
    (void)state;
    NEED_ASSETS();
    struct timespec before[N_CELLS];
    for (int i = 0; i < N_CELLS; i++) before[i] = log_mtime(CELLS[i]);
    char cmd[4200], out[256];
    snprintf(cmd, sizeof(cmd), "%s --local-steps 3", grid_cmd);
    snprintf(out, sizeof(out), "%s/other.out", root);
    assert_int_equal(run_shell(cmd, out), 2);
    assert_true(file_contains(out, "was run with other flags"));
    /* another --timeout-ms changes nothing measured: accepted */
    snprintf(cmd, sizeof(cmd), "%s --timeout-ms 45000 --no-plots", grid_cmd);
    assert_int_equal(run_shell(cmd, out), 0);
    assert_true(file_contains(out, "0 to run"));
    /* other prepare flags on the same data folders: refused before anything runs */
    snprintf(cmd, sizeof(cmd), "%s --partition dirichlet --key eatType", grid_cmd);
    assert_int_equal(run_shell(cmd, out), 2);
    assert_true(file_contains(out, "was prepared with other flags"));
    for (int i = 0; i < N_CELLS; i++)
        if (!same_time(before[i], log_mtime(CELLS[i]))) fail_msg("%s ran again", CELLS[i]);
}

static void test_failed_cell_compress_and_data_pattern(void **state) {
    (void)state;
    NEED_ASSETS();
    /* cut 1:99 is past stories260K's 5 blocks: those cells fail, the others run; --compress
     * makes a cell per codec; the data comes from the main grid's folders */
    char cmd[4096], out[256], dir[256], path[512];
    snprintf(dir, sizeof(dir), "%s/failing", root);
    snprintf(cmd, sizeof(cmd),
             "%s experiment --model %s --data-pattern '%s/data-{users}' --schemes splitllm,central --users 2 --edges 1 "
             "--cuts 1:99,1:3 --compress none,int8 --rounds 1 --local-steps 1 --batch 2 --seq 64 --eval-batches 2 "
             "--timeout-ms 30000 --no-plots --out %s",
             SPLITLLM_BIN, model, grid, dir);
    snprintf(out, sizeof(out), "%s/failing.out", root);
    int rc = run_shell(cmd, out);
    if (rc != 1) print_file(out);
    assert_int_equal(rc, 1);
    assert_true(file_contains(out, "6 cells in the grid (2 combinations skipped"));
    assert_true(file_contains(out, "splitllm-n2-m1-c1_99-none: FAILED"));
    assert_true(file_contains(out, "splitllm-n2-m1-c1_99-int8: FAILED"));
    assert_true(file_contains(out, "cell 6/6 central-n2-m0-c1_3: ok"));
    assert_true(file_contains(out, "3 ok, 3 failed"));
    snprintf(path, sizeof(path), "%s/results.csv", dir);
    csv_table t;
    csv_load(&t, path);
    assert_int_equal(t.n_rows, 6);
    static const char *const names[] = {"splitllm-n2-m1-c1_99-none", "splitllm-n2-m1-c1_99-int8", "central-n2-m0-c1_99",
                                        "splitllm-n2-m1-c1_3-none",  "splitllm-n2-m1-c1_3-int8",  "central-n2-m0-c1_3"};
    for (int r = 0; r < 6; r++) {
        assert_string_equal(col(&t, r, "cell"), names[r]);
        assert_string_equal(col(&t, r, "status"), r < 3 ? "failed" : "ok");
    }
    assert_string_equal(col(&t, 0, "error"), "exit status 1");
    need_empty(&t, 0, "eval_loss_final");
    snprintf(path, sizeof(path), "%s/%s", dir, col(&t, 0, "log"));
    assert_true(file_contains(path, "99"));
    assert_string_equal(col(&t, 3, "compress"), "none");
    assert_string_equal(col(&t, 4, "compress"), "int8");
    assert_true(need_num(&t, 4, "bytes_user_edge", 1) < need_num(&t, 3, "bytes_user_edge", 1));
    need_num(&t, 5, "eval_loss_final", 1);
    csv_free(&t);
    snprintf(path, sizeof(path), "%s/cells/splitllm-n2-m1-c1_3-int8/command.txt", dir);
    assert_true(file_contains(path, "--compress int8"));
    /* no data was prepared in this folder */
    snprintf(path, sizeof(path), "%s/data-2", dir);
    assert_int_not_equal(access(path, F_OK), 0);
    /* the failed cells run again on resume, the ok ones do not */
    rc = run_shell(cmd, out);
    assert_int_equal(rc, 1);
    assert_true(file_contains(out, "3 done already, 3 to run"));
}

/* Another invocation on the same folder (other schemes): its cells join results.csv, the
 * earlier rows stay. */
static void test_invocations_accumulate(void **state) {
    (void)state;
    NEED_ASSETS();
    char cmd[4200], out[256], path[512];
    char *p = strstr(grid_cmd, "--schemes splitllm,sfl,central --users 2,4");
    assert_non_null(p);
    snprintf(cmd, sizeof(cmd), "%.*s--schemes sl --users 2%s --no-plots", (int)(p - grid_cmd), grid_cmd,
             p + strlen("--schemes splitllm,sfl,central --users 2,4"));
    snprintf(out, sizeof(out), "%s/accumulate.out", root);
    int rc = run_shell(cmd, out);
    if (rc != 0) print_file(out);
    assert_int_equal(rc, 0);
    assert_true(file_contains(out, "1 cells in the grid"));
    assert_true(file_contains(out, "results.csv keeps 8 rows of cells outside this grid"));
    snprintf(path, sizeof(path), "%s/results.csv", grid);
    csv_table t;
    csv_load(&t, path);
    assert_int_equal(t.n_rows, N_CELLS + 1);
    assert_string_equal(col(&t, 0, "cell"), "sl-n2-m0-c1_3");
    assert_string_equal(col(&t, 0, "status"), "ok");
    for (int i = 0; i < N_CELLS; i++) {
        assert_string_equal(col(&t, i + 1, "cell"), CELLS[i]);
        assert_string_equal(col(&t, i + 1, "status"), "ok");
    }
    csv_free(&t);
}

static void test_bad_flags(void **state) {
    (void)state;
    NEED_ASSETS();
    static const struct {
        const char *flags, *message;
    } cases[] = {
        {"--schemes splitllm,foo", "'foo' is not one of"},
        {"--schemes sfl,sfl", "sfl appears twice"},
        {"--users 2,0", "--users '2,0'"},
        {"--edges x", "--edges 'x'"},
        {"--cuts 3:1", "--cuts '3:1'"},
        {"--cuts 1-3", "--cuts '1-3'"},
        {"--lr abc", "--lr 'abc'"},
        {"--rounds 0", "--rounds 0"},
        {"--transport carrier-pigeon", "--transport 'carrier-pigeon'"},
        {"--users 2,4 --data-pattern /nonexistent/data", "needs {users}"},
        {"--compress zip", "--compress: "},
    };
    char cmd[2048], out[256];
    snprintf(out, sizeof(out), "%s/bad.out", root);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const int pattern = strstr(cases[i].flags, "--data-pattern") != NULL;
        snprintf(cmd, sizeof(cmd), "%s experiment --model %s %s %s %s --out %s/bad", SPLITLLM_BIN, model,
                 pattern ? "" : "--tokenizer", pattern ? "" : tok, cases[i].flags, root);
        if (!pattern) {
            size_t len = strlen(cmd);
            snprintf(cmd + len, sizeof(cmd) - len, " --input %s", e2e);
        }
        int rc = run_shell(cmd, out);
        if (rc != 2 || !file_contains(out, cases[i].message)) {
            print_file(out);
            fail_msg("flags '%s': expected exit 2 and '%s', got %d", cases[i].flags, cases[i].message, rc);
        }
    }
    /* data from nowhere */
    snprintf(cmd, sizeof(cmd), "%s experiment --model %s --out %s/bad", SPLITLLM_BIN, model, root);
    assert_int_equal(run_shell(cmd, out), 2);
    assert_true(file_contains(out, "--data-pattern"));
    /* --data-pattern folders must exist */
    snprintf(cmd, sizeof(cmd), "%s experiment --model %s --data-pattern '%s/none-{users}' --users 2 --out %s/bad",
             SPLITLLM_BIN, model, root, root);
    assert_int_equal(run_shell(cmd, out), 2);
    assert_true(file_contains(out, "has no val.shard"));
    char path[512];
    snprintf(path, sizeof(path), "%s/bad/results.csv", root);
    assert_int_not_equal(access(path, F_OK), 0);
}

static void test_plots(void **state) {
    (void)state;
    NEED_ASSETS();
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, "gnuplot is not installed: plots not checked\n");
        skip();
    }
    static const char *const pngs[] = {"memory_cloud", "memory_edge", "memory_user", "latency", "loss", "bytes"};
    for (size_t i = 0; i < sizeof(pngs) / sizeof(pngs[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/plots/%s.png", grid, pngs[i]);
        char *data;
        size_t n;
        if (sl_read_file(path, &data, &n)) fail_msg("%s: %s", path, sl_last_error());
        assert_true(n > 2000);
        assert_memory_equal(data, "\x89PNG\r\n\x1a\n", 8);
        sl_free(data);
    }
}

static void test_results_md(void **state) {
    (void)state;
    NEED_ASSETS();
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "/usr/bin/python3 missing: make_results_md.py not checked\n");
        skip();
    }
    char cmd[2048], out[256], md[256];
    snprintf(md, sizeof(md), "%s/RESULTS.md", root);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/scripts/make_results_md.py %s -o %s", SPLITLLM_SOURCE_DIR, grid, md);
    snprintf(out, sizeof(out), "%s/md.out", root);
    int rc = run_shell(cmd, out);
    if (rc != 0) print_file(out);
    assert_int_equal(rc, 0);
    static const char *const want[] = {
        "### Quality",
        "| scheme | N | M | rounds × local steps | samples | eval loss before | eval loss after",
        "| splitllm | 2 | 1 | 1 × 2 | 4 |",
        "| splitllm | 4 | 2 | 1 × 2 | 8 |",
        "| sfl | 4 | 0 | 1 × 2 | 16 |",
        "| central | 2 | 0 | 1 × 2 | 4 |",
        "| sl | 4 | 0 | — | — |", /* not in the grid: a dash */
        "### Peak memory at N=4 users, M=2 edges",
        "| splitllm (M=2) |",
        "#### Where the memory goes",
        "### Latency",
        "splitllm experiment --model",
        "--schemes splitllm,sfl,central",
        "CPUs online",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!file_contains(md, want[i])) {
            print_file(md);
            fail_msg("RESULTS.md lacks '%s'", want[i]);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_rows),       cmocka_unit_test(test_resume_runs_nothing),
        cmocka_unit_test(test_rerun_one_cell),  cmocka_unit_test(test_other_flags_refused),
        cmocka_unit_test(test_plots),           cmocka_unit_test(test_results_md),
        cmocka_unit_test(test_invocations_accumulate),
        cmocka_unit_test(test_failed_cell_compress_and_data_pattern),
        cmocka_unit_test(test_bad_flags),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
