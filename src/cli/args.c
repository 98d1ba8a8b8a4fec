/* args.c: see args.h. */
#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const char *command, const char *summary, const sl_opt *opts, int n_opts) {
    printf("usage: splitllm %s [options]\n\n%s\n\noptions:\n", command, summary);
    for (int i = 0; i < n_opts; i++) {
        const char *arg = opts[i].kind == SL_OPT_STR     ? " S"
                          : opts[i].kind == SL_OPT_INT   ? " N"
                          : opts[i].kind == SL_OPT_FLOAT ? " X"
                                                         : "";
        char left[64];
        snprintf(left, sizeof(left), "%s%s", opts[i].name, arg);
        printf("  %-22s %s\n", left, opts[i].help);
    }
    printf("  %-22s %s\n", "--help", "show this help");
}

int sl_parse_args(const char *command, const char *summary, const sl_opt *opts, int n_opts, int argc,
                  char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(command, summary, opts, n_opts);
            return 1;
        }
        const sl_opt *o = NULL;
        for (int k = 0; k < n_opts; k++)
            if (strcmp(a, opts[k].name) == 0) o = &opts[k];
        if (o == NULL) {
            fprintf(stderr, "splitllm %s: unknown option '%s' (see --help)\n", command, a);
            return -1;
        }
        if (o->kind == SL_OPT_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "splitllm %s: option %s needs a value\n", command, a);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (o->kind == SL_OPT_STR) {
            *(const char **)o->dst = v;
        } else if (o->kind == SL_OPT_INT) {
            long x = strtol(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || x < -2147483647L || x > 2147483647L) {
                fprintf(stderr, "splitllm %s: option %s expects an integer, got '%s'\n", command, a, v);
                return -1;
            }
            *(int *)o->dst = (int)x;
        } else {
            float x = strtof(v, &end);
            if (errno != 0 || end == v || *end != '\0') {
                fprintf(stderr, "splitllm %s: option %s expects a number, got '%s'\n", command, a, v);
                return -1;
            }
            *(float *)o->dst = x;
        }
    }
    return 0;
}
