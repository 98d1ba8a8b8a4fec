/* run.h: one deployment of a training scheme — its configuration (the flags shared by
 * `splitllm run` and the tier commands), and the three tiers of the splitllm scheme, each
 * a function that runs until training is over and can live in a thread (inproc://) or a
 * process of its own (ipc://, tcp://).
 *
 * The cloud is authoritative: it holds the run configuration and sends the training part of
 * it to each edge (HELLO_OK), which passes it to its users. Edges and users need only their
 * id, where to connect, their data, and where to cache model parts.
 *
 * Not for: sockets and message layout (net/), the training math (model/). */
#ifndef SPLITLLM_SCHEMES_RUN_H
#define SPLITLLM_SCHEMES_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "model/lora.h"
#include "model/optim.h"
#include "net/codec.h"

typedef struct {
    const char *scheme;        /* "splitllm", "sfl", "sl", "fl" or "central" */
    const char *model_path;    /* cloud (and central): the whole base model */
    const char *tokenizer_path;
    const char *data_dir;      /* output of `splitllm prepare` */
    const char *out_dir;
    int users, edges;          /* N, M */
    int cut1, cut2;            /* user = [0,c1), edge = [c1,c2), cloud = [c2,L) */
    int rounds;                /* R */
    int local_steps;           /* E: steps of each active user per round */
    int batch, seq;            /* B, T */
    int packing;
    sl_lora_config lora;
    sl_adamw_config optim;
    uint64_t seed;
    int eval_batches;          /* validation batches per evaluation; 0 = all */
    const char *select;        /* how an edge picks its user each round: "round-robin" or "random" */
    const char *assign;        /* user -> edge, e.g. "0,0,1,1"; NULL = balanced (u mod M) */
    int timeout_ms;            /* every wait for a peer */
    int processes;             /* run: one process per tier instead of threads */
    const char *transport;     /* run: inproc (threads), ipc or tcp */
    int base_port;             /* run with tcp: cloud on base_port, edge e on base_port+1+e */
    sl_codec compress;         /* activations up and gradients down: none, fp16, bf16, int8, topk:F */
    int shape_links;           /* pace every link to its modeled rate and delay (docs/WIRELESS.md) */
} sl_run_config;

/* Defaults for every field (the README lists them). */
void sl_run_config_defaults(sl_run_config *c);
/* Checks the fields that do not need the model (names the bad flag). */
int sl_run_config_validate(const sl_run_config *c);

/* Where a tier's memory goes, as the tier accounts for it itself (bytes). */
typedef struct {
    size_t base_weights;  /* the mapped model part (all of it is read every step) */
    size_t adapters;      /* LoRA parameters and gradients: every copy this process holds */
    size_t optimizer;     /* AdamW moments */
    size_t activations;   /* segments' saved activations and scratch */
    size_t messages;      /* the largest step messages in flight at once, with NNG's copies */
    size_t data;          /* the user's shard, held in memory */
    size_t start_rss;     /* resident when the tier started: libraries and runtime */
} sl_memory_breakdown;

/* What a tier process measured, for summary.json. peak_rss_bytes is the peak while it
 * trained: the tier resets the kernel's peak (VmHWM) once its parts are fetched and its
 * buffers allocated, so the one-time download is in setup_peak_rss_bytes instead. */
typedef struct {
    size_t peak_rss_bytes;
    size_t setup_peak_rss_bytes;
    sl_memory_breakdown memory;
    uint64_t bytes_up_sent, bytes_up_received;     /* on its link towards the cloud */
    uint64_t bytes_down_sent, bytes_down_received; /* on its links towards users */
    double seconds;
} sl_tier_report;

/* The cloud: listens on url, distributes parts, serves the M streams' forward/backward,
 * aggregates each round (FedAvg), writes adapters and metrics under out_dir. */
int sl_cloud_run(const sl_run_config *c, const char *url, sl_tier_report *rep);
/* Edge e: connects to the cloud, listens for its users on url. cache_dir holds its parts. */
int sl_edge_run(int edge_id, const char *cloud_url, const char *url, const char *cache_dir, int timeout_ms,
                sl_tier_report *rep);
/* User u: connects to its server (its edge in splitllm, the cloud in sfl, sl, fl) and
 * trains on shard_path whenever the server gives it a task. */
int sl_user_run(int user_id, const char *server_url, const char *shard_path, const char *cache_dir, int timeout_ms,
                sl_tier_report *rep);

/* Writes a tier's report as JSON (what `splitllm run --processes` collects). */
int sl_tier_report_write(const sl_tier_report *rep, const char *tier, int id, const char *path);

/* The edge that user u is attached to under c (assign list or u mod M); -1 if invalid. */
int sl_run_edge_of_user(const sl_run_config *c, int user);

/* The whole deployment on one machine: threads over inproc:// (default) or processes over
 * ipc:// / tcp://127.0.0.1; evaluates before and after, writes summary.json. argv0 is the
 * splitllm binary (for --processes). */
int sl_run(const sl_run_config *c, const char *argv0);

#endif
