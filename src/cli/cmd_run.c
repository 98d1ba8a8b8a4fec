/* cmd_run.c: `splitllm run` — a whole deployment on one machine: the cloud, M edges and N
 * users as threads over inproc:// (default) or as processes (--processes) over ipc:// or
 * tcp://127.0.0.1; or --scheme central in one process. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/run_flags.h"

int cmd_run(int argc, char **argv) {
    sl_run_flags f;
    sl_run_flags_init(&f);
    sl_run_flags_add(&f, (sl_opt){"--processes", SL_OPT_FLAG, &f.cfg.processes,
                                  "one process per tier (default: threads of this process)"});
    sl_run_flags_add(&f, (sl_opt){"--transport", SL_OPT_STR, &f.cfg.transport,
                                  "inproc (threads; default), ipc or tcp (127.0.0.1)"});
    sl_run_flags_add(&f, (sl_opt){"--base-port", SL_OPT_INT, &f.cfg.base_port,
                                  "tcp: cloud port; edge e listens on base+1+e (default: from the pid)"});
    int rc = sl_parse_args("run", "Runs a training scheme on one machine.", f.opts, f.n_opts, argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    if (f.cfg.processes && strcmp(f.cfg.transport, "inproc") == 0) f.cfg.transport = "ipc";
    if ((rc = sl_run_flags_finish(&f, "run"))) return rc;
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        fprintf(stderr, "splitllm run: cannot find its own binary\n");
        return 1;
    }
    self[n] = '\0';
    if (sl_run(&f.cfg, self)) {
        fprintf(stderr, "splitllm run: %s\n", sl_last_error());
        return 1;
    }
    return 0;
}
