/* cmd_prepare.c: placeholder until the data layer lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_prepare(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "splitllm prepare: not implemented yet\n");
    return 2;
}
