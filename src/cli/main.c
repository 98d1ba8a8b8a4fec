/* main.c: the splitllm program — dispatches to one subcommand. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"init-model", cmd_init_model, "write a randomly initialised GPT-2 or Llama model file"},
    {"generate", cmd_generate, "generate text from a model (optionally with a LoRA adapter)"},
    {"train", cmd_train, "LoRA fine-tuning in one process (the central scheme)"},
    {"bench", cmd_bench, "benchmarks: 'bench step' times LoRA training steps"},
    {"tokenize", cmd_tokenize, "print the token ids of standard input (--decode: the reverse)"},
    {"prepare", cmd_prepare, "tokenize a dataset into per-user shards"},
    {"run", cmd_run, "a whole deployment on this machine (threads or processes), or --scheme central"},
    {"cloud", cmd_cloud, "the cloud tier as a process of its own"},
    {"edge", cmd_edge, "an edge tier as a process of its own"},
    {"user", cmd_user, "a user tier as a process of its own"},
    {"experiment", cmd_experiment, "a grid of runs (schemes x users x edges x cuts) into results.csv and plots"},
};

static void usage(FILE *fp) {
    fprintf(fp, "usage: splitllm COMMAND [options]   (splitllm COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(fp, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

/* Buffers of this size and above (activations, messages, model chunks) come straight from
 * mmap and go straight back on free. Setting the threshold turns off glibc's habit of
 * raising it after frees, which otherwise leaves freed message buffers resident in every
 * thread's arena: a process's memory stays what it plans, not what it once touched. */
#define MMAP_THRESHOLD_BYTES (128 * 1024)

int main(int argc, char **argv) {
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "splitllm: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
