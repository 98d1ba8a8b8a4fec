/* cmd_bench.c: `splitllm bench step|sgemm|tokenize` — measurements the docs report.
 *
 * bench step: LoRA training steps (forward, backward, AdamW) on a model of a given shape
 * (random weights: speed and memory do not depend on their values), reporting tokens/s,
 * achieved GFLOP/s (counted analytically: the frozen-weight path does no weight-gradient
 * products, so those are not counted either), the machine's OpenBLAS sgemm rate on a
 * large square product for comparison, and peak resident memory with a breakdown.
 * Last line: tokens_per_s=… gflops=… sgemm_gflops=… gflops_fraction=… peak_rss_bytes=… */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/bench_tokenize.h"
#include "cli/commands.h"
#include "model/flops.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "model/segment.h"

/* Square sgemm used to measure the machine's BLAS rate: large enough to reach OpenBLAS's
 * steady state, small enough to take about a second on two cores. */
#define SGEMM_BENCH_N 1536
#define SGEMM_BENCH_REPEATS 5

/* OpenBLAS's own rate with its own threads (as many as OpenMP has): the reference the
 * engine's achieved rate is compared with. The engine itself runs OpenBLAS single-threaded
 * under its own OpenMP slicing (kernels/gemm.h); restored afterwards. */
static double sgemm_gflops(void) {
    const int n = SGEMM_BENCH_N;
    openblas_set_num_threads(omp_get_max_threads());
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < SGEMM_BENCH_REPEATS; r++) {
        double t0 = sl_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = sl_now_s() - t0;
        if (dt < best) best = dt;
    }
    free(a), free(b), free(c);
    openblas_set_num_threads(1);
    return 2.0 * (double)n * n * n / best / 1e9;
}

/* FLOPs of one training step (forward + backward with frozen base weights). */
static double step_flops(const sl_config *c, const sl_lora *l, int B, int T) {
    double fwd, bwd;
    sl_segment_flops(c, &l->config, 0, c->n_layers, 1, B, T, &fwd, &bwd);
    return fwd + bwd;
}

static int bench_step(int argc, char **argv) {
    const char *arch_name = "gpt2", *preset = "124M", *model_path = NULL, *targets = "q,v";
    int B = 4, T = 128, rank = 8, steps = 5, warmup = 1;
    float alpha = 16.0f;
    const sl_opt opts[] = {
        {"--arch", SL_OPT_STR, &arch_name, "gpt2 or llama (with --preset; default gpt2)"},
        {"--preset", SL_OPT_STR, &preset, "model shape: tiny or 124M (default 124M)"},
        {"--model", SL_OPT_STR, &model_path, "use this model file instead of a random one"},
        {"--batch", SL_OPT_INT, &B, "batch size B (default 4)"},
        {"--seq", SL_OPT_INT, &T, "sequence length T (default 128)"},
        {"--lora-rank", SL_OPT_INT, &rank, "LoRA rank r (default 8)"},
        {"--lora-alpha", SL_OPT_FLOAT, &alpha, "LoRA alpha (default 16)"},
        {"--lora-targets", SL_OPT_STR, &targets, "LoRA targets (default q,v)"},
        {"--steps", SL_OPT_INT, &steps, "timed steps (default 5)"},
        {"--warmup", SL_OPT_INT, &warmup, "untimed steps first (default 1)"},
    };
    int rc = sl_parse_args("bench step", "Times LoRA training steps.", opts, SL_COUNTOF(opts), argc, argv);
    if (rc) return rc > 0 ? 0 : 2;
    char tmp_path[256] = "";
    sl_model m;
    if (model_path == NULL) {
        sl_arch arch;
        sl_config c;
        if (sl_arch_parse(arch_name, &arch) || sl_config_preset(&c, arch, preset)) {
            fprintf(stderr, "splitllm bench step: %s\n", sl_last_error());
            return 2;
        }
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(tmp_path, sizeof(tmp_path), "%s/splitllm-bench-%s-%s-%d.bin", dir, arch_name, preset, (int)getpid());
        fprintf(stderr, "bench step: writing a random %s %s model to %s\n", arch_name, preset, tmp_path);
        if (sl_model_write_random(&c, 1, tmp_path)) {
            fprintf(stderr, "splitllm bench step: %s\n", sl_last_error());
            return 1;
        }
        model_path = tmp_path;
    }
    rc = sl_model_load(&m, model_path);
    if (tmp_path[0]) unlink(tmp_path); /* the mapping keeps the data until unmapped */
    if (rc) {
        fprintf(stderr, "splitllm bench step: %s\n", sl_last_error());
        return 1;
    }
    size_t rss_model = sl_current_rss_bytes();
    sl_lora_config lc = {.rank = rank, .alpha = alpha, .seed = 1};
    sl_lora l;
    sl_adamw opt;
    sl_segment *s = NULL;
    int *tokens = malloc(sizeof(int) * B * T), *targets_ids = malloc(sizeof(int) * B * T);
    sl_adamw_config oc = sl_adamw_defaults();
    if (sl_lora_parse_targets(targets, m.config.arch, &lc.targets) ||
        sl_lora_init(&l, &m.config, &lc, 0, m.config.n_layers) || sl_adamw_init(&opt, &oc, l.n_params)) {
        fprintf(stderr, "splitllm bench step: %s\n", sl_last_error());
        sl_model_free(&m);
        return 2;
    }
    sl_segment_config sc = {0, m.config.n_layers, 1, 1, B, T};
    if (sl_segment_create(&s, &m, &l, &sc)) {
        fprintf(stderr, "splitllm bench step: %s\n", sl_last_error());
        return 1;
    }
    sl_rng rng;
    sl_rng_init(&rng, 3, 0);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(sl_rng_u64(&rng) % (uint64_t)m.config.vocab_size);
        targets_ids[i] = (int)(sl_rng_u64(&rng) % (uint64_t)m.config.vocab_size);
    }
    double total = 0.0, fwd = 0.0, bwd = 0.0;
    float loss = 0.0f;
    for (int step = 0; step < warmup + steps; step++) {
        sl_segment_input in = {.B = B, .T = T, .tokens = tokens, .targets = targets_ids, .want_grad = 1};
        double t0 = sl_now_s();
        sl_lora_zero_grad(&l);
        if (sl_segment_forward(s, &in)) break;
        double t1 = sl_now_s();
        if (sl_segment_backward(s, NULL, NULL)) break;
        double t2 = sl_now_s();
        sl_adamw_update(&opt, l.params, l.grads, sl_clip_scale(&oc, sl_sum_squares(l.grads, l.n_params)));
        double t3 = sl_now_s();
        loss = sl_segment_loss(s);
        fprintf(stderr, "step %d: loss %.4f, %.1f ms (forward %.1f, backward %.1f)%s\n", step, loss,
                1e3 * (t3 - t0), 1e3 * (t1 - t0), 1e3 * (t2 - t1), step < warmup ? " warm-up" : "");
        if (step >= warmup) {
            total += t3 - t0;
            fwd += t1 - t0;
            bwd += t2 - t1;
        }
    }
    const double step_s = total / steps;
    const double flops = step_flops(&m.config, &l, B, T);
    const double gflops = flops / step_s / 1e9;
    const double blas = sgemm_gflops();
    sl_segment_memory mu = sl_segment_memory_use(s);
    printf("model: %s L=%d C=%d V=%d, %zu base weight bytes (mapped); LoRA %s rank %d: %zu parameters\n",
           sl_arch_name(m.config.arch), m.config.n_layers, m.config.dim, m.config.vocab_size, m.file.m_bytes, targets,
           rank, l.n_params);
    printf("memory: base weights resident %zu, adapters+grads %zu, optimizer %zu, saved activations %zu, scratch %zu\n",
           rss_model, 2 * l.n_params * sizeof(float), 2 * l.n_params * sizeof(float), mu.activation_bytes,
           mu.scratch_bytes);
    printf("time per step: %.1f ms (forward %.1f, backward %.1f, optimizer %.1f); %.2f GFLOP per step\n", 1e3 * step_s,
           1e3 * fwd / steps, 1e3 * bwd / steps, 1e3 * (total - fwd - bwd) / steps, flops / 1e9);
    printf("tokens_per_s=%.1f gflops=%.2f sgemm_gflops=%.2f gflops_fraction=%.3f step_ms=%.1f peak_rss_bytes=%zu\n",
           (double)B * T / step_s, gflops, blas, blas > 0 ? gflops / blas : 0.0, 1e3 * step_s, sl_peak_rss_bytes());
    sl_segment_free(s);
    sl_adamw_free(&opt);
    sl_lora_free(&l);
    free(tokens);
    free(targets_ids);
    sl_model_free(&m);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "step") == 0) return bench_step(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "tokenize") == 0) return bench_tokenize(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "sgemm") == 0) {
        printf("sgemm_gflops=%.2f\n", sgemm_gflops());
        return 0;
    }
    fprintf(stderr, "usage: splitllm bench step|tokenize|sgemm [options] (--help for each)\n");
    return argc >= 1 && (strcmp(argv[0], "--help") == 0) ? 0 : 2;
}
