/* tokenizer_gpt2.c: GPT-2's byte-level BPE — reading encoder.json and vocab.bpe, splitting
 * text into pre-tokens with GPT-2's regular expression (PCRE2), and merging each pre-token's
 * bytes by merge rank, with a cache of words already encoded. Not for: piece/decode
 * (tokenizer.c), other BPE families (tiktoken's cl100k pattern, sentencepiece).
 *
 * Choices this file makes where OpenAI's encoder.py leaves text undefined or differs:
 * - "<|endoftext|>" in the text is the special token 50256 (as tiktoken with
 *   allowed_special="all" and Hugging Face do): the text is split at each occurrence and the
 *   parts are encoded on their own.
 * - Bytes that are not valid UTF-8 never fail: PCRE2_MATCH_INVALID_UTF makes the pattern
 *   match around them, and each run of bytes the pattern left out becomes a pre-token of its
 *   own. So every input byte lands in exactly one pre-token and decode(encode(s)) == s.
 * - \s is Unicode's White_Space, as in Python's regex module. \p{L} and \p{N} follow the
 *   Unicode version of the PCRE2 library, so characters newer than it may split differently. */
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "data/tokenizer_impl.h"
#include "util/common.h"

/* GPT-2's pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * with \s spelled out as Unicode's White_Space property, which is what Python's regex module
 * (GPT-2's) matches; PCRE2's own \s under PCRE2_UCP also takes U+180E. \S becomes [^ws]. */
#define SL_GPT2_WS                                                                                                     \
    "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
static const char k_pretoken_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" SL_GPT2_WS "\\p{L}\\p{N}]+"
                                         "|[" SL_GPT2_WS "]+(?![^" SL_GPT2_WS "])|[" SL_GPT2_WS "]+";
static const char k_endoftext[] = "<|endoftext|>";
#define SL_ENDOFTEXT_BYTES (sizeof(k_endoftext) - 1)
static const char k_version_line[] = "#version";

/* GPT-2's byte alphabet: bytes that are printable Latin-1 stand for themselves, the other 68
 * are numbered from U+0100 up in byte order, so every token is printable text. */
#define SL_GPT2_REMAP_BASE 256
#define SL_GPT2_MAX_ALPHABET_CP (SL_GPT2_REMAP_BASE + SL_BYTE_VALUES)
#define SL_UTF8_MAX_BYTES 4
/* Merge table slots per merge (at most half full) and the empty-slot key (ids are < 2^31). */
#define SL_GPT2_PAIR_SLOTS_PER_MERGE 2
#define SL_GPT2_PAIR_EMPTY UINT64_MAX
/* The word cache: words up to this many bytes, up to this many words per encode call. */
#define SL_GPT2_CACHE_MAX_WORD_BYTES 64
#define SL_GPT2_CACHE_MAX_WORDS (1u << 20)
#define SL_GPT2_MIN_SLOTS 1024u
#define SL_GPT2_CACHE_MIN_ARENA 4096u

typedef struct {
    uint64_t p_key;  /* left id << 32 | right id */
    uint32_t p_rank; /* line of vocab.bpe among the merges, 0 first */
    int32_t p_merged;
} pair_slot;

struct sl_gpt2_tok {
    int g_byte_id[SL_BYTE_VALUES]; /* the token of each single byte */
    pair_slot *g_pairs;
    uint32_t g_pair_mask;
    int g_n_merges;
    pcre2_code *g_re;
};

static void byte_codepoints(uint32_t cp[SL_BYTE_VALUES]) {
    uint32_t extra = 0;
    for (uint32_t b = 0; b < SL_BYTE_VALUES; b++) {
        int stands_for_itself = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = stands_for_itself ? b : SL_GPT2_REMAP_BASE + extra++;
    }
}

/* One UTF-8 code point at s[0..n): its length, or 0 if malformed. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    uint32_t x = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        x = x << 6 | (s[k] & 0x3F);
    }
    *cp = x;
    return len;
}

/* Token text in GPT-2's byte alphabet -> the raw bytes it stands for (out: n bytes at most).
 * Returns 0, or the offending code point + 1 (1 for malformed UTF-8). */
static uint32_t alphabet_to_bytes(const char *s, size_t n, const int16_t *byte_of_cp, char *out, size_t *out_len) {
    size_t at = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (k == 0) return 1;
        if (cp >= SL_GPT2_MAX_ALPHABET_CP || byte_of_cp[cp] < 0) return cp + 1;
        out[at++] = (char)byte_of_cp[cp];
        i += k;
    }
    *out_len = at;
    return 0;
}

static void alphabet_inverse(int16_t byte_of_cp[SL_GPT2_MAX_ALPHABET_CP]) {
    uint32_t cp[SL_BYTE_VALUES];
    byte_codepoints(cp);
    for (int i = 0; i < SL_GPT2_MAX_ALPHABET_CP; i++) byte_of_cp[i] = -1;
    for (int b = 0; b < SL_BYTE_VALUES; b++) byte_of_cp[cp[b]] = (int16_t)b;
}

static int load_encoder(sl_tokenizer *t, const char *path, const char *json, size_t bytes, const int16_t *byte_of_cp) {
    cJSON *root = cJSON_ParseWithLength(json, bytes);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= json && at <= json + bytes ? (size_t)(at - json) : 0;
        return sl_fail(SL_EFORMAT,
                       "%s: offset %zu: not valid JSON (expected GPT-2's encoder.json, an object of "
                       "token -> id)",
                       path, off);
    }
    int rc = SL_OK;
    sl_vocab *v = &t->t_vocab;
    char *arena = NULL;
    uint32_t *arena_off = NULL;
    int n = cJSON_GetArraySize(root);
    if (!cJSON_IsObject(root) || n <= 0) {
        rc = sl_fail(SL_EFORMAT, "%s: expected a non-empty JSON object of token -> id", path);
        goto done;
    }
    /* The token texts in file order (decoded to bytes, never longer than the text), then
     * copied into v_bytes in id order. */
    size_t text_bytes = 0;
    for (cJSON *it = root->child; it != NULL; it = it->next) text_bytes += strlen(it->string);
    arena = sl_alloc(text_bytes + 1);
    arena_off = sl_alloc((size_t)n * sizeof(uint32_t));
    v->v_off = sl_alloc(((size_t)n + 1) * sizeof(uint32_t));
    v->v_bytes = sl_alloc(text_bytes + 1);
    v->v_n = n;
    uint32_t *len_of = v->v_off + 1; /* lengths first, offsets after */
    if (arena == NULL || arena_off == NULL || v->v_off == NULL || v->v_bytes == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    if (text_bytes >= UINT32_MAX) {
        rc = sl_fail(SL_EFORMAT, "%s: %zu bytes of token text, at most %u", path, text_bytes, UINT32_MAX - 1);
        goto done;
    }
    uint8_t *seen = sl_alloc((size_t)n);
    if (seen == NULL) {
        rc = SL_ENOMEM;
        goto done;
    }
    size_t at = 0;
    for (cJSON *it = root->child; it != NULL; it = it->next) {
        double x = it->valuedouble;
        if (!cJSON_IsNumber(it) || !(x >= 0 && x < n) || x != (double)(int)x) {
            rc = sl_fail(SL_EFORMAT, "%s: token \"%.40s\": id %s, expected an integer in [0, %d)", path, it->string,
                         cJSON_IsNumber(it) ? "out of range" : "not a number", n);
            break;
        }
        int id = (int)x;
        if (seen[id]) {
            rc = sl_fail(SL_EFORMAT, "%s: token \"%.40s\": id %d is used twice, expected each of 0..%d once", path,
                         it->string, id, n - 1);
            break;
        }
        seen[id] = 1;
        size_t len;
        uint32_t bad = alphabet_to_bytes(it->string, strlen(it->string), byte_of_cp, arena + at, &len);
        if (bad) {
            rc = sl_fail(SL_EFORMAT, "%s: token %d \"%.40s\": %s U+%04X outside GPT-2's byte alphabet", path, id,
                         it->string, bad == 1 ? "malformed UTF-8, expected characters of" : "character", bad - 1);
            break;
        }
        arena_off[id] = (uint32_t)at;
        len_of[id] = (uint32_t)len;
        at += len;
    }
    sl_free(seen);
    if (rc != 0) goto done;
    /* Every id in [0, n) was seen once (n items, no repeats), so the offsets are complete. */
    uint32_t total = 0;
    for (int id = 0; id < n; id++) {
        uint32_t len = len_of[id];
        memcpy(v->v_bytes + total, arena + arena_off[id], len);
        v->v_off[id] = total;
        total += len;
    }
    v->v_off[n] = total;
    rc = sl_vocab_index(v);
done:
    sl_free(arena);
    sl_free(arena_off);
    cJSON_Delete(root);
    return rc;
}

static int insert_pair(sl_gpt2_tok *g, int a, int b, uint32_t rank, int merged) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t s = (uint32_t)sl_hash64(key) & g->g_pair_mask;
    while (g->g_pairs[s].p_key != SL_GPT2_PAIR_EMPTY && g->g_pairs[s].p_key != key) s = (s + 1) & g->g_pair_mask;
    /* A pair listed twice keeps its later rank, as encoder.py's dict(zip(merges, ranks)) does. */
    g->g_pairs[s] = (pair_slot){.p_key = key, .p_rank = rank, .p_merged = merged};
    return SL_OK;
}

static const pair_slot *find_pair(const sl_gpt2_tok *g, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t s = (uint32_t)sl_hash64(key) & g->g_pair_mask;
    for (;;) {
        const pair_slot *p = &g->g_pairs[s];
        if (p->p_key == key) return p;
        if (p->p_key == SL_GPT2_PAIR_EMPTY) return NULL;
        s = (s + 1) & g->g_pair_mask;
    }
}

static int load_merges(sl_tokenizer *t, const char *path, const char *text, size_t bytes, const int16_t *byte_of_cp) {
    sl_gpt2_tok *g = t->t_gpt2;
    size_t lines = 1;
    for (size_t i = 0; i < bytes; i++) lines += text[i] == '\n';
    uint64_t slots = SL_GPT2_MIN_SLOTS;
    while (slots < (uint64_t)lines * SL_GPT2_PAIR_SLOTS_PER_MERGE) slots <<= 1;
    if (slots > UINT32_MAX) return sl_fail(SL_EFORMAT, "%s: %zu lines are too many merges", path, lines);
    g->g_pairs = sl_alloc(slots * sizeof(pair_slot));
    if (g->g_pairs == NULL) return SL_ENOMEM;
    for (uint64_t s = 0; s < slots; s++) g->g_pairs[s].p_key = SL_GPT2_PAIR_EMPTY;
    g->g_pair_mask = (uint32_t)(slots - 1);

    char *buf = sl_alloc(bytes + 1); /* one line's two halves, as bytes */
    if (buf == NULL) return SL_ENOMEM;
    int rc = SL_OK;
    uint32_t rank = 0;
    size_t line_no = 0;
    for (size_t pos = 0; pos < bytes && rc == 0;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', bytes - pos);
        size_t len = nl ? (size_t)(nl - line) : bytes - pos;
        pos += len + (nl != NULL);
        line_no++;
        if (len > 0 && line[len - 1] == '\r') len--;
        if (len == 0) continue;
        if (line_no == 1 && len >= sizeof(k_version_line) - 1 &&
            memcmp(line, k_version_line, sizeof(k_version_line) - 1) == 0)
            continue;
        const char *space = memchr(line, ' ', len);
        size_t la = space ? (size_t)(space - line) : 0;
        if (space == NULL || la == 0 || la + 1 == len || memchr(space + 1, ' ', len - la - 1) != NULL) {
            rc = sl_fail(SL_EFORMAT, "%s:%zu: expected two tokens separated by one space, found \"%.*s\"", path,
                         line_no, (int)(len < 60 ? len : 60), line);
            break;
        }
        size_t ba, bb;
        uint32_t bad = alphabet_to_bytes(line, la, byte_of_cp, buf, &ba);
        if (!bad) bad = alphabet_to_bytes(space + 1, len - la - 1, byte_of_cp, buf + ba, &bb);
        if (bad) {
            rc = sl_fail(SL_EFORMAT, "%s:%zu: %s U+%04X outside GPT-2's byte alphabet", path, line_no,
                         bad == 1 ? "malformed UTF-8, expected characters of" : "character", bad - 1);
            break;
        }
        int a = sl_vocab_find(&t->t_vocab, buf, ba);
        int b = sl_vocab_find(&t->t_vocab, buf + ba, bb);
        int m = sl_vocab_find(&t->t_vocab, buf, ba + bb);
        if (a < 0 || b < 0 || m < 0) {
            rc = sl_fail(SL_EFORMAT, "%s:%zu: merge \"%.*s\": %s is not a token of encoder.json", path, line_no,
                         (int)(len < 60 ? len : 60), line,
                         a < 0   ? "its left half"
                         : b < 0 ? "its right half"
                                 : "the merged token");
            break;
        }
        rc = insert_pair(g, a, b, rank++, m);
    }
    sl_free(buf);
    g->g_n_merges = (int)rank;
    return rc;
}

int sl_gpt2_load(sl_tokenizer *t, const char *encoder_json_path, const char *vocab_bpe_path) {
    sl_gpt2_tok *g = sl_alloc(sizeof(sl_gpt2_tok));
    if (g == NULL) return SL_ENOMEM;
    t->t_gpt2 = g;
    sl_mapped_file enc, bpe;
    int rc = sl_map_file(&enc, encoder_json_path);
    if (rc != 0) return rc;
    if ((rc = sl_map_file(&bpe, vocab_bpe_path)) != 0) {
        sl_unmap_file(&enc);
        return rc;
    }
    int16_t byte_of_cp[SL_GPT2_MAX_ALPHABET_CP];
    alphabet_inverse(byte_of_cp);
    rc = load_encoder(t, encoder_json_path, enc.m_data, enc.m_bytes, byte_of_cp);
    if (rc == 0) rc = load_merges(t, vocab_bpe_path, bpe.m_data, bpe.m_bytes, byte_of_cp);
    if (rc == 0) {
        /* The hash covers encoder.json's bytes followed by vocab.bpe's. */
        char *both = sl_alloc(enc.m_bytes + bpe.m_bytes + 1);
        if (both == NULL) {
            rc = SL_ENOMEM;
        } else {
            if (enc.m_bytes) memcpy(both, enc.m_data, enc.m_bytes);
            if (bpe.m_bytes) memcpy(both + enc.m_bytes, bpe.m_data, bpe.m_bytes);
            sl_sha256(both, enc.m_bytes + bpe.m_bytes, t->t_hash);
            sl_free(both);
        }
    }
    sl_unmap_file(&enc);
    sl_unmap_file(&bpe);
    if (rc != 0) return rc;

    for (int b = 0; b < SL_BYTE_VALUES; b++) {
        char c = (char)b;
        g->g_byte_id[b] = sl_vocab_find(&t->t_vocab, &c, 1);
        if (g->g_byte_id[b] < 0)
            return sl_fail(SL_EFORMAT, "%s: no token for byte 0x%02X, expected one for each of the %d bytes",
                           encoder_json_path, b, SL_BYTE_VALUES);
    }
    t->t_eot = sl_vocab_find(&t->t_vocab, k_endoftext, SL_ENDOFTEXT_BYTES);
    t->t_bos = -1;

    int err;
    PCRE2_SIZE err_off;
    g->g_re = pcre2_compile((PCRE2_SPTR)k_pretoken_pattern, PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, NULL);
    if (g->g_re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return sl_fail(SL_ESTATE, "GPT-2 pre-token pattern, offset %zu: PCRE2 says %s", (size_t)err_off, (char *)msg);
    }
    /* JIT is several times faster; without it (a build lacking JIT) the interpreter runs. */
    (void)pcre2_jit_compile(g->g_re, PCRE2_JIT_COMPLETE);
    return SL_OK;
}

void sl_gpt2_free(sl_tokenizer *t) {
    sl_gpt2_tok *g = t->t_gpt2;
    if (g->g_re) pcre2_code_free(g->g_re);
    sl_free(g->g_pairs);
    sl_free(g);
    t->t_gpt2 = NULL;
}

/* ---- encoding ----------------------------------------------------------------------- */

typedef struct {
    uint64_t s_hash;
    uint32_t s_key_off, s_ids_off;
    uint16_t s_key_len; /* 0: empty slot */
    uint16_t s_ids_n;
} cache_slot;

/* Words already encoded in this call: bytes -> ids. Per call, so that encoding never writes
 * into the shared tokenizer and any number of threads may encode at once. */
typedef struct {
    cache_slot *c_slots;
    uint32_t c_mask, c_n;
    char *c_keys;
    size_t c_keys_n, c_keys_cap;
    int *c_ids;
    size_t c_ids_n, c_ids_cap;
} word_cache;

static int grow(void **p, size_t *cap, size_t used, size_t need, size_t elem) {
    if (need <= *cap) return SL_OK;
    size_t want = *cap ? *cap : SL_GPT2_CACHE_MIN_ARENA;
    while (want < need) want *= 2;
    void *q = sl_alloc(want * elem);
    if (q == NULL) return SL_ENOMEM;
    if (used) memcpy(q, *p, used * elem);
    sl_free(*p);
    *p = q;
    *cap = want;
    return SL_OK;
}

static const cache_slot *cache_find(const word_cache *c, const char *s, size_t n, uint64_t h) {
    if (c->c_slots == NULL) return NULL;
    for (uint32_t i = (uint32_t)h & c->c_mask;; i = (i + 1) & c->c_mask) {
        const cache_slot *e = &c->c_slots[i];
        if (e->s_key_len == 0) return NULL;
        if (e->s_hash == h && e->s_key_len == n && memcmp(c->c_keys + e->s_key_off, s, n) == 0) return e;
    }
}

static void cache_place(word_cache *c, cache_slot e) {
    uint32_t i = (uint32_t)e.s_hash & c->c_mask;
    while (c->c_slots[i].s_key_len != 0) i = (i + 1) & c->c_mask;
    c->c_slots[i] = e;
}

static int cache_add(word_cache *c, const char *s, size_t n, uint64_t h, const int *ids, size_t n_ids) {
    if (c->c_n >= SL_GPT2_CACHE_MAX_WORDS) return SL_OK;
    if (c->c_slots == NULL || 2 * (c->c_n + 1) > c->c_mask + 1) { /* keep it at most half full */
        uint32_t slots = c->c_slots ? 2 * (c->c_mask + 1) : SL_GPT2_MIN_SLOTS;
        cache_slot *old = c->c_slots;
        uint32_t old_slots = old ? c->c_mask + 1 : 0;
        c->c_slots = sl_alloc((size_t)slots * sizeof(cache_slot));
        if (c->c_slots == NULL) {
            c->c_slots = old;
            return SL_ENOMEM;
        }
        c->c_mask = slots - 1;
        for (uint32_t i = 0; i < old_slots; i++)
            if (old[i].s_key_len) cache_place(c, old[i]);
        sl_free(old);
    }
    int rc = grow((void **)&c->c_keys, &c->c_keys_cap, c->c_keys_n, c->c_keys_n + n, 1);
    if (rc == 0) rc = grow((void **)&c->c_ids, &c->c_ids_cap, c->c_ids_n, c->c_ids_n + n_ids, sizeof(int));
    if (rc != 0) return rc;
    if (c->c_keys_n + n >= UINT32_MAX || c->c_ids_n + n_ids >= UINT32_MAX) return SL_OK; /* full: stop caching */
    cache_slot e = {.s_hash = h,
                    .s_key_off = (uint32_t)c->c_keys_n,
                    .s_ids_off = (uint32_t)c->c_ids_n,
                    .s_key_len = (uint16_t)n,
                    .s_ids_n = (uint16_t)n_ids};
    memcpy(c->c_keys + c->c_keys_n, s, n);
    memcpy(c->c_ids + c->c_ids_n, ids, n_ids * sizeof(int));
    c->c_keys_n += n;
    c->c_ids_n += n_ids;
    c->c_n++;
    cache_place(c, e);
    return SL_OK;
}

static void cache_free(word_cache *c) {
    sl_free(c->c_slots);
    sl_free(c->c_keys);
    sl_free(c->c_ids);
}

typedef struct {
    const sl_tokenizer *e_tok;
    pcre2_match_data *e_match;
    sl_merge_work e_work;
    word_cache e_cache;
    int **e_ids;
    size_t *e_n_ids, *e_cap;
} encoder;

/* A merge exists for the pair: its rank is the priority (lower merges first). */
static int gpt2_pair(void *ctx, int a, int b, int *merged, uint32_t *priority) {
    const pair_slot *p = find_pair(ctx, a, b);
    if (p == NULL) return 0;
    *merged = p->p_merged;
    *priority = p->p_rank;
    return 1;
}

/* BPE over one pre-token's bytes; the ids go straight onto the caller's array. */
static int encode_word(encoder *e, const char *s, size_t n) {
    const sl_gpt2_tok *g = e->e_tok->t_gpt2;
    int rc = sl_ids_reserve(e->e_ids, e->e_n_ids, e->e_cap, n);
    if (rc != 0) return rc;
    int *out = *e->e_ids + *e->e_n_ids;
    if (n == 1) {
        out[0] = g->g_byte_id[(unsigned char)s[0]];
        (*e->e_n_ids)++;
        return SL_OK;
    }
    int cacheable = n <= SL_GPT2_CACHE_MAX_WORD_BYTES;
    uint64_t h = cacheable ? sl_bytes_hash(s, n) : 0;
    if (cacheable) {
        const cache_slot *hit = cache_find(&e->e_cache, s, n, h);
        if (hit) {
            memcpy(out, e->e_cache.c_ids + hit->s_ids_off, hit->s_ids_n * sizeof(int));
            *e->e_n_ids += hit->s_ids_n;
            return SL_OK;
        }
    }
    for (size_t i = 0; i < n; i++) out[i] = g->g_byte_id[(unsigned char)s[i]];
    size_t n_out;
    if ((rc = sl_merge_run(&e->e_work, out, n, gpt2_pair, (void *)g, &n_out)) != 0) return rc;
    *e->e_n_ids += n_out;
    if (cacheable) return cache_add(&e->e_cache, s, n, h, out, n_out);
    return SL_OK;
}

/* Pre-tokens of text that holds no special token, each encoded as a word. */
static int encode_segment(encoder *e, const char *s, size_t n) {
    const pcre2_code *re = e->e_tok->t_gpt2->g_re;
    size_t off = 0;
    while (off < n) {
        int m = pcre2_match(re, (PCRE2_SPTR)s, n, off, 0, e->e_match, NULL);
        if (m == PCRE2_ERROR_NOMATCH) return encode_word(e, s + off, n - off); /* bytes left out */
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof(msg));
            return sl_fail(SL_ESTATE, "GPT-2 tokenizer: text offset %zu: PCRE2 match failed: %s", off, (char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->e_match);
        size_t start = ov[0], end = ov[1];
        if (end <= start || start < off)
            return sl_fail(SL_ESTATE,
                           "GPT-2 tokenizer: text offset %zu: the pattern matched [%zu, %zu), expected a "
                           "non-empty match at or after the offset",
                           off, start, end);
        int rc;
        if (start > off && (rc = encode_word(e, s + off, start - off)) != 0) return rc; /* invalid UTF-8 */
        if ((rc = encode_word(e, s + start, end - start)) != 0) return rc;
        off = end;
    }
    return SL_OK;
}

int sl_gpt2_encode(const sl_tokenizer *t, const char *text, size_t len, int **ids, size_t *n_ids, size_t *cap) {
    encoder e = {.e_tok = t, .e_ids = ids, .e_n_ids = n_ids, .e_cap = cap};
    e.e_match = pcre2_match_data_create_from_pattern(t->t_gpt2->g_re, NULL);
    if (e.e_match == NULL) return sl_fail(SL_ENOMEM, "GPT-2 tokenizer: cannot allocate PCRE2 match data");
    int rc = SL_OK;
    size_t pos = 0;
    while (rc == 0 && pos < len) {
        const char *special = t->t_eot >= 0 ? memmem(text + pos, len - pos, k_endoftext, SL_ENDOFTEXT_BYTES) : NULL;
        size_t seg_end = special ? (size_t)(special - text) : len;
        rc = encode_segment(&e, text + pos, seg_end - pos);
        if (rc == 0 && special) {
            rc = sl_ids_reserve(ids, n_ids, cap, 1);
            if (rc == 0) (*ids)[(*n_ids)++] = t->t_eot;
            seg_end += SL_ENDOFTEXT_BYTES;
        }
        pos = seg_end;
    }
    cache_free(&e.e_cache);
    sl_merge_work_free(&e.e_work);
    pcre2_match_data_free(e.e_match);
    return rc;
}
