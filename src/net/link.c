/* link.c: see link.h. Client: one NNG REQ socket, synchronous send/receive with socket
 * timeouts; NNG's own resend timer is off so that the retry rule (same bytes, same seq,
 * lc_tries sends) is ours alone. Server: one REP socket, K worker threads each looping
 * receive -> serve -> send on its own context; the replay cache is a table of senders
 * under one mutex, with a condition variable for a resent request whose first copy is
 * still being handled. */
#include "net/link.h"
#include "net/wireless.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "util/common.h"

/* NNG's size limit counts the message as the transport sees it: ours plus the REQ/REP
 * routing header (4 bytes per hop); this leaves room for a few hops. Our own limit is
 * then checked exactly by the decoder. */
#define NNG_RECV_SLACK_BYTES 64
#define ERROR_TEXT_BYTES 1024
#define DESCRIBE_BYTES 160
#define ADDR_BYTES 160

/* ---------------------------------------------------------------- shared helpers */

static int valid_url(const char *url) { return url != NULL && url[0] != '\0' && strlen(url) < SL_URL_MAX; }

/* Makes the body of m start on an SL_MSG_DATA_ALIGN boundary so its tensors can be read in
 * place. REQ/REP strip a 4-byte routing header from the front of the body, which leaves
 * it misaligned; the bytes are moved down into the message's own headroom when there is
 * some (no second copy of a large message), else copied into *copy (sl_free it). */
static int align_body(nng_msg *m, const uint8_t **data, void **copy) {
    static const uint8_t zeros[SL_MSG_DATA_ALIGN];
    *copy = NULL;
    size_t n = nng_msg_len(m);
    size_t off = (uintptr_t)nng_msg_body(m) % SL_MSG_DATA_ALIGN;
    if (off == 0) {
        *data = nng_msg_body(m);
        return SL_OK;
    }
    if (nng_msg_insert(m, zeros, off) == 0) {
        uint8_t *q = nng_msg_body(m);
        if ((uintptr_t)q % SL_MSG_DATA_ALIGN == 0) {
            memmove(q, q + off, n);
            nng_msg_chop(m, off);
            *data = q;
            return SL_OK;
        }
        nng_msg_trim(m, off); /* NNG moved the bytes instead: undo, fall back to a copy */
    }
    uint8_t *c = sl_alloc(n);
    if (c == NULL) return SL_ENOMEM;
    memcpy(c, nng_msg_body(m), n);
    *copy = c;
    *data = c;
    return SL_OK;
}

/* Encodes msg into a fresh nng_msg (no intermediate buffer). */
static int encode_nng(sl_msg *msg, size_t max_bytes, const char *what, nng_msg **out) {
    *out = NULL;
    size_t bytes = 0;
    int rc = sl_msg_encoded_bytes(msg, &bytes);
    if (rc != 0) return rc;
    if (bytes > max_bytes) {
        char desc[DESCRIBE_BYTES];
        sl_msg_describe(&msg->m_header, desc, sizeof(desc));
        return sl_fail(SL_EINVAL, "%s: %s is %zu bytes encoded, more than the maximum message size %zu", what, desc,
                       bytes, max_bytes);
    }
    nng_msg *m;
    int rv = nng_msg_alloc(&m, bytes);
    if (rv != 0) return sl_fail(SL_ENOMEM, "%s: cannot allocate a %zu-byte message: %s", what, bytes, nng_strerror(rv));
    rc = sl_msg_encode_into(msg, nng_msg_body(m), bytes);
    if (rc != 0) {
        nng_msg_free(m);
        return rc;
    }
    *out = m;
    return SL_OK;
}

/* ---------------------------------------------------------------- client */

struct sl_link {
    nng_socket l_sock;
    char l_url[SL_URL_MAX];
    char l_peer[SL_PEER_NAME_MAX + 4 + SL_URL_MAX]; /* "edge 1 at tcp://..." */
    sl_tier l_tier;
    uint32_t l_sender;
    uint64_t l_next_seq;
    int l_send_timeout_ms;
    int l_recv_timeout_ms;
    int l_tries;
    size_t l_max_msg_bytes;
    /* the last reply: decoded view, the NNG message it points into, or an aligned copy */
    sl_msg l_reply;
    nng_msg *l_reply_nng;
    void *l_reply_copy;
    sl_link_stats l_stats;
    sl_wireless_shaper l_up, l_down; /* --shape-links; rate 0: off */
};

void sl_link_config_default(sl_link_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->lc_peer = "peer";
    cfg->lc_tier = SL_TIER_USER;
    cfg->lc_send_timeout_ms = SL_LINK_SEND_TIMEOUT_MS_DEFAULT;
    cfg->lc_recv_timeout_ms = SL_LINK_RECV_TIMEOUT_MS_DEFAULT;
    cfg->lc_tries = SL_LINK_TRIES_DEFAULT;
    cfg->lc_max_msg_bytes = SL_MSG_MAX_BYTES_DEFAULT;
}

static uint64_t clock_seq(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int link_set_options(sl_link *l) {
    int rv;
    if ((rv = nng_socket_set_ms(l->l_sock, NNG_OPT_SENDTIMEO, l->l_send_timeout_ms)) != 0 ||
        (rv = nng_socket_set_ms(l->l_sock, NNG_OPT_RECVTIMEO, l->l_recv_timeout_ms)) != 0 ||
        (rv = nng_socket_set_size(l->l_sock, NNG_OPT_RECVMAXSZ, l->l_max_msg_bytes + NNG_RECV_SLACK_BYTES)) != 0 ||
        (rv = nng_socket_set_ms(l->l_sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0)
        return sl_fail(SL_ENET, "%s: cannot set socket options: %s", l->l_peer, nng_strerror(rv));
    return SL_OK;
}

int sl_link_open(sl_link **out, const sl_link_config *cfg) {
    *out = NULL;
    if (!valid_url(cfg->lc_url))
        return sl_fail(SL_EINVAL, "link: URL '%.300s' is empty or longer than %d bytes", cfg->lc_url ? cfg->lc_url : "",
                       SL_URL_MAX - 1);
    const char *peer = cfg->lc_peer ? cfg->lc_peer : "peer";
    if (strlen(peer) >= SL_PEER_NAME_MAX)
        return sl_fail(SL_EINVAL, "link to %s: peer name '%.100s' is longer than %d bytes", cfg->lc_url, peer,
                       SL_PEER_NAME_MAX - 1);
    if (sl_tier_name((uint8_t)cfg->lc_tier) == NULL)
        return sl_fail(SL_EINVAL, "link to %s at %s: tier %d, expected user, edge or cloud", peer, cfg->lc_url,
                       (int)cfg->lc_tier);
    if (cfg->lc_tries < 1 || cfg->lc_send_timeout_ms < 1 || cfg->lc_recv_timeout_ms < 1 ||
        cfg->lc_max_msg_bytes < SL_MSG_HEADER_BYTES)
        return sl_fail(SL_EINVAL, "link to %s at %s: tries %d, send timeout %d ms, receive timeout %d ms must be >= 1 "
                       "and the maximum message size %zu >= %u", peer, cfg->lc_url, cfg->lc_tries,
                       cfg->lc_send_timeout_ms, cfg->lc_recv_timeout_ms, cfg->lc_max_msg_bytes, SL_MSG_HEADER_BYTES);
    sl_link *l = sl_alloc(sizeof(*l));
    if (l == NULL) return SL_ENOMEM;
    snprintf(l->l_url, sizeof(l->l_url), "%s", cfg->lc_url);
    snprintf(l->l_peer, sizeof(l->l_peer), "%s at %s", peer, cfg->lc_url);
    l->l_tier = cfg->lc_tier;
    l->l_sender = cfg->lc_sender;
    l->l_next_seq = cfg->lc_first_seq != 0 ? cfg->lc_first_seq : clock_seq();
    l->l_send_timeout_ms = cfg->lc_send_timeout_ms;
    l->l_recv_timeout_ms = cfg->lc_recv_timeout_ms;
    l->l_tries = cfg->lc_tries;
    l->l_max_msg_bytes = cfg->lc_max_msg_bytes;
    int rv = nng_req0_open(&l->l_sock);
    if (rv != 0) {
        int rc = sl_fail(SL_ENET, "%s: cannot open a REQ socket: %s", l->l_peer, nng_strerror(rv));
        sl_free(l);
        return rc;
    }
    int rc = link_set_options(l);
    if (rc == 0 && (rv = nng_dial(l->l_sock, l->l_url, NULL, NNG_FLAG_NONBLOCK)) != 0)
        rc = sl_fail(SL_ENET, "%s: cannot dial: %s", l->l_peer, nng_strerror(rv));
    if (rc != 0) {
        nng_close(l->l_sock);
        sl_free(l);
        return rc;
    }
    *out = l;
    return SL_OK;
}

void sl_link_release_reply(sl_link *l) {
    if (l->l_reply_nng != NULL) nng_msg_free(l->l_reply_nng);
    sl_free(l->l_reply_copy);
    l->l_reply_nng = NULL;
    l->l_reply_copy = NULL;
    memset(&l->l_reply, 0, sizeof(l->l_reply));
}

int sl_link_call(sl_link *l, sl_msg *request, const sl_msg **reply) {
    *reply = NULL;
    sl_link_release_reply(l);
    sl_msg_header *h = &request->m_header;
    char what[DESCRIBE_BYTES];
    if (!sl_msg_reply_allowed(h->h_type, SL_MSG_ERROR)) {
        const char *name = sl_msg_type_name(h->h_type);
        return sl_fail(SL_EINVAL, "%s: %s (type %u) is not a request type", l->l_peer, name ? name : "unknown",
                       h->h_type);
    }
    sl_msg_set_sender(request, l->l_tier, l->l_sender, l->l_next_seq++);
    snprintf(what, sizeof(what), "%s (seq %" PRIu64 ")", sl_msg_type_name(h->h_type), h->h_seq);
    double start_s = sl_now_s();
    nng_msg *rep = NULL;
    int send_timeouts = 0, recv_timeouts = 0, resets = 0;
    for (int t = 0; t < l->l_tries && rep == NULL; t++) {
        nng_msg *m;
        int rc = encode_nng(request, l->l_max_msg_bytes, l->l_peer, &m); /* same bytes on every try */
        if (rc != 0) return rc;
        if (t == 0) l->l_stats.ls_calls++;
        size_t bytes = nng_msg_len(m);
        l->l_stats.ls_tries++;
        if (l->l_up.sh_rate_bps > 0) sl_wireless_shaper_wait(&l->l_up, sl_now_s(), bytes); /* its transmission */
        int rv = nng_sendmsg(l->l_sock, m, 0);
        if (rv != 0) {
            nng_msg_free(m); /* still ours when the send failed */
            if (rv == NNG_ETIMEDOUT) send_timeouts++;
        } else {
            l->l_stats.ls_bytes_sent += bytes;
            rv = nng_recvmsg(l->l_sock, &rep, 0);
            if (rv == NNG_ETIMEDOUT) recv_timeouts++;
        }
        /* retried: no answer in time, or the connection dropped under the request */
        if (rv == NNG_ETIMEDOUT || rv == NNG_ECONNRESET) {
            if (rv == NNG_ECONNRESET) resets++;
            l->l_stats.ls_timeouts++;
            rep = NULL;
            continue;
        }
        if (rv != 0) return sl_fail(SL_ENET, "%s: %s failed: %s", l->l_peer, what, nng_strerror(rv));
    }
    if (rep == NULL)
        return sl_fail(resets > 0 && send_timeouts + recv_timeouts == 0 ? SL_ENET : SL_ETIMEDOUT,
                       "%s: no reply to %s after %d tries in %.2f s (%d not connected within the send timeout of "
                       "%d ms, %d unanswered within the receive timeout of %d ms, %d connection reset); %s", l->l_peer,
                       what, l->l_tries, sl_now_s() - start_s, send_timeouts, l->l_send_timeout_ms, recv_timeouts,
                       l->l_recv_timeout_ms, resets,
                       resets > 0 ? "a reset right after sending can mean the request exceeds the peer's maximum "
                                    "message size" : "is it running?");
    /* decode into the link's reply slot */
    size_t rep_bytes = nng_msg_len(rep);
    if (l->l_down.sh_rate_bps > 0) sl_wireless_shaper_wait(&l->l_down, sl_now_s(), rep_bytes);
    l->l_stats.ls_bytes_received += rep_bytes;
    const uint8_t *data;
    int rc = align_body(rep, &data, &l->l_reply_copy);
    if (rc != 0) {
        nng_msg_free(rep);
        return rc;
    }
    if (l->l_reply_copy != NULL)
        nng_msg_free(rep);
    else
        l->l_reply_nng = rep;
    char from[sizeof(l->l_peer) + 48];
    snprintf(from, sizeof(from), "reply from %s", l->l_peer);
    rc = sl_msg_decode(&l->l_reply, data, rep_bytes, l->l_max_msg_bytes, from);
    const sl_msg_header *rh = &l->l_reply.m_header;
    if (rc == 0 && rh->h_type == SL_MSG_ERROR) {
        char text[ERROR_TEXT_BYTES];
        sl_msg_error_text(&l->l_reply, text, sizeof(text));
        rc = sl_fail(SL_ENET, "%s refused %s: %s", l->l_peer, what, text);
    } else if (rc == 0 && rh->h_seq != h->h_seq) {
        rc = sl_fail(SL_EFORMAT, "%s: the reply to %s carries seq %" PRIu64 ", expected %" PRIu64, l->l_peer, what,
                     rh->h_seq, h->h_seq);
    } else if (rc == 0 && !sl_msg_reply_allowed(h->h_type, rh->h_type)) {
        rc = sl_fail(SL_EFORMAT, "%s: the reply to %s is %s, which does not answer %s", l->l_peer, what,
                     sl_msg_type_name(rh->h_type), sl_msg_type_name(h->h_type));
    }
    if (rc != 0) {
        sl_link_release_reply(l);
        return rc;
    }
    *reply = &l->l_reply;
    return SL_OK;
}

const char *sl_link_peer(const sl_link *l) { return l->l_peer; }

void sl_link_stats_get(const sl_link *l, sl_link_stats *out) { *out = l->l_stats; }

void sl_link_close(sl_link *l) {
    if (l == NULL) return;
    sl_link_release_reply(l);
    nng_close(l->l_sock);
    sl_free(l);
}

/* ---------------------------------------------------------------- server */

/* What the server remembers about one sender. */
typedef struct {
    uint8_t se_tier;
    uint32_t se_id;
    int se_busy;          /* a worker is in the handler for se_busy_seq */
    uint64_t se_busy_seq;
    int se_has_last;
    uint64_t se_last_seq; /* the last seq handled */
    nng_msg *se_reply;    /* its encoded reply, sent again for a resent request */
} sender_entry;

typedef struct {
    sl_server *w_server;
    nng_ctx w_ctx;
    nng_aio *w_aio;
    pthread_t w_thread;
    int w_started;
    int w_ctx_open;
    sl_msg w_request;
    sl_msg w_reply;
} worker;

struct sl_server {
    nng_socket s_sock;
    nng_listener s_listener;
    char s_url[SL_URL_MAX + 16];
    char s_name[SL_PEER_NAME_MAX];
    sl_server_config s_cfg; /* its strings point at s_url/s_name */
    atomic_int s_stopping;
    pthread_mutex_t s_mu;   /* guards everything below */
    pthread_cond_t s_cv;    /* a sender stopped being busy, or the server is stopping */
    sender_entry **s_senders;
    size_t s_n_senders;
    size_t s_cap_senders;
    sl_server_stats s_stats;
    worker *s_workers;
    int s_n_workers;
};

void sl_server_config_default(sl_server_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->sc_name = "server";
    cfg->sc_tier = SL_TIER_CLOUD;
    cfg->sc_workers = 1;
    cfg->sc_send_timeout_ms = SL_LINK_SEND_TIMEOUT_MS_DEFAULT;
    cfg->sc_poll_ms = 100;
    cfg->sc_busy_wait_ms = SL_LINK_RECV_TIMEOUT_MS_DEFAULT;
    cfg->sc_max_msg_bytes = SL_MSG_MAX_BYTES_DEFAULT;
    cfg->sc_log = stderr;
}

static void add_stat(sl_server *s, uint64_t *counter, uint64_t n) {
    pthread_mutex_lock(&s->s_mu);
    *counter += n;
    pthread_mutex_unlock(&s->s_mu);
}

/* "tcp 127.0.0.1:40312", "ipc /tmp/x.sock", "inproc name": who sent m, for logs. */
static void remote_address(nng_msg *m, char *out, size_t n) {
    nng_sockaddr sa;
    nng_pipe p = nng_msg_get_pipe(m);
    if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0) {
        snprintf(out, n, "an unknown address");
        return;
    }
    switch (sa.s_family) {
    case NNG_AF_INPROC: snprintf(out, n, "inproc %s", sa.s_inproc.sa_name); break;
    case NNG_AF_IPC: snprintf(out, n, "ipc %s", sa.s_ipc.sa_path); break;
    case NNG_AF_INET: {
        const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
        const uint8_t *port = (const uint8_t *)&sa.s_in.sa_port; /* both in network byte order */
        snprintf(out, n, "tcp %u.%u.%u.%u:%u", a[0], a[1], a[2], a[3], (unsigned)(port[0] << 8 | port[1]));
        break;
    }
    case NNG_AF_INET6: {
        const uint8_t *port = (const uint8_t *)&sa.s_in6.sa_port;
        snprintf(out, n, "tcp [ipv6]:%u", (unsigned)(port[0] << 8 | port[1]));
        break;
    }
    default: snprintf(out, n, "address family %d", sa.s_family); break;
    }
}

/* An encoded ERROR reply with text, echoing what the request's header said (h may be
 * NULL when it could not be read). NULL when even that cannot be built (logged). */
static nng_msg *error_reply(sl_server *s, worker *w, const sl_msg_header *h, const char *text) {
    sl_msg *e = &w->w_reply;
    if (sl_msg_init_error(e, h ? h->h_round : 0, h ? h->h_step : 0, h ? h->h_stream : 0, text) != 0) return NULL;
    sl_msg_set_sender(e, s->s_cfg.sc_tier, s->s_cfg.sc_id, h ? h->h_seq : 0);
    nng_msg *m = NULL;
    if (encode_nng(e, s->s_cfg.sc_max_msg_bytes, s->s_name, &m) != 0 && s->s_cfg.sc_log != NULL)
        fprintf(s->s_cfg.sc_log, "%s: cannot build an ERROR reply: %s\n", s->s_name, sl_last_error());
    sl_msg_release(e);
    return m;
}

/* Logs and answers a message the server refuses; counter is the statistic it counts in. */
static nng_msg *refuse(sl_server *s, worker *w, const sl_msg_header *h, uint64_t *counter, const char *text) {
    add_stat(s, counter, 1);
    if (s->s_cfg.sc_log != NULL) fprintf(s->s_cfg.sc_log, "%s: refused: %s\n", s->s_name, text);
    return error_reply(s, w, h, text);
}

/* The entry of (tier, id), added when new; NULL when the table is full or out of memory.
 * Called with s_mu held. */
static sender_entry *sender_lookup(sl_server *s, uint8_t tier, uint32_t id) {
    for (size_t i = 0; i < s->s_n_senders; i++)
        if (s->s_senders[i]->se_tier == tier && s->s_senders[i]->se_id == id) return s->s_senders[i];
    if (s->s_n_senders >= SL_SERVER_MAX_SENDERS) return NULL;
    if (s->s_n_senders == s->s_cap_senders) {
        size_t cap = s->s_cap_senders ? 2 * s->s_cap_senders : 16;
        sender_entry **grown = sl_alloc(cap * sizeof(*grown));
        if (grown == NULL) return NULL;
        if (s->s_n_senders > 0) memcpy(grown, s->s_senders, s->s_n_senders * sizeof(*grown));
        sl_free(s->s_senders);
        s->s_senders = grown;
        s->s_cap_senders = cap;
    }
    sender_entry *e = sl_alloc(sizeof(*e));
    if (e == NULL) return NULL;
    e->se_tier = tier;
    e->se_id = id;
    s->s_senders[s->s_n_senders++] = e;
    return e;
}

static void deadline_after_ms(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

enum { ADMIT_RUN, ADMIT_REPLAY, ADMIT_OLD, ADMIT_BUSY, ADMIT_FULL, ADMIT_STOPPING };

/* Decides what to do with seq from this sender: run the handler (the entry is then marked
 * busy), send the cached reply again (*cached gets a copy), or refuse. Waits (bounded) while
 * another worker is in the handler for this sender. */
static int admit(sl_server *s, const sl_msg_header *h, nng_msg **cached, uint64_t *last_seq) {
    *cached = NULL;
    struct timespec deadline;
    deadline_after_ms(&deadline, s->s_cfg.sc_busy_wait_ms);
    pthread_mutex_lock(&s->s_mu);
    sender_entry *e = sender_lookup(s, h->h_sender_tier, h->h_sender);
    int verdict = ADMIT_FULL;
    while (e != NULL) {
        if (atomic_load(&s->s_stopping)) {
            verdict = ADMIT_STOPPING;
            break;
        }
        if (e->se_busy) {
            *last_seq = e->se_busy_seq;
            if (h->h_seq < e->se_busy_seq) {
                verdict = ADMIT_OLD;
                break;
            }
            if (pthread_cond_timedwait(&s->s_cv, &s->s_mu, &deadline) == ETIMEDOUT) {
                verdict = ADMIT_BUSY;
                break;
            }
            continue;
        }
        if (e->se_has_last && h->h_seq == e->se_last_seq && e->se_reply != NULL) {
            verdict = nng_msg_dup(cached, e->se_reply) == 0 ? ADMIT_REPLAY : ADMIT_FULL;
            if (verdict == ADMIT_REPLAY) s->s_stats.ss_replayed++;
            break;
        }
        if (e->se_has_last && h->h_seq <= e->se_last_seq) {
            *last_seq = e->se_last_seq;
            verdict = ADMIT_OLD;
            break;
        }
        e->se_busy = 1;
        e->se_busy_seq = h->h_seq;
        verdict = ADMIT_RUN;
        break;
    }
    pthread_mutex_unlock(&s->s_mu);
    return verdict;
}

/* Stores reply (a copy) as the answer to seq and marks the sender idle. */
static void complete(sl_server *s, const sl_msg_header *h, nng_msg *reply) {
    nng_msg *copy = NULL, *old = NULL;
    if (reply != NULL && nng_msg_dup(&copy, reply) != 0) copy = NULL; /* then a resend runs into ADMIT_OLD */
    pthread_mutex_lock(&s->s_mu);
    sender_entry *e = sender_lookup(s, h->h_sender_tier, h->h_sender); /* exists: admit added it */
    if (e != NULL) {
        old = e->se_reply;
        e->se_reply = copy;
        e->se_has_last = 1;
        e->se_last_seq = h->h_seq;
        e->se_busy = 0;
    } else {
        old = copy;
    }
    pthread_cond_broadcast(&s->s_cv);
    pthread_mutex_unlock(&s->s_mu);
    if (old != NULL) nng_msg_free(old);
}

/* Runs the handler for the decoded request and encodes its reply (or an ERROR). */
static nng_msg *run_handler(sl_server *s, worker *w) {
    const sl_msg_header *h = &w->w_request.m_header;
    sl_msg *r = &w->w_reply;
    sl_msg_init(r, SL_MSG_ACK, h->h_round, h->h_step, h->h_stream);
    add_stat(s, &s->s_stats.ss_handled, 1);
    char what[DESCRIBE_BYTES], text[ERROR_TEXT_BYTES];
    sl_msg_describe(h, what, sizeof(what));
    sl_clear_error();
    int rc = s->s_cfg.sc_handler(s->s_cfg.sc_handler_arg, &w->w_request, r);
    if (rc == 0 && !sl_msg_reply_allowed(h->h_type, r->m_header.h_type)) {
        const char *name = sl_msg_type_name(r->m_header.h_type);
        rc = sl_fail(SL_EINVAL, "the handler answered %s with %s (type %u)", sl_msg_type_name(h->h_type),
                     name ? name : "an unknown type", r->m_header.h_type);
    }
    nng_msg *m = NULL;
    if (rc == 0) {
        sl_msg_set_sender(r, s->s_cfg.sc_tier, s->s_cfg.sc_id, h->h_seq);
        rc = encode_nng(r, s->s_cfg.sc_max_msg_bytes, s->s_name, &m);
    }
    if (rc != 0) snprintf(text, sizeof(text), "%s failed: %s", what, sl_last_error());
    sl_msg_release(r);
    if (rc != 0) {
        add_stat(s, &s->s_stats.ss_handler_errors, 1);
        if (s->s_cfg.sc_log != NULL) fprintf(s->s_cfg.sc_log, "%s: %s\n", s->s_name, text);
        m = error_reply(s, w, h, text);
    }
    return m;
}

/* Everything between receiving m and the reply to send (NULL: send nothing). Takes m. */
static nng_msg *serve(sl_server *s, worker *w, nng_msg *m) {
    size_t bytes = nng_msg_len(m);
    add_stat(s, &s->s_stats.ss_requests, 1);
    add_stat(s, &s->s_stats.ss_bytes_received, bytes);
    char from[ADDR_BYTES + 32], text[ERROR_TEXT_BYTES];
    char addr[ADDR_BYTES];
    remote_address(m, addr, sizeof(addr));
    snprintf(from, sizeof(from), "message from %s", addr);
    sl_msg_header peek, *ph = NULL;
    if (sl_msg_peek_header(nng_msg_body(m), bytes, &peek) == 0) ph = &peek;
    if (bytes > s->s_cfg.sc_max_msg_bytes) { /* before touching the bytes */
        snprintf(text, sizeof(text), "%s: %zu bytes, more than the maximum message size %zu of %s", from, bytes,
                 s->s_cfg.sc_max_msg_bytes, s->s_name);
        nng_msg_free(m);
        return refuse(s, w, ph, &s->s_stats.ss_malformed, text);
    }
    const uint8_t *data;
    void *copy;
    if (align_body(m, &data, &copy) != 0) {
        nng_msg_free(m);
        return refuse(s, w, ph, &s->s_stats.ss_malformed, sl_last_error());
    }
    nng_msg *reply = NULL;
    sl_msg *req = &w->w_request;
    const sl_msg_header *h = &req->m_header;
    if (sl_msg_decode(req, data, bytes, s->s_cfg.sc_max_msg_bytes, from) != 0) {
        reply = refuse(s, w, ph, &s->s_stats.ss_malformed, sl_last_error());
    } else if (!sl_msg_reply_allowed(h->h_type, SL_MSG_ERROR)) {
        snprintf(text, sizeof(text), "%s: %s is not a request type", from, sl_msg_type_name(h->h_type));
        reply = refuse(s, w, h, &s->s_stats.ss_malformed, text);
    } else {
        char what[DESCRIBE_BYTES];
        sl_msg_describe(h, what, sizeof(what));
        uint64_t last = 0;
        switch (admit(s, h, &reply, &last)) {
        case ADMIT_RUN:
            reply = run_handler(s, w);
            complete(s, h, reply);
            break;
        case ADMIT_REPLAY: break;
        case ADMIT_OLD:
            snprintf(text, sizeof(text), "%s: seq %" PRIu64 " is not above the last seen %" PRIu64 " (replayed or out "
                     "of order); not applied", what, h->h_seq, last);
            reply = refuse(s, w, h, &s->s_stats.ss_rejected_old, text);
            break;
        case ADMIT_BUSY:
            snprintf(text, sizeof(text), "%s: still handling seq %" PRIu64 " after %d ms; try again", what, last,
                     s->s_cfg.sc_busy_wait_ms);
            reply = refuse(s, w, h, &s->s_stats.ss_handler_errors, text);
            break;
        case ADMIT_FULL:
            snprintf(text, sizeof(text), "%s: %s cannot track another sender (at most %d, or out of memory)", what,
                     s->s_name, SL_SERVER_MAX_SENDERS);
            reply = refuse(s, w, h, &s->s_stats.ss_malformed, text);
            break;
        default: break; /* stopping: no answer */
        }
    }
    memset(req, 0, sizeof(*req)); /* it pointed into m */
    sl_free(copy);
    nng_msg_free(m);
    return reply;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    sl_server *s = w->w_server;
    while (!atomic_load(&s->s_stopping)) {
        nng_aio_set_timeout(w->w_aio, s->s_cfg.sc_poll_ms);
        nng_ctx_recv(w->w_ctx, w->w_aio);
        nng_aio_wait(w->w_aio);
        int rv = nng_aio_result(w->w_aio);
        if (rv == NNG_ETIMEDOUT) continue;
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) break;
        if (rv != 0) {
            if (s->s_cfg.sc_log != NULL) fprintf(s->s_cfg.sc_log, "%s: receive failed: %s\n", s->s_name, nng_strerror(rv));
            continue;
        }
        nng_msg *reply = serve(s, w, nng_aio_get_msg(w->w_aio));
        if (reply == NULL) continue;
        /* counted before the send completes: the client may read its reply first */
        add_stat(s, &s->s_stats.ss_bytes_sent, nng_msg_len(reply));
        nng_aio_set_msg(w->w_aio, reply);
        nng_aio_set_timeout(w->w_aio, s->s_cfg.sc_send_timeout_ms);
        nng_ctx_send(w->w_ctx, w->w_aio);
        nng_aio_wait(w->w_aio);
        if ((rv = nng_aio_result(w->w_aio)) != 0) {
            nng_msg_free(nng_aio_get_msg(w->w_aio)); /* still ours when the send failed */
            if (rv == NNG_ECLOSED) break;
        }
    }
    return NULL;
}

/* Replaces a trailing ":0" port of a tcp URL with the port NNG bound. */
static void resolve_port(sl_server *s) {
    if (strncmp(s->s_url, "tcp://", 6) != 0) return;
    char *colon = strrchr(s->s_url, ':');
    if (colon == NULL || strcmp(colon, ":0") != 0) return;
    int port;
    if (nng_listener_get_int(s->s_listener, NNG_OPT_TCP_BOUND_PORT, &port) != 0) return;
    snprintf(colon, sizeof(s->s_url) - (size_t)(colon - s->s_url), ":%d", port);
}

static int check_server_config(const sl_server_config *cfg) {
    if (!valid_url(cfg->sc_url))
        return sl_fail(SL_EINVAL, "server: URL '%.300s' is empty or longer than %d bytes", cfg->sc_url ? cfg->sc_url : "",
                       SL_URL_MAX - 1);
    if (cfg->sc_name == NULL || strlen(cfg->sc_name) >= SL_PEER_NAME_MAX)
        return sl_fail(SL_EINVAL, "server at %s: name missing or longer than %d bytes", cfg->sc_url, SL_PEER_NAME_MAX - 1);
    if (cfg->sc_handler == NULL) return sl_fail(SL_EINVAL, "%s at %s: no handler", cfg->sc_name, cfg->sc_url);
    if (sl_tier_name((uint8_t)cfg->sc_tier) == NULL)
        return sl_fail(SL_EINVAL, "%s at %s: tier %d, expected user, edge or cloud", cfg->sc_name, cfg->sc_url,
                       (int)cfg->sc_tier);
    if (cfg->sc_workers < 1 || cfg->sc_send_timeout_ms < 1 || cfg->sc_poll_ms < 1 || cfg->sc_busy_wait_ms < 1 ||
        cfg->sc_max_msg_bytes < SL_MSG_HEADER_BYTES)
        return sl_fail(SL_EINVAL, "%s at %s: workers %d, send timeout %d ms, poll %d ms, busy wait %d ms must be >= 1 "
                       "and the maximum message size %zu >= %u", cfg->sc_name, cfg->sc_url, cfg->sc_workers,
                       cfg->sc_send_timeout_ms, cfg->sc_poll_ms, cfg->sc_busy_wait_ms, cfg->sc_max_msg_bytes,
                       SL_MSG_HEADER_BYTES);
    return SL_OK;
}

/* Opens the socket, one context and aio per worker, and listens. */
static int server_listen(sl_server *s) {
    int rv = nng_rep0_open(&s->s_sock);
    if (rv != 0) return sl_fail(SL_ENET, "%s at %s: cannot open a REP socket: %s", s->s_name, s->s_url, nng_strerror(rv));
    if ((rv = nng_socket_set_size(s->s_sock, NNG_OPT_RECVMAXSZ, s->s_cfg.sc_max_msg_bytes + NNG_RECV_SLACK_BYTES)) != 0)
        return sl_fail(SL_ENET, "%s at %s: cannot set the maximum receive size: %s", s->s_name, s->s_url,
                       nng_strerror(rv));
    for (int i = 0; i < s->s_n_workers; i++) {
        worker *w = &s->s_workers[i];
        w->w_server = s;
        if ((rv = nng_ctx_open(&w->w_ctx, s->s_sock)) == 0) w->w_ctx_open = 1;
        if (rv != 0 || (rv = nng_aio_alloc(&w->w_aio, NULL, NULL)) != 0)
            return sl_fail(SL_ENET, "%s at %s: cannot set up worker %d: %s", s->s_name, s->s_url, i, nng_strerror(rv));
    }
    if ((rv = nng_listen(s->s_sock, s->s_url, &s->s_listener, 0)) != 0)
        return sl_fail(SL_ENET, "%s: cannot listen on %s: %s", s->s_name, s->s_url, nng_strerror(rv));
    resolve_port(s);
    return SL_OK;
}

int sl_server_open(sl_server **out, const sl_server_config *cfg) {
    *out = NULL;
    int rc = check_server_config(cfg);
    if (rc != 0) return rc;
    sl_server *s = sl_alloc(sizeof(*s));
    if (s == NULL) return SL_ENOMEM;
    s->s_cfg = *cfg;
    snprintf(s->s_url, sizeof(s->s_url), "%s", cfg->sc_url);
    snprintf(s->s_name, sizeof(s->s_name), "%s", cfg->sc_name);
    s->s_cfg.sc_url = s->s_url;
    s->s_cfg.sc_name = s->s_name;
    atomic_init(&s->s_stopping, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->s_mu, NULL);
    pthread_cond_init(&s->s_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->s_n_workers = cfg->sc_workers;
    s->s_workers = sl_alloc((size_t)cfg->sc_workers * sizeof(worker));
    if (s->s_workers == NULL) {
        sl_server_close(s);
        return SL_ENOMEM;
    }
    s->s_sock = (nng_socket)NNG_SOCKET_INITIALIZER;
    rc = server_listen(s);
    for (int i = 0; rc == 0 && i < s->s_n_workers; i++) {
        worker *w = &s->s_workers[i];
        int e = pthread_create(&w->w_thread, NULL, worker_main, w);
        if (e != 0)
            rc = sl_fail(SL_ENOMEM, "%s at %s: cannot start worker %d: %s", s->s_name, s->s_url, i, strerror(e));
        else
            w->w_started = 1;
    }
    if (rc != 0) {
        sl_server_close(s);
        return rc;
    }
    *out = s;
    return SL_OK;
}

const char *sl_server_url(const sl_server *s) { return s->s_url; }

void sl_server_stats_get(sl_server *s, sl_server_stats *out) {
    pthread_mutex_lock(&s->s_mu);
    *out = s->s_stats;
    pthread_mutex_unlock(&s->s_mu);
}

void sl_server_close(sl_server *s) {
    if (s == NULL) return;
    pthread_mutex_lock(&s->s_mu);
    atomic_store(&s->s_stopping, 1);
    pthread_cond_broadcast(&s->s_cv); /* wakes resent requests waiting for a busy sender */
    pthread_mutex_unlock(&s->s_mu);
    /* Workers stop before any context or the socket closes: NNG 1.5.2 can use a freed socket
     * when nng_close races with nng_ctx_send on another thread. Cancelling ends a receive
     * now; one that starts after the cancel ends within sc_poll_ms and sees the flag. */
    for (int i = 0; s->s_workers != NULL && i < s->s_n_workers; i++)
        if (s->s_workers[i].w_aio != NULL) nng_aio_cancel(s->s_workers[i].w_aio);
    for (int i = s->s_n_workers - 1; s->s_workers != NULL && i >= 0; i--) {
        worker *w = &s->s_workers[i];
        if (w->w_started) pthread_join(w->w_thread, NULL);
        if (w->w_ctx_open) nng_ctx_close(w->w_ctx);
        if (w->w_aio != NULL) nng_aio_free(w->w_aio);
    }
    if (nng_socket_id(s->s_sock) > 0) nng_close(s->s_sock);
    sl_free(s->s_workers);
    for (size_t i = 0; i < s->s_n_senders; i++) {
        if (s->s_senders[i]->se_reply != NULL) nng_msg_free(s->s_senders[i]->se_reply);
        sl_free(s->s_senders[i]);
    }
    sl_free(s->s_senders);
    pthread_cond_destroy(&s->s_cv);
    pthread_mutex_destroy(&s->s_mu);
    sl_free(s);
}

void sl_link_set_shaping(sl_link *link, double up_bps, double up_delay_s, double down_bps, double down_delay_s) {
    memset(&link->l_up, 0, sizeof(link->l_up));
    memset(&link->l_down, 0, sizeof(link->l_down));
    if (up_bps > 0) sl_wireless_shaper_init(&link->l_up, up_bps, up_delay_s);
    if (down_bps > 0) sl_wireless_shaper_init(&link->l_down, down_bps, down_delay_s);
}
