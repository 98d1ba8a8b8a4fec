/* prepare.h: dataset preparation — parses plain text, JSONL or the E2E CSV into records
 * (text, or prompt + completion, and an optional key value), tokenizes them into samples
 * with a loss mask, holds out a validation split, partitions the rest over users and
 * writes one shard per user, val.shard and manifest.json into a folder that appears whole
 * or not at all. The formats are in docs/FORMATS.md.
 * Not for: the shard byte layout (shard.h), who gets which sample (partition.h), batching
 * (loader.h). */
#ifndef SPLITLLM_DATA_PREPARE_H
#define SPLITLLM_DATA_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "data/partition.h"

typedef enum { SL_FORMAT_TEXT = 1, SL_FORMAT_JSONL = 2, SL_FORMAT_E2E = 3 } sl_input_format;

/* "text", "jsonl", "e2e" <-> the enum. */
int sl_input_format_parse(const char *name, sl_input_format *out);
const char *sl_input_format_name(sl_input_format f);
/* The format a file name suggests: .jsonl/.json -> jsonl, .csv -> e2e, anything else text. */
sl_input_format sl_input_format_guess(const char *path);

/* E2E prompt = meaning representation + this separator; the completion (the reference)
 * follows as a new word (see docs/FORMATS.md, "E2E"). */
#define SL_E2E_SEPARATOR "\n"
/* Samples keep at most max_seq + 1 tokens unless told otherwise. */
#define SL_PREPARE_DEFAULT_MAX_SEQ 256
#define SL_PREPARE_DEFAULT_VAL_FRACTION 0.1
#define SL_PREPARE_DEFAULT_SEED 1337
/* The group of samples that have no value for the key, as the manifest names it. */
#define SL_KEY_MISSING_NAME "(missing)"

/* ---------------------------------------------------------------- records */

/* One parsed input item, before tokenization: either text, or prompt + completion. */
typedef struct {
    char *rc_text;        /* NULL for prompt/completion records */
    size_t rc_text_len;
    char *rc_prompt;      /* NULL for text records */
    size_t rc_prompt_len;
    char *rc_completion;
    size_t rc_completion_len;
    char *rc_key;         /* value of the partition key, NULL when absent or not asked for */
    size_t rc_line;       /* 1-based line of the input where the record starts */
} sl_record;

typedef struct {
    sl_record *rs_items;
    size_t rs_n, rs_cap;
} sl_records;

typedef struct {
    sl_input_format pp_format;
    const char *pp_separator; /* text: documents split on this exact string; NULL: blank lines */
    const char *pp_key;       /* field to read the key from (jsonl field, E2E MR attribute); NULL: none */
} sl_parse_config;

/* Parses bytes of a file (path only names it in messages). Checks UTF-8 first (an error
 * names the line and byte offset); empty input, a missing field or broken CSV quoting is an
 * error naming the line and what was expected. */
int sl_parse_records(const char *path, const char *data, size_t bytes, const sl_parse_config *cfg,
                     sl_records *out);
void sl_records_free(sl_records *rs);

/* 0 when bytes are valid UTF-8 without NUL; else SL_EFORMAT naming path, line, offset. */
int sl_check_utf8(const char *path, const char *data, size_t bytes);

/* The value of attribute key in an E2E meaning representation "name[The Vaults],
 * eatType[pub], ...": *out is an sl_alloc'd copy, or NULL when the attribute is absent.
 * SL_EFORMAT when the MR is not a list of attribute[value] (message names path:line). */
int sl_e2e_mr_value(const char *path, size_t line, const char *mr, size_t len, const char *key, char **out);

/* Turns "\n", "\t", "\r", "\\" in a command-line separator into their bytes (sl_alloc'd). */
int sl_unescape_separator(const char *in, char **out);

/* ---------------------------------------------------------------- the pipeline */

typedef struct {
    const char *pc_tokenizer_path;
    const char *pc_input_path;
    const char *pc_out_dir;
    sl_input_format pc_format;
    int pc_max_seq;            /* T: samples keep at most T+1 tokens; 0: no limit */
    double pc_val_fraction;    /* share of samples held out for val.shard */
    int pc_users;              /* N user shards */
    sl_partition_method pc_partition;
    double pc_alpha;           /* Dirichlet concentration */
    const char *pc_key;        /* partition key; NULL: none */
    uint64_t pc_seed;
    int pc_strict;             /* 1: a sample longer than T+1 is an error, not cut */
    const char *pc_separator;  /* text: raw (escaped) separator; NULL: blank lines */
} sl_prepare_config;

void sl_prepare_config_default(sl_prepare_config *c);

typedef struct {
    uint64_t ps_samples;            /* records in the input */
    uint64_t ps_truncated;          /* samples cut to T+1 tokens */
    uint64_t ps_val_samples, ps_val_tokens, ps_val_mask_tokens;
    int ps_users;
    uint64_t *ps_user_samples;      /* (N) */
    uint64_t *ps_user_tokens;       /* (N) */
    uint64_t *ps_user_mask_tokens;  /* (N) tokens that count in the loss */
    int ps_key_values;              /* distinct key values (the missing group counts as one) */
    double ps_seconds;
} sl_prepare_summary;

void sl_prepare_summary_free(sl_prepare_summary *s);

/* Runs the whole preparation. On failure nothing is left in or beside pc_out_dir: the files
 * are written into a temp folder beside it that is renamed into place at the end (an
 * existing pc_out_dir is replaced only when it is empty or holds a manifest.json). */
int sl_prepare_run(const sl_prepare_config *cfg, sl_prepare_summary *out);

#endif
