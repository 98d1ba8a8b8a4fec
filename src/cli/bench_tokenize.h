/* bench_tokenize.h: `splitllm bench tokenize` — encoding speed of a tokenizer on one thread.
 * Not for: training-step benchmarks (cmd_bench.c). */
#ifndef SPLITLLM_CLI_BENCH_TOKENIZE_H
#define SPLITLLM_CLI_BENCH_TOKENIZE_H

/* argv holds the options after `splitllm bench tokenize`: --tokenizer F --input F [--repeat N].
 * Encodes the whole input N times and prints one line per pass, then on the last line
 * `mb_per_s=X tokens=T seconds=S`: S the median pass in seconds, T the tokens of one pass,
 * X = input bytes / 1e6 / S. Returns the exit status (0, 1 on failure, 2 on bad usage). */
int bench_tokenize(int argc, char **argv);

#endif
