/* args.c: see args.h. */
#include "cli/args.h"

#include <errno.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

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
    printf("  %-22s %s\n", "--config F", "JSON object of option names (without --) to values; flags override it");
    printf("  %-22s %s\n", "--help", "show this help");
}

static const sl_opt *find_opt(const sl_opt *opts, int n_opts, const char *name) {
    for (int k = 0; k < n_opts; k++)
        if (strcmp(name, opts[k].name) == 0) return &opts[k];
    return NULL;
}

static int set_value(const char *command, const sl_opt *o, const char *v, const char *where) {
    char *end = NULL;
    errno = 0;
    if (o->kind == SL_OPT_STR) {
        *(const char **)o->dst = v;
    } else if (o->kind == SL_OPT_INT) {
        long x = strtol(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || x < -2147483647L || x > 2147483647L) {
            fprintf(stderr, "splitllm %s: %s%s expects an integer, got '%s'\n", command, where, o->name, v);
            return -1;
        }
        *(int *)o->dst = (int)x;
    } else if (o->kind == SL_OPT_FLOAT) {
        float x = strtof(v, &end);
        if (errno != 0 || end == v || *end != '\0') {
            fprintf(stderr, "splitllm %s: %s%s expects a number, got '%s'\n", command, where, o->name, v);
            return -1;
        }
        *(float *)o->dst = x;
    } else {
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) *(int *)o->dst = 1;
        else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) *(int *)o->dst = 0;
        else {
            fprintf(stderr, "splitllm %s: %s%s expects true or false, got '%s'\n", command, where, o->name, v);
            return -1;
        }
    }
    return 0;
}

/* The config file's strings must outlive the command: they are kept for the process. */
static int apply_config_file(const char *command, const sl_opt *opts, int n_opts, const char *path) {
    char *text;
    size_t bytes;
    if (sl_read_file(path, &text, &bytes) != 0) {
        fprintf(stderr, "splitllm %s: --config: %s\n", command, sl_last_error());
        return -1;
    }
    const char *err = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &err, 1);
    if (root == NULL || !cJSON_IsObject(root)) {
        fprintf(stderr, "splitllm %s: %s: expected a JSON object of option names to values%s%s (byte %ld)\n",
                command, path, err ? " near: " : "", err ? err : "", err ? (long)(err - text) : 0L);
        cJSON_Delete(root);
        sl_free(text);
        return -1;
    }
    char where[1100];
    snprintf(where, sizeof(where), "%s: ", path);
    for (cJSON *item = root->child; item != NULL; item = item->next) {
        char name[128];
        snprintf(name, sizeof(name), "--%s", item->string);
        const sl_opt *o = find_opt(opts, n_opts, name);
        if (o == NULL || strcmp(name, "--config") == 0) {
            fprintf(stderr, "splitllm %s: %s: unknown option '%s' (the keys are the option names without --)\n",
                    command, path, item->string);
            cJSON_Delete(root);
            sl_free(text);
            return -1;
        }
        char num[64];
        const char *v = NULL;
        if (cJSON_IsString(item)) v = item->valuestring;
        else if (cJSON_IsBool(item)) v = cJSON_IsTrue(item) ? "true" : "false";
        else if (cJSON_IsNumber(item)) {
            if (o->kind == SL_OPT_INT) snprintf(num, sizeof(num), "%.0f", item->valuedouble);
            else snprintf(num, sizeof(num), "%.9g", item->valuedouble);
            v = num;
        }
        if (v == NULL) {
            fprintf(stderr, "splitllm %s: %s: option '%s' needs a string, number or boolean\n", command, path,
                    item->string);
            cJSON_Delete(root);
            sl_free(text);
            return -1;
        }
        if (o->kind == SL_OPT_STR) {
            size_t n = strlen(v);
            char *copy = malloc(n + 1); /* lives as long as the command: options point at it */
            if (copy == NULL) return -1;
            memcpy(copy, v, n + 1);
            v = copy;
        }
        if (set_value(command, o, v, where) != 0) {
            cJSON_Delete(root);
            sl_free(text);
            return -1;
        }
    }
    cJSON_Delete(root);
    sl_free(text);
    return 0;
}

int sl_parse_args(const char *command, const char *summary, const sl_opt *opts, int n_opts, int argc,
                  char **argv) {
    /* A config file first, so flags on the command line override it. */
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && apply_config_file(command, opts, n_opts, argv[i + 1]) != 0) return -1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "splitllm %s: option --config needs a value\n", command);
                return -1;
            }
            i++;
            continue;
        }
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(command, summary, opts, n_opts);
            return 1;
        }
        const sl_opt *o = find_opt(opts, n_opts, a);
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
        if (set_value(command, o, argv[++i], "") != 0) return -1;
    }
    return 0;
}
