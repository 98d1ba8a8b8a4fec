/* latency.h: the modeled latency of a training round of each scheme under the wireless
 * model (net/wireless.h) — the bytes a scheme puts on each link and the FLOPs each tier
 * computes, turned into time. Not for: measuring (runs measure wall time themselves). */
#ifndef SPLITLLM_SCHEMES_LATENCY_H
#define SPLITLLM_SCHEMES_LATENCY_H

#include "net/wireless.h"
#include "schemes/run.h"

/* Round `round` (1-based) of scheme c->scheme, in which the users active[0..n_active) trained
 * (splitllm: one per edge; sfl, fl: all; sl: all, one after another). distances_m (N) from
 * sl_wireless_place_users. *out_s receives the modeled round latency. */
int sl_modeled_round_latency(const sl_run_config *c, const sl_config *mc, const sl_wireless_config *wc,
                             const double *distances_m, int round, const int *active, int n_active, double *out_s);

#endif
