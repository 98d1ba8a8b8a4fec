/* commands.h: every subcommand of the splitllm program, one cmd_*.c file each. */
#ifndef SPLITLLM_CLI_COMMANDS_H
#define SPLITLLM_CLI_COMMANDS_H

int cmd_init_model(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_cloud(int argc, char **argv);
int cmd_edge(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_experiment(int argc, char **argv);

#endif
