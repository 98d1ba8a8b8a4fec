/* central.c: see central.h. */
#include "schemes/central.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "data/loader.h"
#include "data/shard.h"
#include "model/segment.h"
#include "schemes/evaluate.h"
#include "util/progress.h"

#define MAX_USERS 100000

/* All user shards of a prepared folder as one in-memory shard. */
static int load_training_data(const char *dir, sl_shard *all, int *n_users) {
    char path[1200];
    int rc = SL_OK;
    *n_users = 0;
    for (int u = 0; u < MAX_USERS; u++) {
        snprintf(path, sizeof(path), "%s/user_%03d.shard", dir, u);
        struct stat st;
        if (stat(path, &st) != 0) break;
        sl_shard s;
        if ((rc = sl_shard_read(&s, path))) break;
        if (u == 0) rc = sl_shard_init(all, s.sh_tokenizer_sha256, s.sh_vocab_size, s.sh_max_sample_tokens);
        else if (memcmp(s.sh_tokenizer_sha256, all->sh_tokenizer_sha256, SL_SHA256_BYTES) != 0)
            rc = sl_fail(SL_EFORMAT, "%s: tokenizer hash differs from user_000.shard's", path);
        for (uint64_t i = 0; rc == 0 && i < s.sh_n_samples; i++) {
            uint64_t a = s.sh_offsets[i], b = s.sh_offsets[i + 1];
            rc = sl_shard_append(all, s.sh_tokens + a, s.sh_mask + a, (size_t)(b - a));
        }
        sl_shard_free(&s);
        if (rc) break;
        (*n_users)++;
    }
    if (rc == 0 && *n_users == 0) rc = sl_fail(SL_EIO, "%s: no user_000.shard (expected the output of splitllm prepare)", dir);
    if (rc && *n_users > 0) sl_shard_free(all);
    return rc;
}

static int write_summary(const sl_central_config *cfg, const sl_central_result *r, int n_users, size_t peak_rss) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "scheme", "central");
    cJSON_AddNumberToObject(j, "users", n_users);
    cJSON_AddNumberToObject(j, "steps", cfg->steps);
    cJSON_AddNumberToObject(j, "batch", cfg->batch);
    cJSON_AddNumberToObject(j, "seq", cfg->seq);
    cJSON_AddNumberToObject(j, "lora_rank", cfg->lora.rank);
    cJSON_AddNumberToObject(j, "lr", cfg->optim.lr);
    cJSON_AddNumberToObject(j, "seed", (double)cfg->seed);
    cJSON_AddNumberToObject(j, "eval_loss_initial", r->eval_loss_initial);
    cJSON_AddNumberToObject(j, "eval_loss_final", r->eval_loss_final);
    cJSON_AddNumberToObject(j, "eval_perplexity_initial", exp(r->eval_loss_initial));
    cJSON_AddNumberToObject(j, "eval_perplexity_final", exp(r->eval_loss_final));
    cJSON_AddNumberToObject(j, "train_loss_final", r->train_loss_final);
    if (r->n_eval_losses > 0) { /* run --scheme central: one per round (eval_every = local steps) */
        cJSON *a = cJSON_AddArrayToObject(j, "eval_loss_per_round");
        for (int i = 0; i < r->n_eval_losses; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(r->eval_losses[i]));
    }
    cJSON_AddNumberToObject(j, "tokens_per_s", r->tokens_per_s);
    cJSON_AddNumberToObject(j, "wall_seconds", r->wall_seconds);
    cJSON *rss = cJSON_AddObjectToObject(j, "peak_rss_bytes");
    cJSON_AddNumberToObject(rss, "central", (double)peak_rss);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (text == NULL) return sl_fail(SL_ENOMEM, "summary.json: out of memory");
    char path[1200];
    snprintf(path, sizeof(path), "%s/summary.json", cfg->out_dir);
    size_t n = strlen(text);
    text[n] = '\n'; /* cJSON_Print leaves room for nothing else: write n bytes, then the newline */
    int rc = sl_write_file_atomic(path, text, n + 1);
    text[n] = '\0';
    free(text);
    return rc;
}

int sl_central_run(const sl_central_config *cfg, sl_central_result *out) {
    memset(out, 0, sizeof(*out));
    if (cfg->steps < 1 || cfg->batch < 1 || cfg->seq < 1)
        return sl_fail(SL_EINVAL, "--steps %d, --batch %d, --seq %d: expected all >= 1", cfg->steps, cfg->batch,
                       cfg->seq);
    int rc = sl_make_dirs(cfg->out_dir);
    if (rc) return rc;
    sl_model m;
    rc = sl_model_load(&m, cfg->model_path);
    if (rc) return rc;
    sl_shard train = {0}, val = {0};
    sl_lora lora = {0};
    sl_adamw opt = {0};
    sl_segment *seg = NULL;
    sl_loader ld = {0};
    sl_batch b = {0};
    FILE *metrics = NULL;
    int n_users = 0, have_loader = 0;
    char path[1200];
    if ((rc = load_training_data(cfg->data_dir, &train, &n_users))) goto done;
    snprintf(path, sizeof(path), "%s/val.shard", cfg->data_dir);
    if ((rc = sl_shard_read(&val, path))) goto done;
    if ((int)train.sh_vocab_size > m.config.vocab_size) {
        rc = sl_fail(SL_EINVAL, "%s: shards use a vocabulary of %u tokens, the model has %d", cfg->data_dir,
                     train.sh_vocab_size, m.config.vocab_size);
        goto done;
    }
    if ((rc = sl_lora_init(&lora, &m.config, &cfg->lora, 0, m.config.n_layers))) goto done;
    sl_adamw_config oc = cfg->optim;
    if (oc.total_steps == 0) oc.total_steps = cfg->steps;
    if ((rc = sl_adamw_init(&opt, &oc, lora.n_params))) goto done;
    if (cfg->cut1 < 0 || cfg->cut1 > cfg->cut2 || cfg->cut2 > m.config.n_layers) {
        rc = sl_fail(SL_EINVAL, "--cuts %d,%d: expected 0 <= c1 <= c2 <= %d", cfg->cut1, cfg->cut2, m.config.n_layers);
        goto done;
    }
    const size_t group_ends[3] = {lora.layer_params * (size_t)cfg->cut1, lora.layer_params * (size_t)cfg->cut2,
                                  lora.n_params};
    sl_segment_config sc = {0, m.config.n_layers, 1, 1, cfg->batch, cfg->seq};
    if ((rc = sl_segment_create(&seg, &m, &lora, &sc))) goto done;
    sl_loader_config lc = {.lc_B = cfg->batch, .lc_T = cfg->seq, .lc_packing = cfg->packing, .lc_shuffle = 1,
                           .lc_seed = cfg->seed};
    if ((rc = sl_loader_open(&ld, &train, &lc))) goto done;
    have_loader = 1;
    if ((rc = sl_batch_alloc(&b, cfg->batch, cfg->seq))) goto done;
    snprintf(path, sizeof(path), "%s/metrics.jsonl", cfg->out_dir);
    metrics = fopen(path, "w");
    if (metrics == NULL) {
        rc = sl_fail(SL_EIO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    double t_start = sl_now_s();
    if ((rc = sl_evaluate_segment(seg, &val, cfg->batch, cfg->seq, cfg->eval_batches, &out->eval_loss_initial))) goto done;
    fprintf(metrics, "{\"tier\":\"central\",\"step\":0,\"eval_loss\":%.6f}\n", out->eval_loss_initial);
    fprintf(stderr, "central: %d users' data, %llu samples; eval loss before training %.4f (perplexity %.2f)\n",
            n_users, (unsigned long long)train.sh_n_samples, out->eval_loss_initial, exp(out->eval_loss_initial));
    if (cfg->eval_every > 0) {
        out->eval_losses = calloc((size_t)(cfg->steps / cfg->eval_every + 2), sizeof(float));
        if (out->eval_losses == NULL) {
            rc = sl_fail(SL_ENOMEM, "central: out of memory");
            goto done;
        }
    }
    sl_progress prog;
    sl_progress_start(&prog, stderr, "step", cfg->steps);
    double train_s = 0.0;
    uint64_t tokens_done = 0;
    for (int step = 1; step <= cfg->steps; step++) {
        double t0 = sl_now_s();
        if ((rc = sl_loader_next(&ld, &b)) < 0) goto done;
        sl_segment_input in = {.B = cfg->batch, .T = cfg->seq, .tokens = b.b_tokens, .targets = b.b_targets,
                               .mask = b.b_mask, .want_grad = 1, .dropout_seed = cfg->seed ^ (uint64_t)step};
        sl_lora_zero_grad(&lora);
        if ((rc = sl_segment_forward(seg, &in)) || (rc = sl_segment_backward(seg, NULL, NULL))) goto done;
        double sumsq = sl_sum_squares(lora.grads, lora.n_params);
        float lr = sl_adamw_lr(&opt.config, opt.step);
        sl_adamw_update_groups(&opt, lora.params, lora.grads, 3, group_ends);
        double dt = sl_now_s() - t0;
        train_s += dt;
        tokens_done += (uint64_t)cfg->batch * (uint64_t)cfg->seq;
        out->train_loss_final = sl_segment_loss(seg);
        fprintf(metrics, "{\"tier\":\"central\",\"step\":%d,\"loss\":%.9g,\"lr\":%.6g,\"grad_norm\":%.6g,"
                "\"seconds\":%.4f,\"tokens\":%d}\n", step, out->train_loss_final, lr, sqrt(sumsq), dt,
                cfg->batch * cfg->seq);
        char extra[96];
        snprintf(extra, sizeof(extra), "loss %.4f", out->train_loss_final);
        sl_progress_update(&prog, step, (double)tokens_done / train_s, "tok/s", extra);
        if (cfg->eval_every > 0 && step % cfg->eval_every == 0 && step != cfg->steps) {
            float ev;
            if ((rc = sl_evaluate_segment(seg, &val, cfg->batch, cfg->seq, cfg->eval_batches, &ev))) goto done;
            fprintf(metrics, "{\"tier\":\"central\",\"step\":%d,\"eval_loss\":%.6f}\n", step, ev);
            if (out->eval_losses) out->eval_losses[out->n_eval_losses++] = ev;
        }
        fflush(metrics);
    }
    sl_progress_finish(&prog);
    if ((rc = sl_evaluate_segment(seg, &val, cfg->batch, cfg->seq, cfg->eval_batches, &out->eval_loss_final))) goto done;
    fprintf(metrics, "{\"tier\":\"central\",\"step\":%d,\"eval_loss\":%.6f}\n", cfg->steps, out->eval_loss_final);
    if (out->eval_losses) out->eval_losses[out->n_eval_losses++] = out->eval_loss_final;
    out->wall_seconds = sl_now_s() - t_start;
    out->tokens_per_s = train_s > 0 ? (double)tokens_done / train_s : 0.0;
    snprintf(path, sizeof(path), "%s/lora.safetensors", cfg->out_dir);
    if ((rc = sl_lora_save(&lora, path))) goto done;
    rc = write_summary(cfg, out, n_users, sl_peak_rss_bytes());
    fprintf(stderr, "central: eval loss %.4f -> %.4f (perplexity %.2f -> %.2f) in %.1f s; adapter %s\n",
            out->eval_loss_initial, out->eval_loss_final, exp(out->eval_loss_initial), exp(out->eval_loss_final),
            out->wall_seconds, path);
done:
    if (metrics) fclose(metrics);
    sl_batch_free(&b);
    if (have_loader) sl_loader_close(&ld);
    sl_segment_free(seg);
    sl_adamw_free(&opt);
    sl_lora_free(&lora);
    sl_shard_free(&val);
    if (n_users > 0) sl_shard_free(&train);
    sl_model_free(&m);
    return rc;
}
