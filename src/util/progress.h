/* progress.h: progress of long work — on a terminal one line redrawn in place with rate
 * and ETA, otherwise a plain line every report_every_s seconds (and at the end).
 * Not for: results (those go to JSONL/JSON files). */
#ifndef SPLITLLM_UTIL_PROGRESS_H
#define SPLITLLM_UTIL_PROGRESS_H

#include <stdio.h>

typedef struct {
    FILE *p_out;
    int p_tty;
    const char *p_what;      /* "step", "round" */
    long p_total;
    double p_start_s;
    double p_last_print_s;
    double p_report_every_s; /* plain mode */
} sl_progress;

void sl_progress_start(sl_progress *p, FILE *out, const char *what, long total);
/* done units so far; rate is in units_name per second (e.g. tokens/s); extra is free text. */
void sl_progress_update(sl_progress *p, long done, double rate, const char *rate_unit, const char *extra);
void sl_progress_finish(sl_progress *p);

#endif
