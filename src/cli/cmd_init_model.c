/* cmd_init_model.c: placeholder until the engine lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_init_model(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "splitllm: not implemented yet\n");
    return 2;
}
