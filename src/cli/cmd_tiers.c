/* cmd_tiers.c: `splitllm cloud`, `splitllm edge`, `splitllm user` — one tier as a
 * long-running process of its own, on any host that reaches its peer. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/run_flags.h"

static int finish(const char *tier, int id, int rc, const sl_tier_report *rep, const char *report_path) {
    if (rc) {
        fprintf(stderr, "splitllm %s: %s\n", tier, sl_last_error());
        return 1;
    }
    if (report_path && sl_tier_report_write(rep, tier, id, report_path)) {
        fprintf(stderr, "splitllm %s: %s\n", tier, sl_last_error());
        return 1;
    }
    fprintf(stderr, "%s %d: done in %.1f s, peak RSS %.1f MiB\n", tier, id, rep->seconds,
            (double)rep->peak_rss_bytes / (1 << 20));
    return 0;
}

int cmd_cloud(int argc, char **argv) {
    sl_run_flags f;
    sl_run_flags_init(&f);
    const char *listen = "tcp://127.0.0.1:5555", *report = NULL;
    sl_run_flags_add(&f, (sl_opt){"--listen", SL_OPT_STR, &listen, "URL to serve the edges on"});
    sl_run_flags_add(&f, (sl_opt){"--report", SL_OPT_STR, &report, "write this process's measurements here"});
    int rc = sl_parse_args("cloud", "The cloud tier: serves M edges.", f.opts, f.n_opts, argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if ((rc = sl_run_flags_finish(&f, "cloud"))) return rc;
    sl_tier_report rep;
    rc = sl_cloud_run(&f.cfg, listen, &rep);
    return finish("cloud", 0, rc, &rep, report);
}

int cmd_edge(int argc, char **argv) {
    const char *cloud = NULL, *listen = NULL, *cache = "out/edge", *report = NULL;
    int id = 0, timeout_ms = 60000;
    const sl_opt opts[] = {
        {"--id", SL_OPT_INT, &id, "this edge's number (0..M-1)"},
        {"--cloud", SL_OPT_STR, &cloud, "the cloud's URL"},
        {"--listen", SL_OPT_STR, &listen, "URL to serve this edge's users on"},
        {"--cache", SL_OPT_STR, &cache, "folder for the model parts (default out/edge)"},
        {"--timeout-ms", SL_OPT_INT, &timeout_ms, "how long to wait for a peer (default 60000)"},
        {"--report", SL_OPT_STR, &report, "write this process's measurements here"},
    };
    int rc = sl_parse_args("edge", "An edge tier: between its users and the cloud.", opts, SL_COUNTOF(opts), argc,
                           argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (cloud == NULL || listen == NULL) {
        fprintf(stderr, "splitllm edge: --cloud URL and --listen URL are required\n");
        return 2;
    }
    sl_tier_report rep;
    rc = sl_edge_run(id, cloud, listen, cache, timeout_ms, &rep);
    return finish("edge", id, rc, &rep, report);
}

int cmd_user(int argc, char **argv) {
    const char *edge = NULL, *data = NULL, *cache = "out/user", *report = NULL;
    int id = 0, timeout_ms = 60000;
    const sl_opt opts[] = {
        {"--id", SL_OPT_INT, &id, "this user's number (0..N-1)"},
        {"--edge", SL_OPT_STR, &edge, "its edge's URL (splitllm)"},
        {"--server", SL_OPT_STR, &edge, "its server's URL: the cloud in sfl, sl and fl (same as --edge)"},
        {"--data", SL_OPT_STR, &data, "its shard (user_NNN.shard from splitllm prepare)"},
        {"--cache", SL_OPT_STR, &cache, "folder for the model part (default out/user)"},
        {"--timeout-ms", SL_OPT_INT, &timeout_ms, "how long to wait for a peer (default 60000)"},
        {"--report", SL_OPT_STR, &report, "write this process's measurements here"},
    };
    int rc = sl_parse_args("user", "A user tier: trains on its own shard.", opts, SL_COUNTOF(opts), argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (edge == NULL || data == NULL) {
        fprintf(stderr, "splitllm user: --edge (or --server) URL and --data SHARD are required\n");
        return 2;
    }
    sl_tier_report rep;
    rc = sl_user_run(id, edge, data, cache, timeout_ms, &rep);
    return finish("user", id, rc, &rep, report);
}
