/* cmd_tokenize.c: placeholder until the data layer lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "splitllm tokenize: not implemented yet\n");
    return 2;
}
