/* link.h: request/reply links between tiers over NNG — a client (sl_link) that sends one
 * request at a time and waits for its reply with timeouts and retries, and a server
 * (sl_server) that answers K requests at once from K worker threads, each with its own REP
 * context, and answers a resent request from a replay cache instead of applying it twice.
 * Addresses are NNG URLs: inproc://name, ipc:///path, tcp://host:port (tcp://host:0 picks
 * a free port: see sl_server_url). The rules (sequence numbers, idempotency, timeouts,
 * sizes) are in docs/PROTOCOL.md.
 * Not for: the message format (protocol.h); what a tier does with a request (schemes/).
 * TODO: tls+tcp:// (NNG's TLS transport needs a certificate configuration first). */
#ifndef SPLITLLM_NET_LINK_H
#define SPLITLLM_NET_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "net/protocol.h"

#define SL_URL_MAX 256                  /* bytes of a URL, NUL included */
#define SL_PEER_NAME_MAX 64             /* bytes of a peer or server name, NUL included */
#define SL_LINK_SEND_TIMEOUT_MS_DEFAULT 10000  /* to hand a request to a connected peer */
#define SL_LINK_RECV_TIMEOUT_MS_DEFAULT 60000  /* for the reply: a cloud step on 2 cores */
#define SL_LINK_TRIES_DEFAULT 3
/* A server remembers this many senders (tier, id) for its replay cache; one more is
 * refused. Far above M edges + N users, low enough that bogus ids cannot exhaust memory. */
#define SL_SERVER_MAX_SENDERS 4096

/* ---------------------------------------------------------------- client */

typedef struct {
    const char *lc_url;      /* the server: inproc://, ipc://, tcp:// */
    const char *lc_peer;     /* what it is, for messages: "edge 1" -> "edge 1 at tcp://..." */
    sl_tier lc_tier;         /* who this process is: the sender fields of requests */
    uint32_t lc_sender;
    /* Sequence number of the first request; each call takes the next. 0: microseconds since
     * the epoch at open, so a restarted process numbers above what the server has seen.
     * One (tier, sender) must have one link per server at a time. */
    uint64_t lc_first_seq;
    int lc_send_timeout_ms;  /* per try: waiting for a connection to hand the request to */
    int lc_recv_timeout_ms;  /* per try: waiting for the reply */
    int lc_tries;            /* >= 1: sends of the same request (same seq) before giving up */
    size_t lc_max_msg_bytes; /* requests and replies larger than this are refused */
} sl_link_config;

typedef struct {
    uint64_t ls_calls;          /* sl_link_call calls that sent something */
    uint64_t ls_tries;          /* sends (calls + retries) */
    uint64_t ls_timeouts;       /* tries that timed out or whose connection dropped */
    uint64_t ls_bytes_sent;     /* encoded bytes of every try */
    uint64_t ls_bytes_received; /* encoded bytes of every reply */
} sl_link_stats;

typedef struct sl_link sl_link;

/* Defaults: timeouts and tries above, SL_MSG_MAX_BYTES_DEFAULT, seq from the clock. */
void sl_link_config_default(sl_link_config *cfg);
/* Dials cfg->lc_url in the background (the server may come up later; each call waits for
 * the connection up to the send timeout). SL_EINVAL for a bad configuration, SL_ENET when
 * NNG refuses the URL. The strings are copied. */
int sl_link_open(sl_link **out, const sl_link_config *cfg);
/* Sends request (its sender fields and the next seq are filled in) and waits for the
 * reply, which must decode, echo the seq, and be a type sl_msg_reply_allowed() allows.
 * On a timeout, or when the connection drops under the request, the same bytes (same seq)
 * are sent again, up to lc_tries sends. *reply
 * points at the link's copy, valid until the next call, sl_link_release_reply or close;
 * its tensors point into the received message (no copy). Returns
 *   SL_ETIMEDOUT  no reply after lc_tries tries; the message names the peer, the request
 *                 and the time waited;
 *   SL_ENET       the peer answered ERROR (its text is in the message), every try ended in
 *                 a connection reset (e.g. a request above the peer's maximum size over
 *                 tcp/ipc, where NNG drops the connection), or NNG failed;
 *   SL_EFORMAT    the reply is malformed, has another seq or a type not allowed;
 *   SL_EINVAL     request is not a request type or is larger than lc_max_msg_bytes.
 * The request's tensor data must stay valid during the call (a retry encodes it again).
 * Not thread-safe: one call at a time per link. */
int sl_link_call(sl_link *link, sl_msg *request, const sl_msg **reply);
/* Frees the last reply early (it is freed anyway by the next call). */
void sl_link_release_reply(sl_link *link);
const char *sl_link_peer(const sl_link *link); /* "edge 1 at tcp://127.0.0.1:5555" */
/* --shape-links: from now on each request waits, before it is sent, for the time its bytes
 * take on a link of up_bps with up_delay_s of latency, and each reply, once received, for
 * the same on the way down — so measured times reflect a modeled link (docs/WIRELESS.md).
 * A rate of 0 turns shaping off in that direction. */
void sl_link_set_shaping(sl_link *link, double up_bps, double up_delay_s, double down_bps, double down_delay_s);
void sl_link_stats_get(const sl_link *link, sl_link_stats *out);
void sl_link_close(sl_link *link); /* NULL is fine */

/* ---------------------------------------------------------------- server */

/* Answers one request. reply arrives as an empty ACK with the request's round, step and
 * stream; the handler may sl_msg_init it again (before adding anything) to another type and
 * add tensors by pointer. Data it points at must stay valid until the handler returns and
 * the server has encoded the reply — handler-owned buffers (per-stream state) are fine; for
 * data computed on the spot use sl_msg_alloc(reply, ...), freed after encoding. A nonzero
 * return (after sl_fail) makes the reply an ERROR carrying sl_last_error(). Called from K
 * worker threads at once (for different senders; never twice at once for one sender):
 * it must be thread-safe. */
typedef int (*sl_server_handler)(void *arg, const sl_msg *request, sl_msg *reply);

typedef struct {
    const char *sc_url;        /* where to listen */
    const char *sc_name;       /* what this server is, for logs: "cloud" */
    sl_tier sc_tier;           /* the sender fields of replies */
    uint32_t sc_id;
    int sc_workers;            /* K >= 1: requests served at once */
    int sc_send_timeout_ms;    /* handing a reply back */
    int sc_poll_ms;            /* an idle worker checks for shutdown this often */
    /* a resent request whose first copy is still in its handler waits this long for that
     * reply before it is answered with an ERROR */
    int sc_busy_wait_ms;
    size_t sc_max_msg_bytes;   /* requests and replies larger than this are refused */
    FILE *sc_log;              /* one line per refused message; NULL: silent */
    sl_server_handler sc_handler;
    void *sc_handler_arg;
} sl_server_config;

typedef struct {
    uint64_t ss_requests;       /* messages received */
    uint64_t ss_handled;        /* handler calls */
    uint64_t ss_replayed;       /* resent requests answered from the cache */
    uint64_t ss_rejected_old;   /* seq below the last seen: refused, not applied */
    uint64_t ss_malformed;      /* refused by the decoder (or not a request) */
    uint64_t ss_handler_errors; /* handler calls that failed */
    uint64_t ss_bytes_received;
    uint64_t ss_bytes_sent;     /* replies handed to NNG to send */
} sl_server_stats;

typedef struct sl_server sl_server;

/* Defaults: 1 worker, send timeout as a link's, poll 100 ms, busy wait as a link's receive
 * timeout, SL_MSG_MAX_BYTES_DEFAULT, log to stderr. */
void sl_server_config_default(sl_server_config *cfg);
/* Listens and starts the workers. SL_EINVAL for a bad configuration, SL_ENET when NNG
 * cannot listen there (the message names the URL). */
int sl_server_open(sl_server **out, const sl_server_config *cfg);
/* The URL it listens on, with the port NNG bound when the URL asked for port 0. */
const char *sl_server_url(const sl_server *server);
void sl_server_stats_get(sl_server *server, sl_server_stats *out);
/* Stops the workers (an idle one within sc_poll_ms; a busy one when its handler returns),
 * joins them, then closes the contexts and the socket and frees the cache. NULL is fine. */
void sl_server_close(sl_server *server);

#endif
