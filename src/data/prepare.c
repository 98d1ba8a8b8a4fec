/* prepare.c: see prepare.h. Sections: names; UTF-8 check; records; the three parsers
 * (text, JSONL, E2E CSV); tokenization into samples; key groups; writing the output folder;
 * the pipeline. */
#include "data/prepare.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/common.h"
#include "util/sha256.h"

#define MANIFEST_NAME "manifest.json"
#define VAL_SHARD_NAME "val.shard"
#define USER_SHARD_FMT "user_%03d.shard"
#define MANIFEST_VERSION 1
#define SHOW_BYTES 40 /* how much of an offending field a message quotes */

/* ---------------------------------------------------------------- names */

int sl_input_format_parse(const char *name, sl_input_format *out) {
    if (strcmp(name, "text") == 0) *out = SL_FORMAT_TEXT;
    else if (strcmp(name, "jsonl") == 0) *out = SL_FORMAT_JSONL;
    else if (strcmp(name, "e2e") == 0) *out = SL_FORMAT_E2E;
    else return sl_fail(SL_EINVAL, "format: expected text, jsonl or e2e, found '%s'", name);
    return SL_OK;
}

const char *sl_input_format_name(sl_input_format f) {
    switch (f) {
    case SL_FORMAT_TEXT: return "text";
    case SL_FORMAT_JSONL: return "jsonl";
    case SL_FORMAT_E2E: return "e2e";
    }
    return "?";
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

sl_input_format sl_input_format_guess(const char *path) {
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return SL_FORMAT_JSONL;
    if (ends_with(path, ".csv")) return SL_FORMAT_E2E;
    return SL_FORMAT_TEXT;
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not valid (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). NUL counts as invalid here. */
static size_t utf8_seq_len(const unsigned char *p, size_t avail) {
    unsigned c = p[0];
    if (c == 0) return 0;
    if (c < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) need = 3, lo = 0xA0;
    else if (c == 0xED) need = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) need = 3;
    else if (c == 0xF0) need = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) need = 4, hi = 0x8F;
    else return 0;
    if (avail < need) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return need;
}

/* Checks data and reports an error at base_line/base_offset + position. */
static int check_utf8_at(const char *path, const char *data, size_t bytes, size_t base_line, size_t base_offset) {
    const unsigned char *p = (const unsigned char *)data;
    size_t line = base_line;
    for (size_t i = 0; i < bytes;) {
        size_t k = utf8_seq_len(p + i, bytes - i);
        if (k == 0) {
            if (p[i] == 0)
                return sl_fail(SL_EFORMAT, "%s:%zu: byte offset %zu: expected UTF-8 text, found a NUL byte", path, line,
                               base_offset + i);
            return sl_fail(SL_EFORMAT, "%s:%zu: byte offset %zu: expected UTF-8 text, found invalid byte 0x%02X", path,
                           line, base_offset + i, p[i]);
        }
        if (p[i] == '\n') line++;
        i += k;
    }
    return SL_OK;
}

int sl_check_utf8(const char *path, const char *data, size_t bytes) { return check_utf8_at(path, data, bytes, 1, 0); }

/* ---------------------------------------------------------------- records */

static char *dup_bytes(const char *s, size_t n) {
    char *d = sl_alloc(n + 1);
    if (d != NULL && n > 0) memcpy(d, s, n);
    return d;
}

static int records_push(sl_records *rs, sl_record *r) {
    if (rs->rs_n == rs->rs_cap) {
        size_t ncap = rs->rs_cap ? 2 * rs->rs_cap : 256;
        sl_record *q = sl_alloc(ncap * sizeof(sl_record));
        if (q == NULL) return SL_ENOMEM;
        if (rs->rs_n) memcpy(q, rs->rs_items, rs->rs_n * sizeof(sl_record));
        sl_free(rs->rs_items);
        rs->rs_items = q;
        rs->rs_cap = ncap;
    }
    rs->rs_items[rs->rs_n++] = *r;
    return SL_OK;
}

static void record_free(sl_record *r) {
    sl_free(r->rc_text);
    sl_free(r->rc_prompt);
    sl_free(r->rc_completion);
    sl_free(r->rc_key);
    memset(r, 0, sizeof(*r));
}

void sl_records_free(sl_records *rs) {
    for (size_t i = 0; i < rs->rs_n; i++) record_free(&rs->rs_items[i]);
    sl_free(rs->rs_items);
    memset(rs, 0, sizeof(*rs));
}

static int push_text(sl_records *rs, const char *s, size_t n, size_t line) {
    sl_record r = {0};
    r.rc_text = dup_bytes(s, n);
    if (r.rc_text == NULL) return SL_ENOMEM;
    r.rc_text_len = n;
    r.rc_line = line;
    int rc = records_push(rs, &r);
    if (rc != 0) record_free(&r);
    return rc;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* ---------------------------------------------------------------- text */

/* Trims whitespace off [*a, *b) of d, moving *line past the newlines cut off the front. */
static void trim(const char *d, size_t *a, size_t *b, size_t *line) {
    while (*a < *b && is_space(d[*a])) {
        if (d[*a] == '\n') (*line)++;
        (*a)++;
    }
    while (*b > *a && is_space(d[*b - 1])) (*b)--;
}

static int parse_text_blank_lines(const char *d, size_t n, sl_records *rs) {
    size_t pos = 0, line = 1, doc_start = SIZE_MAX, doc_end = 0, doc_line = 0;
    while (pos < n) {
        size_t eol = pos;
        int blank = 1;
        for (; eol < n && d[eol] != '\n'; eol++)
            if (!is_space(d[eol])) blank = 0;
        if (!blank) {
            if (doc_start == SIZE_MAX) doc_start = pos, doc_line = line;
            doc_end = eol;
        } else if (doc_start != SIZE_MAX) {
            trim(d, &doc_start, &doc_end, &doc_line);
            int rc = push_text(rs, d + doc_start, doc_end - doc_start, doc_line);
            if (rc != 0) return rc;
            doc_start = SIZE_MAX;
        }
        pos = eol + 1;
        line++;
    }
    if (doc_start != SIZE_MAX) {
        trim(d, &doc_start, &doc_end, &doc_line);
        return push_text(rs, d + doc_start, doc_end - doc_start, doc_line);
    }
    return SL_OK;
}

static int parse_text_separator(const char *d, size_t n, const char *sep, sl_records *rs) {
    size_t sep_len = strlen(sep), pos = 0, line = 1;
    while (pos <= n) {
        const char *hit = memmem(d + pos, n - pos, sep, sep_len);
        size_t end = hit ? (size_t)(hit - d) : n;
        size_t a = pos, b = end, doc_line = line;
        trim(d, &a, &b, &doc_line);
        if (b > a) {
            int rc = push_text(rs, d + a, b - a, doc_line);
            if (rc != 0) return rc;
        }
        size_t next = hit ? end + sep_len : n + 1;
        for (size_t i = pos; i < next && i < n; i++)
            if (d[i] == '\n') line++;
        pos = next;
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- JSONL */

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* A string field as an owned copy (UTF-8 checked); SL_EFORMAT naming the field otherwise. */
static int json_string_field(const char *path, size_t line, const cJSON *v, const char *name, char **out,
                             size_t *out_len) {
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return sl_fail(SL_EFORMAT, "%s:%zu: field \"%s\": expected a string, found %s", path, line, name,
                       json_type_name(v));
    size_t n = strlen(v->valuestring);
    int rc = check_utf8_at(path, v->valuestring, n, line, 0);
    if (rc != 0) return rc;
    *out = dup_bytes(v->valuestring, n);
    *out_len = n;
    return *out ? SL_OK : SL_ENOMEM;
}

static int json_key_field(const char *path, size_t line, const cJSON *obj, const char *key, char **out) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v == NULL || cJSON_IsNull(v)) return SL_OK;
    char buf[64];
    const char *s = buf;
    if (cJSON_IsString(v)) s = v->valuestring;
    else if (cJSON_IsNumber(v)) snprintf(buf, sizeof(buf), "%.17g", v->valuedouble);
    else if (cJSON_IsBool(v)) snprintf(buf, sizeof(buf), "%s", cJSON_IsTrue(v) ? "true" : "false");
    else
        return sl_fail(SL_EFORMAT, "%s:%zu: key field \"%s\": expected a string, number or boolean, found %s", path,
                       line, key, json_type_name(v));
    *out = dup_bytes(s, strlen(s));
    return *out ? SL_OK : SL_ENOMEM;
}

static int parse_jsonl_object(const char *path, size_t line, const cJSON *obj, const char *key, sl_record *r) {
    if (!cJSON_IsObject(obj))
        return sl_fail(SL_EFORMAT, "%s:%zu: expected a JSON object, found %s", path, line, json_type_name(obj));
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(obj, "text");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(obj, "prompt");
    const cJSON *completion = cJSON_GetObjectItemCaseSensitive(obj, "completion");
    r->rc_line = line;
    int rc;
    if (text != NULL) {
        if (prompt != NULL || completion != NULL)
            return sl_fail(SL_EFORMAT,
                           "%s:%zu: expected either a \"text\" field or \"prompt\" and \"completion\" fields, found both "
                           "kinds",
                           path, line);
        rc = json_string_field(path, line, text, "text", &r->rc_text, &r->rc_text_len);
    } else if (prompt != NULL || completion != NULL) {
        if (prompt == NULL || completion == NULL)
            return sl_fail(SL_EFORMAT, "%s:%zu: expected a \"%s\" field beside \"%s\", found none", path, line,
                           prompt ? "completion" : "prompt", prompt ? "prompt" : "completion");
        rc = json_string_field(path, line, prompt, "prompt", &r->rc_prompt, &r->rc_prompt_len);
        if (rc == 0) rc = json_string_field(path, line, completion, "completion", &r->rc_completion, &r->rc_completion_len);
    } else {
        return sl_fail(SL_EFORMAT,
                       "%s:%zu: expected a \"text\" field or \"prompt\" and \"completion\" fields, found neither", path,
                       line);
    }
    if (rc == 0 && key != NULL) rc = json_key_field(path, line, obj, key, &r->rc_key);
    return rc;
}

static int parse_jsonl(const char *path, const char *d, size_t n, const char *key, sl_records *rs) {
    size_t pos = 0, line = 1;
    while (pos < n) {
        size_t eol = pos;
        int blank = 1;
        for (; eol < n && d[eol] != '\n'; eol++)
            if (!is_space(d[eol])) blank = 0;
        if (!blank) {
            const char *end = NULL;
            cJSON *obj = cJSON_ParseWithLengthOpts(d + pos, eol - pos, &end, 0);
            if (obj == NULL) {
                size_t col = end ? (size_t)(end - (d + pos)) + 1 : 1;
                return sl_fail(SL_EFORMAT, "%s:%zu: column %zu (byte offset %zu): expected one JSON object per line, "
                               "found malformed JSON",
                               path, line, col, pos + col - 1);
            }
            size_t used = end ? (size_t)(end - d) : eol;
            while (used < eol && is_space(d[used])) used++;
            if (used < eol) {
                cJSON_Delete(obj);
                return sl_fail(SL_EFORMAT, "%s:%zu: column %zu (byte offset %zu): expected the end of the line after "
                               "the JSON object, found more text",
                               path, line, used - pos + 1, used);
            }
            sl_record r = {0};
            int rc = parse_jsonl_object(path, line, obj, key, &r);
            cJSON_Delete(obj);
            if (rc == 0) rc = records_push(rs, &r);
            if (rc != 0) {
                record_free(&r);
                return rc;
            }
        }
        pos = eol + 1;
        line++;
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- CSV (RFC 4180) */

#define CSV_MAX_FIELDS 64 /* far more than E2E's 2; a row with more is reported, not read */

typedef struct {
    char *cr_field[CSV_MAX_FIELDS];
    size_t cr_len[CSV_MAX_FIELDS];
    int cr_n;            /* fields read (may exceed CSV_MAX_FIELDS: only counted then) */
    size_t cr_line;      /* line the row starts on */
} csv_row;

static void csv_row_clear(csv_row *r) {
    for (int i = 0; i < r->cr_n && i < CSV_MAX_FIELDS; i++) sl_free(r->cr_field[i]);
    memset(r, 0, sizeof(*r));
}

/* Reads the row at *pos (quoted fields may span lines). Returns 0 with r filled, 1 at the
 * end of the data, or an error naming the line and byte offset. */
static int csv_next_row(const char *path, const char *d, size_t n, size_t *pos, size_t *line, csv_row *r) {
    memset(r, 0, sizeof(*r));
    if (*pos >= n) return 1;
    r->cr_line = *line;
    size_t p = *pos;
    char *buf = NULL;
    int rc = SL_OK;
    for (;;) { /* one field per pass */
        size_t cap = 0, len = 0, start = p;
        if (p < n && d[p] == '"') {
            size_t open_line = *line;
            p++;
            /* unescaped length is at most the remaining bytes */
            for (;;) {
                if (p >= n) {
                    rc = sl_fail(SL_EFORMAT,
                                 "%s:%zu: the quoted field opened at byte offset %zu is never closed (expected a "
                                 "closing '\"' before the end of the file)",
                                 path, open_line, start);
                    goto fail;
                }
                if (d[p] == '"') {
                    if (p + 1 < n && d[p + 1] == '"') p += 2;
                    else {
                        p++;
                        break;
                    }
                } else {
                    if (d[p] == '\n') (*line)++;
                    p++;
                }
            }
            cap = p - start;
            buf = sl_alloc(cap + 1);
            if (buf == NULL) {
                rc = SL_ENOMEM;
                goto fail;
            }
            for (size_t i = start + 1; i < p - 1; i++) {
                buf[len++] = d[i];
                if (d[i] == '"') i++; /* "" -> " */
            }
            if (p < n && d[p] != ',' && d[p] != '\n' && !(d[p] == '\r' && p + 1 < n && d[p + 1] == '\n') &&
                !(d[p] == '\r' && p + 1 == n)) {
                rc = sl_fail(SL_EFORMAT,
                             "%s:%zu: byte offset %zu: expected ',' or the end of the line after a closing quote, "
                             "found '%c' (RFC 4180: a quote inside a quoted field is written \"\")",
                             path, *line, p, d[p]);
                goto fail;
            }
        } else {
            while (p < n && d[p] != ',' && d[p] != '\n' && !(d[p] == '\r' && (p + 1 == n || d[p + 1] == '\n'))) {
                if (d[p] == '"') {
                    rc = sl_fail(SL_EFORMAT,
                                 "%s:%zu: byte offset %zu: expected no '\"' inside an unquoted field, found one "
                                 "(RFC 4180: quote the whole field and write the quote as \"\")",
                                 path, *line, p);
                    goto fail;
                }
                p++;
            }
            len = p - start;
            buf = dup_bytes(d + start, len);
            if (buf == NULL) {
                rc = SL_ENOMEM;
                goto fail;
            }
        }
        if (r->cr_n < CSV_MAX_FIELDS) {
            r->cr_field[r->cr_n] = buf;
            r->cr_len[r->cr_n] = len;
        } else {
            sl_free(buf);
        }
        buf = NULL;
        r->cr_n++;
        if (p < n && d[p] == ',') {
            p++;
            continue;
        }
        /* end of row: CRLF, LF, a final CR, or the end of the data */
        if (p < n && d[p] == '\r') p++;
        if (p < n && d[p] == '\n') {
            p++;
            (*line)++;
        }
        break;
    }
    *pos = p;
    return SL_OK;
fail:
    sl_free(buf);
    csv_row_clear(r);
    return rc;
}

static void quote_for_message(char *out, size_t out_bytes, const char *s, size_t n) {
    size_t k = n < SHOW_BYTES ? n : SHOW_BYTES;
    snprintf(out, out_bytes, "%.*s%s", (int)k, s, n > k ? "..." : "");
}

int sl_e2e_mr_value(const char *path, size_t line, const char *mr, size_t len, const char *key, char **out) {
    *out = NULL;
    size_t p = 0;
    char shown[SHOW_BYTES + 8];
    while (p < len) {
        while (p < len && mr[p] == ' ') p++;
        if (p == len) break;
        size_t name_start = p;
        while (p < len && mr[p] != '[' && mr[p] != ',' && mr[p] != ']') p++;
        size_t name_end = p;
        while (name_end > name_start && mr[name_end - 1] == ' ') name_end--;
        if (p == len || mr[p] != '[' || name_end == name_start) {
            quote_for_message(shown, sizeof(shown), mr + name_start, len - name_start);
            sl_free(*out);
            *out = NULL;
            return sl_fail(SL_EFORMAT,
                           "%s:%zu: meaning representation, character %zu: expected attribute[value], found '%s'", path,
                           line, name_start + 1, shown);
        }
        size_t value_start = ++p;
        while (p < len && mr[p] != ']' && mr[p] != '[') p++;
        if (p == len || mr[p] != ']') {
            quote_for_message(shown, sizeof(shown), mr + name_start, len - name_start);
            sl_free(*out);
            *out = NULL;
            return sl_fail(SL_EFORMAT,
                           "%s:%zu: meaning representation, character %zu: expected ']' closing the value, found '%s'",
                           path, line, name_start + 1, shown);
        }
        size_t value_end = p++;
        if (key != NULL && *out == NULL && name_end - name_start == strlen(key) &&
            memcmp(mr + name_start, key, name_end - name_start) == 0) {
            *out = dup_bytes(mr + value_start, value_end - value_start);
            if (*out == NULL) return SL_ENOMEM;
        }
        while (p < len && mr[p] == ' ') p++;
        if (p < len) {
            if (mr[p] != ',') {
                quote_for_message(shown, sizeof(shown), mr + p, len - p);
                sl_free(*out);
                *out = NULL;
                return sl_fail(SL_EFORMAT,
                               "%s:%zu: meaning representation, character %zu: expected ',' between attributes, found "
                               "'%s'",
                               path, line, p + 1, shown);
            }
            p++;
        }
    }
    return SL_OK;
}

static int parse_e2e(const char *path, const char *d, size_t n, const char *key, sl_records *rs) {
    size_t pos = 0, line = 1;
    csv_row row;
    int rc = csv_next_row(path, d, n, &pos, &line, &row);
    if (rc == 1) return sl_fail(SL_EFORMAT, "%s: expected the E2E header 'mr,ref', found an empty file", path);
    if (rc < 0 || row.cr_n != 2 || strcmp(row.cr_field[0], "mr") != 0 || strcmp(row.cr_field[1], "ref") != 0) {
        char shown[SHOW_BYTES + 8];
        size_t eol = 0;
        while (eol < n && d[eol] != '\n' && d[eol] != '\r') eol++;
        quote_for_message(shown, sizeof(shown), d, eol);
        csv_row_clear(&row);
        return sl_fail(SL_EFORMAT, "%s:1: expected the E2E header 'mr,ref', found '%s'", path, shown);
    }
    csv_row_clear(&row);
    while ((rc = csv_next_row(path, d, n, &pos, &line, &row)) == 0) {
        if (row.cr_n == 1 && row.cr_len[0] == 0) { /* an empty line */
            csv_row_clear(&row);
            continue;
        }
        if (row.cr_n != 2) {
            rc = sl_fail(SL_EFORMAT, "%s:%zu: expected 2 fields (mr,ref), found %d", path, row.cr_line, row.cr_n);
            break;
        }
        if (row.cr_len[0] == 0 || row.cr_len[1] == 0) {
            rc = sl_fail(SL_EFORMAT, "%s:%zu: expected a non-empty %s, found an empty field", path, row.cr_line,
                         row.cr_len[0] == 0 ? "meaning representation (mr)" : "reference (ref)");
            break;
        }
        sl_record r = {0};
        r.rc_line = row.cr_line;
        rc = sl_e2e_mr_value(path, row.cr_line, row.cr_field[0], row.cr_len[0], key, &r.rc_key);
        if (rc != 0) break;
        const size_t sep_len = strlen(SL_E2E_SEPARATOR);
        r.rc_prompt_len = row.cr_len[0] + sep_len;
        r.rc_prompt = sl_alloc(r.rc_prompt_len + 1);
        if (r.rc_prompt == NULL) {
            record_free(&r);
            rc = SL_ENOMEM;
            break;
        }
        memcpy(r.rc_prompt, row.cr_field[0], row.cr_len[0]);
        memcpy(r.rc_prompt + row.cr_len[0], SL_E2E_SEPARATOR, sep_len);
        r.rc_completion = row.cr_field[1]; /* take ownership */
        r.rc_completion_len = row.cr_len[1];
        row.cr_field[1] = NULL;
        rc = records_push(rs, &r);
        if (rc != 0) {
            record_free(&r);
            break;
        }
        csv_row_clear(&row);
    }
    csv_row_clear(&row);
    if (rc == 1) rc = SL_OK;
    if (rc == 0 && rs->rs_n == 0)
        rc = sl_fail(SL_EFORMAT, "%s: expected rows after the header 'mr,ref', found none", path);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

int sl_unescape_separator(const char *in, char **out) {
    size_t n = strlen(in), k = 0;
    if (n == 0) return sl_fail(SL_EINVAL, "separator: expected a non-empty string, found ''");
    char *s = sl_alloc(n + 1);
    if (s == NULL) return SL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\\' && i + 1 < n) {
            char c = in[i + 1];
            char e = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == '\\' ? '\\' : 0;
            if (e != 0) {
                s[k++] = e;
                i++;
                continue;
            }
        }
        s[k++] = in[i];
    }
    s[k] = '\0';
    *out = s;
    return SL_OK;
}

int sl_parse_records(const char *path, const char *data, size_t bytes, const sl_parse_config *cfg,
                     sl_records *out) {
    memset(out, 0, sizeof(*out));
    static const char utf8_bom[] = "\xEF\xBB\xBF";
    if (bytes >= 3 && memcmp(data, utf8_bom, 3) == 0) data += 3, bytes -= 3;
    int rc = sl_check_utf8(path, data, bytes);
    if (rc != 0) return rc;
    if (cfg->pp_format == SL_FORMAT_TEXT && cfg->pp_key != NULL)
        return sl_fail(SL_EINVAL, "%s: the text format has no fields to read key '%s' from (use jsonl or e2e)", path,
                       cfg->pp_key);
    switch (cfg->pp_format) {
    case SL_FORMAT_TEXT:
        rc = cfg->pp_separator ? parse_text_separator(data, bytes, cfg->pp_separator, out)
                               : parse_text_blank_lines(data, bytes, out);
        break;
    case SL_FORMAT_JSONL: rc = parse_jsonl(path, data, bytes, cfg->pp_key, out); break;
    case SL_FORMAT_E2E: rc = parse_e2e(path, data, bytes, cfg->pp_key, out); break;
    default: rc = sl_fail(SL_EINVAL, "%s: unknown input format %d", path, (int)cfg->pp_format);
    }
    if (rc == 0 && out->rs_n == 0)
        rc = sl_fail(SL_EFORMAT, "%s: expected at least one %s, found none (the input is empty or only whitespace)",
                     path, cfg->pp_format == SL_FORMAT_TEXT ? "document" : "record");
    if (rc != 0) sl_records_free(out);
    return rc;
}

/* ---------------------------------------------------------------- tokenization */

/* Growing scratch for one sample: ids and their mask. */
typedef struct {
    int *sb_ids;
    size_t sb_n, sb_cap;
    uint8_t *sb_mask;
    size_t sb_mask_cap;
} sample_buf;

/* Marks the ids appended since `from` with value m. */
static int mask_upto(sample_buf *b, size_t from, uint8_t m) {
    if (b->sb_mask_cap < b->sb_n) {
        size_t ncap = b->sb_cap;
        uint8_t *q = sl_alloc(ncap);
        if (q == NULL) return SL_ENOMEM;
        if (from > 0) memcpy(q, b->sb_mask, from);
        sl_free(b->sb_mask);
        b->sb_mask = q;
        b->sb_mask_cap = ncap;
    }
    memset(b->sb_mask + from, m, b->sb_n - from);
    return SL_OK;
}

static int push_id(sample_buf *b, int id) {
    if (b->sb_n == b->sb_cap) {
        size_t ncap = b->sb_cap ? 2 * b->sb_cap : 256;
        int *q = sl_alloc(ncap * sizeof(int));
        if (q == NULL) return SL_ENOMEM;
        if (b->sb_n) memcpy(q, b->sb_ids, b->sb_n * sizeof(int));
        sl_free(b->sb_ids);
        b->sb_ids = q;
        b->sb_cap = ncap;
    }
    b->sb_ids[b->sb_n++] = id;
    return SL_OK;
}

/* ids and mask of one record (see docs/FORMATS.md, "Samples"):
 * text:              [BOS] text EOT, every target counts;
 * prompt/completion: [BOS] prompt completion EOT, only completion and EOT count; the
 *                    completion is encoded on its own as a new word (llama2.c's encoder adds
 *                    its dummy-prefix space; for GPT-2 one space is put in front). */
static int encode_record(const sl_tokenizer *tok, const sl_record *r, sample_buf *b) {
    b->sb_n = 0;
    int rc;
    if (r->rc_text != NULL) {
        rc = sl_tokenizer_encode(tok, r->rc_text, r->rc_text_len, 1, &b->sb_ids, &b->sb_n, &b->sb_cap);
        if (rc == 0) rc = push_id(b, sl_tokenizer_eot(tok));
        if (rc == 0) rc = mask_upto(b, 0, 1);
        return rc;
    }
    rc = sl_tokenizer_encode(tok, r->rc_prompt, r->rc_prompt_len, 1, &b->sb_ids, &b->sb_n, &b->sb_cap);
    if (rc != 0) return rc;
    size_t prompt_n = b->sb_n;
    if (sl_tokenizer_get_kind(tok) == SL_TOKENIZER_GPT2) {
        char *c = sl_alloc(r->rc_completion_len + 2);
        if (c == NULL) return SL_ENOMEM;
        c[0] = ' ';
        memcpy(c + 1, r->rc_completion, r->rc_completion_len);
        rc = sl_tokenizer_encode(tok, c, r->rc_completion_len + 1, 0, &b->sb_ids, &b->sb_n, &b->sb_cap);
        sl_free(c);
    } else {
        rc = sl_tokenizer_encode(tok, r->rc_completion, r->rc_completion_len, 0, &b->sb_ids, &b->sb_n, &b->sb_cap);
    }
    if (rc == 0) rc = push_id(b, sl_tokenizer_eot(tok));
    if (rc == 0) rc = mask_upto(b, 0, 0);
    if (rc == 0) rc = mask_upto(b, prompt_n, 1);
    return rc;
}

/* ---------------------------------------------------------------- key groups */

typedef struct {
    char **kg_values;      /* (n_groups) sorted; the last is NULL when some samples lack the key */
    int kg_n;
    int *kg_group;         /* (n records) */
} key_groups;

static int cmp_str_ptr(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    if (x == NULL || y == NULL) return (x == NULL) - (y == NULL); /* NULL last */
    return strcmp(x, y);
}

static int group_lookup(const key_groups *kg, const char *v) {
    int lo = 0, hi = kg->kg_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = cmp_str_ptr(&v, &kg->kg_values[mid]);
        if (c == 0) return mid;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

static int key_groups_build(key_groups *kg, const sl_records *rs) {
    memset(kg, 0, sizeof(*kg));
    char **all = sl_alloc(rs->rs_n * sizeof(char *));
    kg->kg_group = sl_alloc(rs->rs_n * sizeof(int));
    if (all == NULL || kg->kg_group == NULL) {
        sl_free(all);
        return SL_ENOMEM;
    }
    for (size_t i = 0; i < rs->rs_n; i++) all[i] = rs->rs_items[i].rc_key;
    qsort(all, rs->rs_n, sizeof(char *), cmp_str_ptr);
    size_t k = 0;
    for (size_t i = 0; i < rs->rs_n; i++)
        if (k == 0 || cmp_str_ptr(&all[i], &all[k - 1]) != 0) all[k++] = all[i];
    kg->kg_values = all; /* borrowed strings, owned by the records */
    kg->kg_n = (int)k;
    for (size_t i = 0; i < rs->rs_n; i++) kg->kg_group[i] = group_lookup(kg, rs->rs_items[i].rc_key);
    return SL_OK;
}

static void key_groups_free(key_groups *kg) {
    sl_free(kg->kg_values);
    sl_free(kg->kg_group);
    memset(kg, 0, sizeof(*kg));
}

static const char *group_name(const key_groups *kg, int g) {
    return kg->kg_values[g] ? kg->kg_values[g] : SL_KEY_MISSING_NAME;
}

/* ---------------------------------------------------------------- output folder */

/* Removes the plain files in dir and then dir (best effort: used on our own folders). */
static void remove_folder(const char *dir) {
    DIR *dp = opendir(dir);
    if (dp != NULL) {
        struct dirent *e;
        char p[2048];
        while ((e = readdir(dp)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(dp);
    }
    rmdir(dir);
}

/* 0 when out may be (re)placed: absent, an empty folder, or a folder with a manifest. */
static int check_out_dir(const char *out) {
    struct stat st;
    if (stat(out, &st) != 0) {
        if (errno == ENOENT) return SL_OK;
        return sl_fail(SL_EIO, "%s: cannot stat: %s", out, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return sl_fail(SL_EINVAL, "%s: expected a folder for the output, found a file", out);
    DIR *dp = opendir(out);
    if (dp == NULL) return sl_fail(SL_EIO, "%s: cannot open folder: %s", out, strerror(errno));
    int entries = 0, manifest = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        entries++;
        if (strcmp(e->d_name, MANIFEST_NAME) == 0) manifest = 1;
    }
    closedir(dp);
    if (entries > 0 && !manifest)
        return sl_fail(SL_EINVAL,
                       "%s: expected an empty folder or an earlier prepare output (with %s), found %d other entries; "
                       "refusing to replace it",
                       out, MANIFEST_NAME, entries);
    return SL_OK;
}

static void fsync_parent(const char *path) {
    char dir[2048];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) snprintf(dir, sizeof(dir), ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Moves the finished temp folder to out; an earlier output there is swapped out and removed. */
static int commit_folder(const char *tmp, const char *out) {
    struct stat st;
    if (stat(out, &st) != 0) {
        if (rename(tmp, out) != 0) return sl_fail(SL_EIO, "%s: cannot rename %s into place: %s", out, tmp, strerror(errno));
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
        remove_folder(tmp); /* now holds the old output */
    } else {
        /* file systems without an atomic exchange: move the old one aside first */
        char old[2048 + 16];
        snprintf(old, sizeof(old), "%s.oldXXXXXX", out);
        if (mkdtemp(old) == NULL || rmdir(old) != 0 || rename(out, old) != 0)
            return sl_fail(SL_EIO, "%s: cannot move the earlier output aside: %s", out, strerror(errno));
        if (rename(tmp, out) != 0) {
            int e = errno;
            rename(old, out);
            return sl_fail(SL_EIO, "%s: cannot rename %s into place: %s", out, tmp, strerror(e));
        }
        remove_folder(old);
    }
    fsync_parent(out);
    return SL_OK;
}

/* ---------------------------------------------------------------- manifest */

typedef struct {
    const sl_prepare_config *mi_cfg;
    const sl_tokenizer *mi_tok;
    const uint8_t *mi_input_sha;
    size_t mi_input_bytes;
    const sl_prepare_summary *mi_sum;
    const key_groups *mi_keys;         /* NULL without a key */
    const uint64_t *mi_group_samples;  /* (n_groups) over all samples */
    const uint64_t *mi_user_group;     /* (N, n_groups) training samples per user and group */
    uint64_t mi_tokens, mi_mask_tokens;
} manifest_input;

static cJSON *counts_object(const manifest_input *mi, const uint64_t *counts) {
    cJSON *o = cJSON_CreateObject();
    for (int g = 0; o && g < mi->mi_keys->kg_n; g++)
        cJSON_AddNumberToObject(o, group_name(mi->mi_keys, g), (double)counts[g]);
    return o;
}

static char *manifest_json(const manifest_input *mi) {
    const sl_prepare_config *c = mi->mi_cfg;
    const sl_prepare_summary *s = mi->mi_sum;
    char hex[65];
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "manifest_version", MANIFEST_VERSION);
    cJSON_AddNumberToObject(m, "shard_version", SL_SHARD_VERSION);
    cJSON *t = cJSON_AddObjectToObject(m, "tokenizer");
    cJSON_AddStringToObject(t, "path", c->pc_tokenizer_path);
    sl_sha256_hex(sl_tokenizer_hash(mi->mi_tok), hex);
    cJSON_AddStringToObject(t, "sha256", hex);
    cJSON_AddStringToObject(t, "kind", sl_tokenizer_get_kind(mi->mi_tok) == SL_TOKENIZER_GPT2 ? "gpt2" : "llama2");
    cJSON_AddNumberToObject(t, "vocab_size", sl_tokenizer_vocab_size(mi->mi_tok));
    cJSON_AddNumberToObject(t, "bos", sl_tokenizer_bos(mi->mi_tok));
    cJSON_AddNumberToObject(t, "eot", sl_tokenizer_eot(mi->mi_tok));
    cJSON *in = cJSON_AddObjectToObject(m, "input");
    cJSON_AddStringToObject(in, "path", c->pc_input_path);
    sl_sha256_hex(mi->mi_input_sha, hex);
    cJSON_AddStringToObject(in, "sha256", hex);
    cJSON_AddNumberToObject(in, "bytes", (double)mi->mi_input_bytes);
    cJSON_AddStringToObject(m, "format", sl_input_format_name(c->pc_format));
    if (c->pc_format == SL_FORMAT_E2E) cJSON_AddStringToObject(m, "e2e_separator", SL_E2E_SEPARATOR);
    if (c->pc_format == SL_FORMAT_TEXT) {
        if (c->pc_separator) cJSON_AddStringToObject(m, "separator", c->pc_separator);
        else cJSON_AddNullToObject(m, "separator");
    }
    cJSON_AddNumberToObject(m, "max_seq", c->pc_max_seq);
    cJSON_AddNumberToObject(m, "seed", (double)c->pc_seed);
    cJSON_AddBoolToObject(m, "strict", c->pc_strict);
    cJSON_AddNumberToObject(m, "val_fraction", c->pc_val_fraction);
    cJSON *p = cJSON_AddObjectToObject(m, "partition");
    cJSON_AddStringToObject(p, "method", sl_partition_name(c->pc_partition));
    cJSON_AddNumberToObject(p, "users", c->pc_users);
    if (c->pc_partition == SL_PARTITION_DIRICHLET) cJSON_AddNumberToObject(p, "alpha", c->pc_alpha);
    else cJSON_AddNullToObject(p, "alpha");
    if (c->pc_key) cJSON_AddStringToObject(p, "key", c->pc_key);
    else cJSON_AddNullToObject(p, "key");
    cJSON_AddNumberToObject(m, "samples", (double)s->ps_samples);
    cJSON_AddNumberToObject(m, "tokens", (double)mi->mi_tokens);
    cJSON_AddNumberToObject(m, "mask_tokens", (double)mi->mi_mask_tokens);
    cJSON_AddNumberToObject(m, "truncated_samples", (double)s->ps_truncated);
    if (mi->mi_keys) cJSON_AddItemToObject(m, "key_values", counts_object(mi, mi->mi_group_samples));
    cJSON *v = cJSON_AddObjectToObject(m, "val");
    cJSON_AddStringToObject(v, "shard", VAL_SHARD_NAME);
    cJSON_AddNumberToObject(v, "samples", (double)s->ps_val_samples);
    cJSON_AddNumberToObject(v, "tokens", (double)s->ps_val_tokens);
    cJSON_AddNumberToObject(v, "mask_tokens", (double)s->ps_val_mask_tokens);
    cJSON *users = cJSON_AddArrayToObject(m, "users");
    for (int u = 0; u < s->ps_users; u++) {
        cJSON *o = cJSON_CreateObject();
        char name[64];
        snprintf(name, sizeof(name), USER_SHARD_FMT, u);
        cJSON_AddNumberToObject(o, "user", u);
        cJSON_AddStringToObject(o, "shard", name);
        cJSON_AddNumberToObject(o, "samples", (double)s->ps_user_samples[u]);
        cJSON_AddNumberToObject(o, "tokens", (double)s->ps_user_tokens[u]);
        cJSON_AddNumberToObject(o, "mask_tokens", (double)s->ps_user_mask_tokens[u]);
        if (mi->mi_keys)
            cJSON_AddItemToObject(o, "key_counts", counts_object(mi, mi->mi_user_group + (size_t)u * mi->mi_keys->kg_n));
        cJSON_AddItemToArray(users, o);
    }
    char *text = cJSON_Print(m);
    cJSON_Delete(m);
    return text;
}

/* ---------------------------------------------------------------- pipeline */

void sl_prepare_config_default(sl_prepare_config *c) {
    memset(c, 0, sizeof(*c));
    c->pc_format = 0; /* guessed from the input name */
    c->pc_max_seq = SL_PREPARE_DEFAULT_MAX_SEQ;
    c->pc_val_fraction = SL_PREPARE_DEFAULT_VAL_FRACTION;
    c->pc_users = 1;
    c->pc_partition = SL_PARTITION_IID;
    c->pc_alpha = 1.0;
    c->pc_seed = SL_PREPARE_DEFAULT_SEED;
}

void sl_prepare_summary_free(sl_prepare_summary *s) {
    sl_free(s->ps_user_samples);
    sl_free(s->ps_user_tokens);
    sl_free(s->ps_user_mask_tokens);
    memset(s, 0, sizeof(*s));
}

static int check_config(const sl_prepare_config *c) {
    if (c->pc_tokenizer_path == NULL || c->pc_input_path == NULL || c->pc_out_dir == NULL)
        return sl_fail(SL_EINVAL, "prepare: expected --tokenizer, --input and --out, found %s missing",
                       c->pc_tokenizer_path == NULL ? "--tokenizer" : c->pc_input_path == NULL ? "--input" : "--out");
    if (c->pc_users < 1) return sl_fail(SL_EINVAL, "prepare: --users: expected at least 1, found %d", c->pc_users);
    if (c->pc_max_seq < 0) return sl_fail(SL_EINVAL, "prepare: --max-seq: expected >= 0, found %d", c->pc_max_seq);
    if (!(c->pc_val_fraction >= 0.0 && c->pc_val_fraction < 1.0))
        return sl_fail(SL_EINVAL, "prepare: --val-fraction: expected 0 <= f < 1, found %g", c->pc_val_fraction);
    if (c->pc_partition == SL_PARTITION_DIRICHLET && !(c->pc_alpha > 0.0))
        return sl_fail(SL_EINVAL, "prepare: --alpha: expected > 0, found %g", c->pc_alpha);
    if (c->pc_partition != SL_PARTITION_IID && c->pc_key == NULL)
        return sl_fail(SL_EINVAL, "prepare: --partition %s needs --key FIELD to group the samples by",
                       sl_partition_name(c->pc_partition));
    if (c->pc_format == SL_FORMAT_TEXT && c->pc_key != NULL)
        return sl_fail(SL_EINVAL, "prepare: --key needs jsonl or e2e input; the text format has no fields");
    return SL_OK;
}

/* Everything the pipeline owns, released in one place. */
typedef struct {
    sl_tokenizer *w_tok;
    char *w_input;
    char *w_separator;
    sl_records w_records;
    sl_shard w_all;            /* every sample, in input order */
    key_groups w_keys;
    uint8_t *w_is_val;         /* (n) */
    size_t *w_train;           /* (n_train) record index of each training sample */
    int *w_train_group;        /* (n_train) */
    int *w_user_of;            /* (n_train) */
    sl_shard *w_shards;        /* (N+1): users, then val */
    uint64_t *w_group_samples; /* (n_groups) */
    uint64_t *w_user_group;    /* (N, n_groups) */
    char w_tmp_dir[2048];      /* "" when none was made */
    sample_buf w_buf;
} work;

static void work_free(work *w, int users) {
    if (w->w_tmp_dir[0]) remove_folder(w->w_tmp_dir);
    if (w->w_shards)
        for (int u = 0; u <= users; u++) sl_shard_free(&w->w_shards[u]);
    sl_free(w->w_shards);
    sl_free(w->w_group_samples);
    sl_free(w->w_user_group);
    sl_free(w->w_user_of);
    sl_free(w->w_train_group);
    sl_free(w->w_train);
    sl_free(w->w_is_val);
    key_groups_free(&w->w_keys);
    sl_shard_free(&w->w_all);
    sl_records_free(&w->w_records);
    sl_free(w->w_separator);
    sl_free(w->w_input);
    sl_free(w->w_buf.sb_ids);
    sl_free(w->w_buf.sb_mask);
    if (w->w_tok) sl_tokenizer_free(w->w_tok);
}

/* Puts "path:line: " (line 0: "path: ") in front of the last error message. */
static int with_context(int rc, const char *path, size_t line) {
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", sl_last_error());
    if (line == 0) return sl_fail(rc, "%s: %s", path, msg);
    return sl_fail(rc, "%s:%zu: %s", path, line, msg);
}

/* Tokenizes every record into w_all, cutting (or refusing) samples longer than T+1. */
static int tokenize_all(const sl_prepare_config *c, work *w, sl_prepare_summary *s) {
    const size_t limit = c->pc_max_seq > 0 ? (size_t)c->pc_max_seq + 1 : SIZE_MAX;
    int rc = sl_shard_init(&w->w_all, sl_tokenizer_hash(w->w_tok), (uint32_t)sl_tokenizer_vocab_size(w->w_tok),
                           c->pc_max_seq > 0 ? (uint32_t)limit : 0);
    int32_t *ids32 = NULL;
    size_t ids32_cap = 0;
    for (size_t i = 0; rc == 0 && i < w->w_records.rs_n; i++) {
        const sl_record *r = &w->w_records.rs_items[i];
        rc = encode_record(w->w_tok, r, &w->w_buf);
        if (rc != 0) {
            rc = with_context(rc, c->pc_input_path, r->rc_line);
            break;
        }
        size_t n = w->w_buf.sb_n;
        if (n > limit) {
            if (c->pc_strict) {
                rc = sl_fail(SL_EFORMAT,
                             "%s:%zu: sample has %zu tokens, expected at most %zu (--max-seq %d plus one); without "
                             "--strict it would be cut",
                             c->pc_input_path, r->rc_line, n, limit, c->pc_max_seq);
                break;
            }
            n = limit;
            s->ps_truncated++;
        }
        if (ids32_cap < n) {
            sl_free(ids32);
            ids32_cap = w->w_buf.sb_cap;
            ids32 = sl_alloc(ids32_cap * sizeof(int32_t));
            if (ids32 == NULL) {
                rc = SL_ENOMEM;
                break;
            }
        }
        for (size_t k = 0; k < n; k++) ids32[k] = (int32_t)w->w_buf.sb_ids[k];
        rc = sl_shard_append(&w->w_all, ids32, w->w_buf.sb_mask, n);
        if (rc != 0) rc = with_context(rc, c->pc_input_path, r->rc_line);
    }
    sl_free(ids32);
    return rc;
}

/* Copies sample i of src to the end of dst. */
static int copy_sample(sl_shard *dst, const sl_shard *src, uint64_t i) {
    uint64_t a = src->sh_offsets[i];
    return sl_shard_append(dst, src->sh_tokens + a, src->sh_mask + a, (size_t)sl_shard_sample_len(src, i));
}

static int split_and_partition(const sl_prepare_config *c, work *w, sl_prepare_summary *s) {
    const size_t n = w->w_records.rs_n;
    const int N = c->pc_users;
    size_t n_val = 0;
    w->w_is_val = sl_alloc(n);
    if (w->w_is_val == NULL) return SL_ENOMEM;
    int rc = sl_split_val(n, c->pc_val_fraction, c->pc_seed, w->w_is_val, &n_val);
    if (rc != 0) return rc;
    size_t n_train = n - n_val;
    w->w_train = sl_alloc(n_train * sizeof(size_t));
    w->w_train_group = sl_alloc(n_train * sizeof(int));
    w->w_user_of = sl_alloc(n_train * sizeof(int));
    if (w->w_train == NULL || w->w_train_group == NULL || w->w_user_of == NULL) return SL_ENOMEM;
    for (size_t i = 0, k = 0; i < n; i++)
        if (!w->w_is_val[i]) {
            w->w_train_group[k] = c->pc_key ? w->w_keys.kg_group[i] : 0;
            w->w_train[k++] = i;
        }
    sl_partition_config pc = {c->pc_partition, N, c->pc_alpha, c->pc_seed};
    rc = sl_partition(&pc, n_train, c->pc_key ? w->w_train_group : NULL, c->pc_key ? w->w_keys.kg_n : 0,
                      w->w_user_of);
    if (rc != 0) return with_context(rc, c->pc_input_path, 0);
    s->ps_val_samples = n_val;
    return SL_OK;
}

/* Fills user and val shards (samples in input order) and the summary's counts. */
static int build_shards(const sl_prepare_config *c, work *w, sl_prepare_summary *s) {
    const int N = c->pc_users;
    const int G = c->pc_key ? w->w_keys.kg_n : 0;
    w->w_shards = sl_alloc(((size_t)N + 1) * sizeof(sl_shard));
    s->ps_user_samples = sl_alloc((size_t)N * sizeof(uint64_t));
    s->ps_user_tokens = sl_alloc((size_t)N * sizeof(uint64_t));
    s->ps_user_mask_tokens = sl_alloc((size_t)N * sizeof(uint64_t));
    w->w_group_samples = sl_alloc(((size_t)G + 1) * sizeof(uint64_t));
    w->w_user_group = sl_alloc(((size_t)N * (size_t)G + 1) * sizeof(uint64_t));
    if (!w->w_shards || !s->ps_user_samples || !s->ps_user_tokens || !s->ps_user_mask_tokens || !w->w_group_samples ||
        !w->w_user_group)
        return SL_ENOMEM;
    s->ps_users = N;
    int rc = SL_OK;
    for (int u = 0; rc == 0 && u <= N; u++)
        rc = sl_shard_init(&w->w_shards[u], w->w_all.sh_tokenizer_sha256, w->w_all.sh_vocab_size,
                           w->w_all.sh_max_sample_tokens);
    for (size_t k = 0; rc == 0 && k < w->w_records.rs_n - s->ps_val_samples; k++) {
        int u = w->w_user_of[k];
        rc = copy_sample(&w->w_shards[u], &w->w_all, w->w_train[k]);
        if (G) w->w_user_group[(size_t)u * G + w->w_train_group[k]]++;
    }
    for (size_t i = 0; rc == 0 && i < w->w_records.rs_n; i++) {
        if (w->w_is_val[i]) rc = copy_sample(&w->w_shards[N], &w->w_all, i);
        if (G) w->w_group_samples[w->w_keys.kg_group[i]]++;
    }
    if (rc != 0) return rc;
    for (int u = 0; u < N; u++) {
        s->ps_user_samples[u] = w->w_shards[u].sh_n_samples;
        s->ps_user_tokens[u] = w->w_shards[u].sh_n_tokens;
        s->ps_user_mask_tokens[u] = sl_shard_mask_tokens(&w->w_shards[u]);
    }
    s->ps_val_tokens = w->w_shards[N].sh_n_tokens;
    s->ps_val_mask_tokens = sl_shard_mask_tokens(&w->w_shards[N]);
    return SL_OK;
}

static int write_output(const sl_prepare_config *c, work *w, sl_prepare_summary *s, const uint8_t *input_sha,
                        size_t input_bytes) {
    const int N = c->pc_users;
    size_t out_len = strlen(c->pc_out_dir);
    while (out_len > 1 && c->pc_out_dir[out_len - 1] == '/') out_len--;
    snprintf(w->w_tmp_dir, sizeof(w->w_tmp_dir), "%.*s.tmpXXXXXX", (int)out_len, c->pc_out_dir);
    if (mkdtemp(w->w_tmp_dir) == NULL) {
        int e = errno;
        w->w_tmp_dir[0] = '\0';
        return sl_fail(SL_EIO, "%s: cannot create a temp folder beside it: %s", c->pc_out_dir, strerror(e));
    }
    char path[2300];
    int rc = SL_OK;
    for (int u = 0; rc == 0 && u <= N; u++) {
        char name[64];
        if (u < N) snprintf(name, sizeof(name), USER_SHARD_FMT, u);
        else snprintf(name, sizeof(name), "%s", VAL_SHARD_NAME);
        snprintf(path, sizeof(path), "%s/%s", w->w_tmp_dir, name);
        rc = sl_shard_write(&w->w_shards[u], path);
    }
    if (rc != 0) return rc;
    manifest_input mi = {c, w->w_tok, input_sha, input_bytes, s, c->pc_key ? &w->w_keys : NULL,
                         w->w_group_samples, w->w_user_group, w->w_all.sh_n_tokens, sl_shard_mask_tokens(&w->w_all)};
    char *json = manifest_json(&mi);
    if (json == NULL) return sl_fail(SL_ENOMEM, "%s: cannot build %s", c->pc_out_dir, MANIFEST_NAME);
    snprintf(path, sizeof(path), "%s/%s", w->w_tmp_dir, MANIFEST_NAME);
    rc = sl_write_file_atomic(path, json, strlen(json));
    cJSON_free(json);
    if (rc != 0) return rc;
    char out[2048];
    snprintf(out, sizeof(out), "%.*s", (int)out_len, c->pc_out_dir);
    rc = commit_folder(w->w_tmp_dir, out);
    if (rc == 0) w->w_tmp_dir[0] = '\0';
    return rc;
}

int sl_prepare_run(const sl_prepare_config *cfg, sl_prepare_summary *s) {
    const double t0 = sl_now_s();
    memset(s, 0, sizeof(*s));
    sl_prepare_config c = *cfg;
    if (c.pc_format == 0 && c.pc_input_path != NULL) c.pc_format = sl_input_format_guess(c.pc_input_path);
    int rc = check_config(&c);
    if (rc != 0) return rc;
    rc = check_out_dir(c.pc_out_dir);
    if (rc != 0) return rc;
    work w;
    memset(&w, 0, sizeof(w));
    uint8_t input_sha[SL_SHA256_BYTES];
    size_t input_bytes = 0;
    if (c.pc_separator != NULL) rc = sl_unescape_separator(c.pc_separator, &w.w_separator);
    if (rc == 0) rc = sl_tokenizer_load(&w.w_tok, c.pc_tokenizer_path);
    if (rc == 0) rc = sl_read_file(c.pc_input_path, &w.w_input, &input_bytes);
    if (rc == 0) {
        sl_sha256(w.w_input, input_bytes, input_sha);
        sl_parse_config pp = {c.pc_format, w.w_separator, c.pc_key};
        rc = sl_parse_records(c.pc_input_path, w.w_input, input_bytes, &pp, &w.w_records);
    }
    if (rc == 0) {
        s->ps_samples = w.w_records.rs_n;
        rc = tokenize_all(&c, &w, s);
    }
    if (rc == 0 && c.pc_key) {
        rc = key_groups_build(&w.w_keys, &w.w_records);
        s->ps_key_values = w.w_keys.kg_n;
    }
    if (rc == 0) rc = split_and_partition(&c, &w, s);
    if (rc == 0) rc = build_shards(&c, &w, s);
    if (rc == 0) rc = write_output(&c, &w, s, input_sha, input_bytes);
    work_free(&w, c.pc_users);
    if (rc != 0) {
        sl_prepare_summary_free(s);
        return rc;
    }
    s->ps_seconds = sl_now_s() - t0;
    return SL_OK;
}
