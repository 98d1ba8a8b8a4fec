/* progress.c: see progress.h. */
#include "util/progress.h"

#include <unistd.h>

#include "util/common.h"

#define PLAIN_REPORT_EVERY_S 10.0

void sl_progress_start(sl_progress *p, FILE *out, const char *what, long total) {
    p->p_out = out;
    p->p_tty = isatty(fileno(out));
    p->p_what = what;
    p->p_total = total;
    p->p_start_s = sl_now_s();
    p->p_last_print_s = 0.0;
    p->p_report_every_s = PLAIN_REPORT_EVERY_S;
}

void sl_progress_update(sl_progress *p, long done, double rate, const char *rate_unit, const char *extra) {
    double now = sl_now_s();
    int last = done >= p->p_total;
    if (!p->p_tty && !last && p->p_last_print_s > 0.0 && now - p->p_last_print_s < p->p_report_every_s) return;
    p->p_last_print_s = now;
    double elapsed = now - p->p_start_s;
    double eta = done > 0 ? elapsed / (double)done * (double)(p->p_total - done) : 0.0;
    fprintf(p->p_out, "%s%s %ld/%ld  %s  %.1f %s  elapsed %.0fs  ETA %.0fs%s", p->p_tty ? "\r\033[K" : "", p->p_what,
            done, p->p_total, extra ? extra : "", rate, rate_unit, elapsed, eta, p->p_tty ? "" : "\n");
    fflush(p->p_out);
}

void sl_progress_finish(sl_progress *p) {
    if (p->p_tty) fprintf(p->p_out, "\n");
    fflush(p->p_out);
}
