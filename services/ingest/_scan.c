/*
 * The compiled fast path of ingest: a serialized IngestBatchRequest in, COPY text out.
 *
 * It reads the protobuf wire format directly, applies the same rules as the Python fast
 * path (services/ingest/fast_validation.py), and writes each clean referral as one line
 * of COPY text. A referral it is not sure about is *deferred*: its bytes go back to
 * Python, where the full validator decides and reports. So this file may be stricter than
 * the Python rules, never looser; tests/unit/test_native_scan.py checks every accepted
 * line against what the Python validator would store.
 *
 * Anything structurally odd (a truncated field, a group, invalid UTF-8) makes the whole
 * call answer None, and the request is parsed by protobuf instead, which gives the same
 * answers it always did.
 *
 * Rules that need data (country codes, field limits) come from Python once, through
 * configure(). Rules that need libraries (ISO 3166-2 states, IPv6) are asked of a
 * Python callback once per distinct value, through a cache dict owned by the caller.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The columns a referral is written as, in COPY order, and what rule each one follows:
 * both come from Python through configure() (services/common/referral_shape.py declares
 * the columns; services/ingest/native.py picks each one's rule). A rule also names a
 * column's role: the account, campaign and partner referral id are the row's keys, the
 * state is judged with the country, the moment and the map are not text. */
enum {
    R_TEXT = 0,      /* stripped; one line; at most `limit` code points */
    R_MULTILINE,     /* not stripped; tab, newline and carriage return allowed */
    R_REQUIRED,      /* R_TEXT, not empty */
    R_PARTNER_KEY,   /* R_REQUIRED, and the row's partner referral id */
    R_ACCOUNT,       /* a canonical UUID, and the row's account */
    R_CAMPAIGN,      /* a canonical UUID, and the row's campaign */
    R_EMAIL,         /* required, an email address */
    R_BIRTH,         /* empty, or a calendar date from 1900 up to today */
    R_PHONE,         /* empty, or a phone number */
    R_POSTCODE,      /* empty, or a postcode */
    R_LANGUAGE,      /* empty, or a language tag */
    R_COUNTRY,       /* empty, or an ISO 3166-1 code */
    R_STATE,         /* judged by Python when the country has subdivisions */
    R_IP,            /* empty, IPv4 as written, or judged by Python */
    R_MOMENT,        /* a google.protobuf.Timestamp: the opt-in time */
    R_EXTRA,         /* the map<string, string> of extra attributes, as JSON */
    N_RULES
};
enum { M_REFERRAL = 0, M_CONSUMER = 1, M_OPT_IN = 2, N_MESSAGES = 3 };
#define MAX_COLUMNS 64
#define MAX_NUMBER 63 /* field numbers above are unknown fields to the scanner */
#define MAX_EXTRA_HARD 1024

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Slice;

typedef struct {
    uint8_t *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

/* Rules, set by configure(). */
static int n_columns;
static uint8_t rules[MAX_COLUMNS], nullable[MAX_COLUMNS];
static Py_ssize_t limits[MAX_COLUMNS];
static int8_t column_of[N_MESSAGES][MAX_NUMBER + 1]; /* -1: not a column */
static uint64_t consumer_number, opt_in_number;      /* Referral's two nested messages */
static int col_account, col_campaign, col_partner, col_country, col_state, col_ip;
static uint8_t countries[26 * 26]; /* 1: ISO 3166-1 code; 2: one with subdivisions */
static Py_ssize_t max_extra_keys = 100, max_extra_key = 64, max_extra_value = 2000;
static int configured = 0;

/* ---- growable output buffer ------------------------------------------------------ */

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    uint8_t *grown = PyMem_Realloc(b->data, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->cap = cap;
    return 0;
}

static inline void put(Buf *b, const void *p, Py_ssize_t n) {
    if (n == 0) return; /* p may be NULL then (an empty buffer), and memcpy must not see it */
    memcpy(b->data + b->len, p, (size_t)n);
    b->len += n;
}

static inline void put_byte(Buf *b, uint8_t c) { b->data[b->len++] = c; }

/* Bytes that COPY text escapes: backslash, tab, newline, carriage return. */
static const uint8_t copy_special[256] = {['\\'] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* COPY text: runs of plain bytes copied whole, specials escaped (room: 2n bytes). */
static void put_copy_escaped(Buf *b, Slice s) {
    uint8_t *out = b->data + b->len;
    const uint8_t *p = s.p, *end = s.p + s.n;
    while (p < end) {
        const uint8_t *run = p;
        while (p < end && !copy_special[*p]) p++;
        memcpy(out, run, (size_t)(p - run));
        out += p - run;
        if (p < end) {
            *out++ = '\\';
            *out++ = *p == '\\' ? '\\' : *p == '\t' ? 't' : *p == '\n' ? 'n' : 'r';
            p++;
        }
    }
    b->len = out - b->data;
}

/* A JSON string body (ensure_ascii=False) as COPY text (room: 4n bytes).
 * Validated values hold no control characters but tab, newline and carriage return. */
static void put_json_copy_escaped(Buf *b, Slice s) {
    for (Py_ssize_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        switch (c) {
        case '"': put(b, "\\\\\"", 3); break;
        case '\\': put(b, "\\\\\\\\", 4); break;
        case '\t': put(b, "\\\\t", 3); break;
        case '\n': put(b, "\\\\n", 3); break;
        case '\r': put(b, "\\\\r", 3); break;
        default: put_byte(b, c);
        }
    }
}

/* ---- protobuf wire format --------------------------------------------------------- */

/* A varint of at most `max_bytes` bytes: 10 for values, 5 for tags and lengths, which
 * upb refuses when longer (even with leading zero groups). */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out,
                              int max_bytes) {
    uint64_t value = 0;
    for (int shift = 0; shift < 7 * max_bytes && shift < 64 && *pp < end; shift += 7) {
        uint8_t byte = *(*pp)++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 1;
        }
    }
    return 0;
}

typedef struct {
    uint32_t field;
    uint32_t wire;
    uint64_t varint;
    Slice bytes; /* wire type 2 */
} Field;

/* The next field of a message; 0 at the end, -1 on malformed input. */
static int next_field(const uint8_t **pp, const uint8_t *end, Field *f) {
    if (*pp >= end) {
        return 0;
    }
    uint64_t tag;
    if (!read_varint(pp, end, &tag, 5) || (tag >> 3) == 0 || (tag >> 3) > 536870911u) {
        return -1;
    }
    f->field = (uint32_t)(tag >> 3);
    f->wire = (uint32_t)(tag & 7);
    switch (f->wire) {
    case 0:
        return read_varint(pp, end, &f->varint, 10) ? 1 : -1;
    case 1:
        if (end - *pp < 8) return -1;
        *pp += 8;
        return 1;
    case 2: {
        uint64_t n;
        if (!read_varint(pp, end, &n, 5) || n > (uint64_t)(end - *pp)) return -1;
        f->bytes.p = *pp;
        f->bytes.n = (Py_ssize_t)n;
        *pp += n;
        return 1;
    }
    case 5:
        if (end - *pp < 4) return -1;
        *pp += 4;
        return 1;
    default: /* groups and unknown wire types: leave them to protobuf */
        return -1;
    }
}

/* ---- UTF-8 and the text rules ----------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (no surrogates, no overlongs), or 0. */
static inline int utf8_len(const uint8_t *p, const uint8_t *end, uint32_t *cp) {
    uint8_t c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(c & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;
        if (c == 0xED && p[1] > 0x9F) return 0;
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;
        if (c == 0xF4 && p[1] > 0x8F) return 0;
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
              ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* Eight bytes at a time: any byte at or above 0x80? Any below 0x20, or 0x7f? */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t load8(const uint8_t *p) {
    uint64_t word;
    memcpy(&word, p, 8);
    return word;
}
static inline int word_plain(uint64_t w) {
    uint64_t below_space = (w - ONES * 0x20) & ~w;
    uint64_t is_del = ((w ^ (ONES * 0x7f)) - ONES) & ~(w ^ (ONES * 0x7f));
    return !((w | below_space | is_del) & HIGHS);
}

static int valid_utf8(Slice s) {
    const uint8_t *p = s.p, *end = s.p + s.n;
    while (end - p >= 8 && !(load8(p) & HIGHS)) p += 8;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        uint32_t cp;
        int n = utf8_len(p, end, &cp);
        if (!n) return 0;
        p += n;
    }
    return 1;
}

/* str.strip(): whitespace as Python defines it, at both ends. s is valid UTF-8. */
static Slice strip(Slice s) {
    const uint8_t *p = s.p, *end = s.p + s.n;
    while (p < end) {
        uint32_t cp;
        int n = utf8_len(p, end, &cp);
        if (!Py_UNICODE_ISSPACE(cp)) break;
        p += n;
    }
    while (end > p) {
        const uint8_t *start = end - 1;
        while (start > p && (*start & 0xC0) == 0x80) start--;
        uint32_t cp;
        utf8_len(start, end, &cp);
        if (!Py_UNICODE_ISSPACE(cp)) break;
        end = start;
    }
    Slice out = {p, end - p};
    return out;
}

/* Code points in s; -1 when s holds a control character ([\x00-\x1f\x7f-\x9f], or for
 * multi-line text the same less tab, newline and carriage return). */
static Py_ssize_t checked_length(Slice s, int multiline) {
    Py_ssize_t count = 0, i = 0;
    /* Printable ASCII, the usual case, eight bytes at a time. */
    while (s.n - i >= 8 && word_plain(load8(s.p + i))) i += 8;
    count = i;
    for (; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (c < 0x20) {
            if (!multiline || (c != '\t' && c != '\n' && c != '\r')) return -1;
        } else if (c == 0x7f) {
            return -1;
        } else if (c == 0xC2 && i + 1 < s.n && s.p[i + 1] >= 0x80 && s.p[i + 1] <= 0x9F) {
            return -1;
        }
        count += (c & 0xC0) != 0x80;
    }
    return count;
}

static inline int is_alpha(uint8_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline int is_alnum(uint8_t c) { return is_alpha(c) || is_digit(c); }
static inline int is_hex_lower(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }

/* The canonical spelling of a UUID: 8-4-4-4-12 lower-case hex digits. */
static int canonical_uuid(Slice s) {
    if (s.n != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s.p[i] != '-') return 0;
        } else if (!is_hex_lower(s.p[i])) {
            return 0;
        }
    }
    return 1;
}

/* EMAIL: [A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@ then two or more dot-separated labels: each
 * 1-63 letters, digits and hyphens, not at either end; the last 2-63 letters only. */
static int email_ok(Slice s) {
    static const char local[] = "!#$%&'*+/=?^_`{|}~.-";
    Py_ssize_t i = 0;
    while (i < s.n && (is_alnum(s.p[i]) || (s.p[i] && strchr(local, s.p[i])))) i++;
    if (i == 0 || i >= s.n || s.p[i] != '@') return 0;
    i++;
    int labels = 0;
    for (;;) {
        Py_ssize_t start = i;
        while (i < s.n && (is_alnum(s.p[i]) || s.p[i] == '-')) i++;
        Py_ssize_t n = i - start;
        if (n < 1 || n > 63 || s.p[start] == '-' || s.p[i - 1] == '-') return 0;
        labels++;
        if (i == s.n) {
            if (labels < 2 || n < 2) return 0;
            for (Py_ssize_t k = start; k < i; k++) {
                if (!is_alpha(s.p[k])) return 0;
            }
            return 1;
        }
        if (s.p[i] != '.') return 0;
        i++;
    }
}

/* \+?[0-9 ().-]{6,32} holding six or more digits. */
static int phone_ok(Slice s) {
    Py_ssize_t i = (s.n && s.p[0] == '+') ? 1 : 0;
    Py_ssize_t rest = s.n - i, digits = 0;
    if (rest < 6 || rest > 32) return 0;
    for (; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (is_digit(c)) digits++;
        else if (c != ' ' && c != '(' && c != ')' && c != '.' && c != '-') return 0;
    }
    return digits >= 6;
}

/* [A-Za-z0-9][A-Za-z0-9 -]* */
static int postcode_ok(Slice s) {
    if (s.n == 0 || !is_alnum(s.p[0])) return 0;
    for (Py_ssize_t i = 1; i < s.n; i++) {
        if (!is_alnum(s.p[i]) && s.p[i] != ' ' && s.p[i] != '-') return 0;
    }
    return 1;
}

/* [A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})* */
static int language_ok(Slice s) {
    Py_ssize_t i = 0;
    while (i < s.n && is_alpha(s.p[i])) i++;
    if (i < 2 || i > 3) return 0;
    while (i < s.n) {
        if (s.p[i] != '-') return 0;
        Py_ssize_t start = ++i;
        while (i < s.n && is_alnum(s.p[i])) i++;
        if (i - start < 1 || i - start > 8) return 0;
    }
    return 1;
}

/* YYYY-MM-DD, a calendar date from 1900 up to today (yyyymmdd). */
static int birth_ok(Slice s, long today) {
    if (s.n != 10 || s.p[4] != '-' || s.p[7] != '-') return 0;
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !is_digit(s.p[i])) return 0;
    }
    int year = (s.p[0] - '0') * 1000 + (s.p[1] - '0') * 100 + (s.p[2] - '0') * 10 + (s.p[3] - '0');
    int month = (s.p[5] - '0') * 10 + (s.p[6] - '0');
    int day = (s.p[8] - '0') * 10 + (s.p[9] - '0');
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1900 || month < 1 || month > 12 || day < 1) return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > days[month - 1] + (month == 2 && leap)) return 0;
    return (long)year * 10000 + month * 100 + day <= today;
}

/* Dotted-quad IPv4 in canonical form (no leading zeros, each part 0-255). */
static int ipv4_ok(Slice s) {
    Py_ssize_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= s.n || s.p[i] != '.') return 0;
            i++;
        }
        Py_ssize_t start = i;
        int value = 0;
        while (i < s.n && is_digit(s.p[i]) && i - start < 3) value = value * 10 + (s.p[i++] - '0');
        Py_ssize_t n = i - start;
        if (n == 0 || (n > 1 && s.p[start] == '0') || value > 255) return 0;
    }
    return i == s.n;
}

/* [A-Za-z_][A-Za-z0-9_.-]{0,max-1} */
static int extra_key_ok(Slice s) {
    if (s.n < 1 || s.n > max_extra_key || !(is_alpha(s.p[0]) || s.p[0] == '_')) return 0;
    for (Py_ssize_t i = 1; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (!is_alnum(c) && c != '_' && c != '.' && c != '-') return 0;
    }
    return 1;
}

static inline int country_class(Slice s) {
    if (s.n != 2 || s.p[0] < 'A' || s.p[0] > 'Z' || s.p[1] < 'A' || s.p[1] > 'Z') return 0;
    return countries[(s.p[0] - 'A') * 26 + (s.p[1] - 'A')];
}

/* ---- opted_in_at --------------------------------------------------------------- */

static inline void put_digits(char *out, Py_ssize_t *n, int64_t value, int width) {
    for (int i = width - 1; i >= 0; i--) {
        out[*n + i] = (char)('0' + value % 10);
        value /= 10;
    }
    *n += width;
}

/* "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00", as datetime.isoformat() writes it. */
static Py_ssize_t format_moment(char *out, int64_t seconds, int64_t micros) {
    int64_t days = seconds / 86400, rem = seconds % 86400;
    /* civil_from_days (H. Hinnant); seconds >= 0 here */
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    Py_ssize_t n = 0;
    put_digits(out, &n, y, 4);
    out[n++] = '-';
    put_digits(out, &n, m, 2);
    out[n++] = '-';
    put_digits(out, &n, d, 2);
    out[n++] = 'T';
    put_digits(out, &n, rem / 3600, 2);
    out[n++] = ':';
    put_digits(out, &n, rem % 3600 / 60, 2);
    out[n++] = ':';
    put_digits(out, &n, rem % 60, 2);
    if (micros) {
        out[n++] = '.';
        put_digits(out, &n, micros, 6);
    }
    memcpy(out + n, "+00:00", 6);
    return n + 6;
}

/* ---- one referral ------------------------------------------------------------------ */

typedef struct {
    Slice text[MAX_COLUMNS];
    uint8_t seen[MAX_COLUMNS];
    int has_moment;
    int64_t seconds, nanos;
    int odd; /* well-formed, but something only the Python path handles */
    Py_ssize_t n_extra;
    /* last: reset_referral() clears everything before these */
    Slice keys[MAX_EXTRA_HARD], values[MAX_EXTRA_HARD];
} Referral;

static inline void reset_referral(Referral *r) { memset(r, 0, offsetof(Referral, keys)); }

static int set_text(Referral *r, int slot, Slice value) {
    if (!valid_utf8(value)) return -1;
    if (r->seen[slot]) r->odd = 1; /* repeated singular field: last wins; leave it to protobuf */
    r->seen[slot] = 1;
    r->text[slot] = value;
    return 0;
}

static int parse_timestamp(Referral *r, Slice m) {
    const uint8_t *p = m.p, *end = m.p + m.n;
    Field f;
    int got;
    if (r->has_moment) r->odd = 1; /* repeated message fields merge */
    r->has_moment = 1;
    while ((got = next_field(&p, end, &f)) > 0) {
        if (f.field == 1 && f.wire == 0) r->seconds = (int64_t)f.varint;
        else if (f.field == 2 && f.wire == 0) r->nanos = (int32_t)(uint32_t)f.varint;
        else if (f.field <= 2) r->odd = 1;
    }
    return got;
}

static inline int column_at(int message, uint32_t number) {
    return number <= MAX_NUMBER ? column_of[message][number] : -1;
}

static int parse_sub(Referral *r, Slice m, int message) {
    const uint8_t *p = m.p, *end = m.p + m.n;
    Field f;
    int got;
    while ((got = next_field(&p, end, &f)) > 0) {
        int column = column_at(message, f.field);
        if (column < 0) continue; /* unknown field */
        if (f.wire != 2) {
            r->odd = 1;
        } else if (rules[column] == R_MOMENT) {
            if (parse_timestamp(r, f.bytes) < 0) return -1;
        } else if (rules[column] == R_EXTRA) {
            r->odd = 1; /* configure() allows the map only in Referral */
        } else if (set_text(r, column, f.bytes) < 0) {
            return -1;
        }
    }
    return got;
}

static int parse_extra_entry(Referral *r, Slice m) {
    const uint8_t *p = m.p, *end = m.p + m.n;
    Field f;
    int got;
    Slice key = {(const uint8_t *)"", 0}, value = {(const uint8_t *)"", 0};
    int seen_key = 0, seen_value = 0;
    while ((got = next_field(&p, end, &f)) > 0) {
        if (f.field != 1 && f.field != 2) {
            /* upb keeps such an entry whole among the unknown fields, out of the map */
            r->odd = 1;
            continue;
        }
        if (f.wire != 2) {
            r->odd = 1;
            continue;
        }
        if (!valid_utf8(f.bytes)) return -1;
        if (f.field == 1) {
            r->odd |= seen_key;
            seen_key = 1;
            key = f.bytes;
        } else {
            r->odd |= seen_value;
            seen_value = 1;
            value = f.bytes;
        }
    }
    if (got < 0) return -1;
    if (r->n_extra >= MAX_EXTRA_HARD) {
        r->odd = 1;
        return 0;
    }
    r->keys[r->n_extra] = key;
    r->values[r->n_extra] = value;
    r->n_extra++;
    return 0;
}

static int parse_referral(Referral *r, Slice m) {
    const uint8_t *p = m.p, *end = m.p + m.n;
    Field f;
    int got, seen_consumer = 0, seen_opt_in = 0;
    while ((got = next_field(&p, end, &f)) > 0) {
        int column = -1;
        if (f.field != consumer_number && f.field != opt_in_number) {
            column = column_at(M_REFERRAL, f.field);
            if (column < 0) continue; /* unknown field */
        }
        if (f.wire != 2) {
            r->odd = 1;
            continue;
        }
        if (f.field == consumer_number) {
            r->odd |= seen_consumer;
            seen_consumer = 1;
            if (parse_sub(r, f.bytes, M_CONSUMER) < 0) return -1;
        } else if (f.field == opt_in_number) {
            r->odd |= seen_opt_in;
            seen_opt_in = 1;
            if (parse_sub(r, f.bytes, M_OPT_IN) < 0) return -1;
        } else if (rules[column] == R_EXTRA) {
            if (parse_extra_entry(r, f.bytes) < 0) return -1;
        } else if (rules[column] == R_MOMENT) {
            r->odd = 1; /* configure() allows the moment only in OptIn */
        } else if (set_text(r, column, f.bytes) < 0) {
            return -1;
        }
    }
    return got;
}

/* ---- verdicts from Python ---------------------------------------------------------- */

typedef struct {
    PyObject *cache;  /* dict: bytes key -> str or None */
    PyObject *decide; /* callable(kind: str, value: str, country: str) -> str | None */
} Verdicts;

/* Python's verdict on a value: 1 with *out set (a borrowed str), 0 when refused, -1 on error. */
static int verdict(Verdicts *v, char kind, Slice value, Slice country, PyObject **out) {
    char small[256];
    Py_ssize_t n = 1 + country.n + 1 + value.n;
    char *key = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n);
    if (key == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    key[0] = kind;
    memcpy(key + 1, country.p, (size_t)country.n);
    key[1 + country.n] = 0;
    memcpy(key + 2 + country.n, value.p, (size_t)value.n);
    PyObject *bytes_key = PyBytes_FromStringAndSize(key, n);
    if (key != small) PyMem_Free(key);
    if (bytes_key == NULL) return -1;
    PyObject *found = PyDict_GetItemWithError(v->cache, bytes_key);
    if (found == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(bytes_key);
            return -1;
        }
        found = PyObject_CallFunction(v->decide, "s#s#s#", &kind, (Py_ssize_t)1,
                                      (const char *)value.p, value.n,
                                      (const char *)country.p, country.n);
        if (found == NULL) {
            Py_DECREF(bytes_key);
            return -1;
        }
        if (found != Py_None && !PyUnicode_Check(found)) {
            Py_DECREF(found);
            Py_DECREF(bytes_key);
            PyErr_SetString(PyExc_TypeError, "decide must return str or None");
            return -1;
        }
        int failed = PyDict_SetItem(v->cache, bytes_key, found);
        Py_DECREF(found); /* the cache holds it */
        if (failed) {
            Py_DECREF(bytes_key);
            return -1;
        }
    }
    Py_DECREF(bytes_key);
    if (found == Py_None) return 0;
    *out = found;
    return 1;
}

/* The verdict as UTF-8 in *out, valid while the caller holds *held (a new reference:
 * the cache dict could lose the entry while Python runs the next verdict). */
static int verdict_slice(Verdicts *v, char kind, Slice value, Slice country, Slice *out,
                         PyObject **held) {
    PyObject *text;
    int got = verdict(v, kind, value, country, &text);
    if (got <= 0) return got;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL) return -1;
    *held = Py_NewRef(text);
    out->p = (const uint8_t *)utf8;
    out->n = n;
    return 1;
}

/* ---- the rules for one referral --------------------------------------------------------- */

/* 1 when the referral is clean (the row is written), 0 to defer it, -1 on error.
 * held[0] and held[1] keep the state and address verdicts alive; the caller releases them. */
static int write_row_held(Referral *r, Buf *out, Verdicts *v, int64_t earliest_s,
                          int64_t latest_us, long today, PyObject **held) {
    if (r->odd || !r->has_moment) return 0;
    Slice t[MAX_COLUMNS];
    Py_ssize_t room = 64 + 8; /* opted_in_at, tabs, newline */
    int country = 0;
    for (int column = 0; column < n_columns; column++) {
        Slice s = r->text[column];
        int rule = rules[column];
        switch (rule) {
        case R_ACCOUNT:
        case R_CAMPAIGN:
            if (!canonical_uuid(s)) return 0;
            break;
        case R_MOMENT:
        case R_EXTRA:
            break;
        default: {
            int multiline = rule == R_MULTILINE;
            if (!multiline) s = strip(s);
            Py_ssize_t length = checked_length(s, multiline);
            if (length < 0 || length > limits[column]) return 0;
        }
        }
        t[column] = s;
        room += 2 * s.n + 3; /* a tab, or \\N for an empty nullable column */
    }
    for (int column = 0; column < n_columns; column++) {
        Slice s = t[column];
        switch (rules[column]) {
        case R_REQUIRED:
        case R_PARTNER_KEY:
            if (!s.n) return 0;
            break;
        case R_EMAIL:
            if (!email_ok(s)) return 0;
            break;
        case R_BIRTH:
            if (s.n && !birth_ok(s, today)) return 0;
            break;
        case R_PHONE:
            if (s.n && !phone_ok(s)) return 0;
            break;
        case R_POSTCODE:
            if (s.n && !postcode_ok(s)) return 0;
            break;
        case R_LANGUAGE:
            if (s.n && !language_ok(s)) return 0;
            break;
        case R_COUNTRY:
            if (s.n && !(country = country_class(s))) return 0;
            break;
        }
    }
    if (col_state >= 0 && t[col_state].n && country == 2) {
        Slice normal;
        int got = verdict_slice(v, 'S', t[col_state], t[col_country], &normal, &held[0]);
        if (got <= 0) return got;
        room += 2 * (normal.n - t[col_state].n);
        t[col_state] = normal;
    }
    if (col_ip >= 0 && t[col_ip].n && !ipv4_ok(t[col_ip])) {
        Slice none = {(const uint8_t *)"", 0}, canonical;
        int got = verdict_slice(v, 'I', t[col_ip], none, &canonical, &held[1]);
        if (got <= 0) return got;
        room += 2 * (canonical.n - t[col_ip].n);
        t[col_ip] = canonical;
    }
    if (r->nanos < 0 || r->nanos >= 1000000000 || r->seconds < earliest_s) return 0;
    if (r->seconds > latest_us / 1000000 + 1) return 0;
    int64_t micros = r->nanos / 1000;
    if (r->seconds * 1000000 + micros > latest_us) return 0;
    if (r->n_extra > max_extra_keys) return 0;
    room += 2;
    for (Py_ssize_t i = 0; i < r->n_extra; i++) {
        Slice key = r->keys[i], value = r->values[i];
        Py_ssize_t length = checked_length(value, 1);
        if (!extra_key_ok(key) || length < 0 || length > max_extra_value) return 0;
        for (Py_ssize_t j = 0; j < i; j++) {
            if (r->keys[j].n == key.n && !memcmp(r->keys[j].p, key.p, (size_t)key.n)) return 0;
        }
        room += key.n + 4 * value.n + 8;
    }

    if (buf_reserve(out, room) < 0) return -1;
    for (int column = 0; column < n_columns; column++) {
        if (column) put_byte(out, '\t');
        if (rules[column] == R_MOMENT) {
            char moment[48];
            put(out, moment, format_moment(moment, r->seconds, micros));
        } else if (rules[column] == R_EXTRA) {
            put_byte(out, '{');
            for (Py_ssize_t i = 0; i < r->n_extra; i++) {
                if (i) put_byte(out, ',');
                put_byte(out, '"');
                put(out, r->keys[i].p, r->keys[i].n);
                put(out, "\":\"", 3);
                put_json_copy_escaped(out, r->values[i]);
                put_byte(out, '"');
            }
            put_byte(out, '}');
        } else if (nullable[column] && !t[column].n) {
            put(out, "\\N", 2);
        } else {
            put_copy_escaped(out, t[column]);
        }
    }
    put_byte(out, '\n');
    return 1;
}

static int write_row(Referral *r, Buf *out, Verdicts *v, int64_t earliest_s, int64_t latest_us,
                     long today) {
    PyObject *held[2] = {NULL, NULL};
    int clean = write_row_held(r, out, v, earliest_s, latest_us, today, held);
    Py_XDECREF(held[0]);
    Py_XDECREF(held[1]);
    return clean;
}

/* ---- module functions ----------------------------------------------------------------- */

/* An interned str for a repeated id (accounts, campaigns): a batch names few of them. */
static PyObject *id_text(PyObject *seen, Slice s) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)s.p, s.n);
    if (key == NULL) return NULL;
    PyObject *text = PyDict_GetItemWithError(seen, key);
    if (text != NULL) {
        Py_DECREF(key);
        return Py_NewRef(text);
    }
    if (PyErr_Occurred() ||
        (text = PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict")) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    int failed = PyDict_SetItem(seen, key, text);
    Py_DECREF(key);
    if (failed) {
        Py_DECREF(text);
        return NULL;
    }
    return text;
}

static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

PyDoc_STRVAR(scan_batch_doc,
"scan_batch(data, earliest_s, latest_us, today, cache, decide)\n"
"--\n\n"
"Scan a serialized IngestBatchRequest. Returns None when the bytes are not plainly\n"
"well-formed (let protobuf parse them), else a tuple (count, copy, ends, offsets,\n"
"accounts, partners, campaigns, deferred): the number of referrals; the COPY text of\n"
"the clean ones with each line's end offset, request offset and key columns; and\n"
"(offset, bytes) for each referral the Python validator must decide.");

static PyObject *scan_batch(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    long long earliest_s, latest_us;
    long today;
    PyObject *cache, *decide;
    if (!PyArg_ParseTuple(args, "y*LLlO!O:scan_batch", &data, &earliest_s, &latest_us, &today,
                          &PyDict_Type, &cache, &decide)) {
        return NULL;
    }
    if (!configured) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return NULL;
    }
    Verdicts v = {cache, decide};
    Buf out = {NULL, 0, 0};
    Referral *r = PyMem_Malloc(sizeof(Referral));
    PyObject *ends = PyList_New(0), *offsets = PyList_New(0), *accounts = PyList_New(0);
    PyObject *partners = PyList_New(0), *campaigns = PyList_New(0), *deferred = PyList_New(0);
    PyObject *seen_ids = PyDict_New(), *result = NULL;
    if (r == NULL || !ends || !offsets || !accounts || !partners || !campaigns || !deferred ||
        !seen_ids) {
        if (r == NULL) PyErr_NoMemory();
        goto done;
    }
    const uint8_t *p = data.buf, *end = p + data.len;
    Field f;
    int got;
    Py_ssize_t count = 0;
    /* Structure first: any malformed byte sends the whole request to protobuf. */
    while ((got = next_field(&p, end, &f)) > 0) {
        if (f.field == 1 && f.wire != 2) got = -1;
        if (got < 0) break;
    }
    if (got < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    p = data.buf;
    while ((got = next_field(&p, end, &f)) > 0) {
        if (f.field != 1) continue;
        Py_ssize_t offset = count++;
        reset_referral(r);
        if (parse_referral(r, f.bytes) < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        int clean = write_row(r, &out, &v, earliest_s, latest_us, today);
        if (clean < 0) goto done;
        if (!clean) {
            PyObject *raw = Py_BuildValue("(ny#)", offset, (const char *)f.bytes.p, f.bytes.n);
            if (append_new(deferred, raw) < 0) goto done;
            continue;
        }
        Slice partner = strip(r->text[col_partner]);
        if (append_new(ends, PyLong_FromSsize_t(out.len)) < 0 ||
            append_new(offsets, PyLong_FromSsize_t(offset)) < 0 ||
            append_new(accounts, id_text(seen_ids, r->text[col_account])) < 0 ||
            append_new(campaigns, id_text(seen_ids, r->text[col_campaign])) < 0 ||
            append_new(partners, PyUnicode_DecodeUTF8((const char *)partner.p, partner.n,
                                                      "strict")) < 0) {
            goto done;
        }
    }
    PyObject *copy = PyBytes_FromStringAndSize((const char *)out.data, out.len);
    if (copy == NULL) goto done;
    result = Py_BuildValue("(nNOOOOOO)", count, copy, ends, offsets, accounts, partners,
                           campaigns, deferred);
done:
    PyBuffer_Release(&data);
    PyMem_Free(out.data);
    PyMem_Free(r);
    Py_XDECREF(ends);
    Py_XDECREF(offsets);
    Py_XDECREF(accounts);
    Py_XDECREF(partners);
    Py_XDECREF(campaigns);
    Py_XDECREF(deferred);
    Py_XDECREF(seen_ids);
    return result;
}

PyDoc_STRVAR(number_lines_doc,
"number_lines(seqs, lines)\n"
"--\n\n"
"The lines (bytes) joined, each after its seq (int) and a tab: COPY text with a\n"
"leading seq column.");

static PyObject *number_lines(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seqs, *lines;
    if (!PyArg_ParseTuple(args, "O!O!:number_lines", &PyList_Type, &seqs, &PyList_Type, &lines)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(lines);
    if (PyList_GET_SIZE(seqs) != n) {
        PyErr_SetString(PyExc_ValueError, "one seq per line");
        return NULL;
    }
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyBytes_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "lines must be bytes");
            return NULL;
        }
        size += PyBytes_GET_SIZE(line) + 21;
    }
    Buf out = {NULL, 0, 0};
    if (buf_reserve(&out, size) < 0) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Exact ints only: converting anything else could run Python, which could change
         * `lines` under the size computed above. */
        PyObject *item = PyList_GET_ITEM(seqs, i);
        long long seq = PyLong_CheckExact(item) ? PyLong_AsLongLong(item) : -1;
        if (!PyLong_CheckExact(item)) PyErr_SetString(PyExc_TypeError, "seqs must be ints");
        if (seq == -1 && PyErr_Occurred()) {
            PyMem_Free(out.data);
            return NULL;
        }
        char digits[24];
        int width = 0;
        unsigned long long value = seq < 0 ? 0ULL - (unsigned long long)seq : (unsigned long long)seq;
        do {
            digits[width++] = (char)('0' + value % 10);
            value /= 10;
        } while (value);
        if (seq < 0) digits[width++] = '-';
        while (width) put_byte(&out, (uint8_t)digits[--width]);
        put_byte(&out, '\t');
        PyObject *line = PyList_GET_ITEM(lines, i);
        put(&out, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
    }
    PyObject *joined = PyBytes_FromStringAndSize((const char *)out.data, out.len);
    PyMem_Free(out.data);
    return joined;
}

/* ---- the reply ------------------------------------------------------------------------ */

static void put_varint(Buf *b, uint64_t value) {
    while (value >= 0x80) {
        put_byte(b, (uint8_t)(value | 0x80));
        value >>= 7;
    }
    put_byte(b, (uint8_t)value);
}

/* Field `number` as a varint, left out when zero (proto3 defaults are not written). */
static int put_int_field(Buf *b, int number, PyObject *value) {
    if (!PyLong_Check(value)) { /* no __index__: it could run Python mid-encoding */
        PyErr_SetString(PyExc_TypeError, "an int field must be an int");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v == 0) return 0;
    if (buf_reserve(b, 11) < 0) return -1;
    put_byte(b, (uint8_t)(number << 3));
    put_varint(b, (uint64_t)v); /* negative int32/int64: ten bytes, as protobuf writes them */
    return 0;
}

/* Field `number` as a string, left out when empty. */
static int put_str_field(Buf *b, int number, PyObject *value) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
    if (utf8 == NULL) return -1;
    if (n == 0) return 0;
    if (buf_reserve(b, n + 11) < 0) return -1;
    put_byte(b, (uint8_t)(number << 3 | 2));
    put_varint(b, (uint64_t)n);
    put(b, utf8, n);
    return 0;
}

/* The attribute `name` of `object`, for one call of `use`. */
#define WITH_ATTR(var, object, name, use)                      \
    do {                                                       \
        PyObject *var = PyObject_GetAttrString(object, name);  \
        if (var == NULL) return -1;                            \
        int failed_ = (use) < 0;                               \
        Py_DECREF(var);                                        \
        if (failed_) return -1;                                \
    } while (0)

/* A nested message: its fields are written to `inner`, then it goes into `out` whole. */
static int put_message(Buf *out, int number, Buf *inner) {
    if (buf_reserve(out, inner->len + 11) < 0) return -1;
    put_byte(out, (uint8_t)(number << 3 | 2));
    put_varint(out, (uint64_t)inner->len);
    put(out, inner->data, inner->len);
    inner->len = 0;
    return 0;
}

static int put_problem(Buf *out, Buf *inner, PyObject *problem) {
    WITH_ATTR(field, problem, "field", put_str_field(inner, 1, field));
    WITH_ATTR(code, problem, "code", put_str_field(inner, 2, code));
    WITH_ATTR(message, problem, "message", put_str_field(inner, 3, message));
    return put_message(out, 4, inner);
}

/* One RowResult message: index 1, status 2, seq 3, errors 4, partner_referral_id 5. */
static int put_result(Buf *out, Buf *row, Buf *inner, PyObject *result, PyObject *codes) {
    WITH_ATTR(index, result, "index", put_int_field(row, 1, index));
    PyObject *status = PyObject_GetAttrString(result, "status");
    if (status == NULL) return -1;
    PyObject *code = PyDict_GetItemWithError(codes, status);
    Py_DECREF(status);
    if (code == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status without a code");
        return -1;
    }
    if (put_int_field(row, 2, code) < 0) return -1;
    WITH_ATTR(seq, result, "seq", put_int_field(row, 3, seq));
    PyObject *problems = PyObject_GetAttrString(result, "problems");
    if (problems == NULL) return -1;
    PyObject *fast = PySequence_Fast(problems, "problems must be a sequence");
    Py_DECREF(problems);
    if (fast == NULL) return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        if (put_problem(row, inner, PySequence_Fast_GET_ITEM(fast, i)) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    WITH_ATTR(partner, result, "partner_referral_id", put_str_field(row, 5, partner));
    return put_message(out, 1, row);
}

PyDoc_STRVAR(encode_results_doc,
"encode_results(results, codes, accepted, duplicates, rejected)\n"
"--\n\n"
"A serialized IngestBatchResponse: one RowResult per result (objects with index,\n"
"status, seq, partner_referral_id and problems of field, code, message), each status\n"
"mapped to its enum number by `codes`, then the three counts.");

static PyObject *encode_results(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *results, *codes, *accepted, *duplicates, *rejected;
    if (!PyArg_ParseTuple(args, "O!O!OOO:encode_results", &PyList_Type, &results,
                          &PyDict_Type, &codes, &accepted, &duplicates, &rejected)) {
        return NULL;
    }
    Buf out = {NULL, 0, 0}, row = {NULL, 0, 0}, inner = {NULL, 0, 0};
    PyObject *encoded = NULL;
    if (buf_reserve(&out, PyList_GET_SIZE(results) * 48 + 64) < 0) goto done;
    /* Attribute reads could run Python that changes the list: re-check its size, and hold
     * the result being written. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(results); i++) {
        PyObject *result = Py_NewRef(PyList_GET_ITEM(results, i));
        int failed = put_result(&out, &row, &inner, result, codes);
        Py_DECREF(result);
        if (failed < 0) goto done;
    }
    if (put_int_field(&out, 2, accepted) < 0 || put_int_field(&out, 3, duplicates) < 0 ||
        put_int_field(&out, 4, rejected) < 0) {
        goto done;
    }
    encoded = PyBytes_FromStringAndSize((const char *)out.data, out.len);
done:
    PyMem_Free(out.data);
    PyMem_Free(row.data);
    PyMem_Free(inner.data);
    return encoded;
}

PyDoc_STRVAR(configure_doc,
"configure(columns, countries, max_extra_keys, max_extra_key, max_extra_value,\n"
"          consumer_number, opt_in_number)\n"
"--\n\n"
"Set the shape and the rules. `columns`, in COPY order: (message, number, rule, limit,\n"
"nullable) tuples, where message is 0 (Referral), 1 (Consumer) or 2 (OptIn), number the\n"
"field's number there, rule one of the R_ codes of _scan.c, limit the longest value in\n"
"code points, nullable whether an empty value is written as NULL. `countries`: a\n"
"676-byte table of two-letter codes (index (a-'A')*26 + (b-'A'); 1: a country, 2: one\n"
"with subdivisions). The numbers of Referral's Consumer and OptIn fields come last.");

static int configure_error(const char *message) {
    PyErr_SetString(PyExc_ValueError, message);
    return -1;
}

/* The columns into the rule tables; -1 with ValueError when they do not make a shape. */
static int configure_columns(PyObject *columns, uint64_t consumer, uint64_t opt_in) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(columns);
    if (n < 1 || n > MAX_COLUMNS) return configure_error("1 to 64 columns");
    if (consumer == opt_in || consumer < 1 || opt_in < 1 || consumer > MAX_NUMBER ||
        opt_in > MAX_NUMBER)
        return configure_error("the Consumer and OptIn fields need two numbers from 1 to 63");
    int8_t where[N_MESSAGES][MAX_NUMBER + 1];
    memset(where, -1, sizeof(where));
    int roles[N_RULES];
    for (int i = 0; i < N_RULES; i++) roles[i] = -1;
    uint8_t new_rules[MAX_COLUMNS], new_nullable[MAX_COLUMNS];
    Py_ssize_t new_limits[MAX_COLUMNS];
    for (Py_ssize_t i = 0; i < n; i++) {
        long message, number, rule, is_nullable;
        Py_ssize_t limit;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(columns, i), "lllnl", &message, &number,
                              &rule, &limit, &is_nullable))
            return -1;
        if (message < 0 || message >= N_MESSAGES) return configure_error("an unknown message");
        if (number < 1 || number > MAX_NUMBER) return configure_error("field numbers 1 to 63");
        if (rule < 0 || rule >= N_RULES) return configure_error("an unknown rule");
        if (where[message][number] >= 0) return configure_error("a field named twice");
        if (message == M_REFERRAL && (number == (long)consumer || number == (long)opt_in))
            return configure_error("a column on the Consumer or OptIn field");
        if (rule == R_MOMENT && message == M_REFERRAL)
            return configure_error("the opt-in moment belongs in Consumer or OptIn");
        if (rule == R_EXTRA && message != M_REFERRAL)
            return configure_error("the extra map belongs in Referral");
        int role = rule == R_TEXT || rule == R_MULTILINE || rule == R_REQUIRED ||
                   rule == R_BIRTH || rule == R_PHONE || rule == R_POSTCODE ||
                   rule == R_LANGUAGE || rule == R_EMAIL;
        if (!role) {
            if (roles[rule] >= 0) return configure_error("a rule that takes one column, twice");
            roles[rule] = (int)i;
        }
        where[message][number] = (int8_t)i;
        new_rules[i] = (uint8_t)rule;
        new_limits[i] = limit;
        new_nullable[i] = is_nullable != 0;
    }
    if (roles[R_ACCOUNT] < 0 || roles[R_CAMPAIGN] < 0 || roles[R_PARTNER_KEY] < 0 ||
        roles[R_MOMENT] < 0)
        return configure_error("an account, a campaign, a partner key and a moment column");
    if (roles[R_STATE] >= 0 && roles[R_COUNTRY] < 0)
        return configure_error("a state column needs a country column");
    memcpy(column_of, where, sizeof(where));
    memcpy(rules, new_rules, (size_t)n);
    memcpy(nullable, new_nullable, (size_t)n);
    memcpy(limits, new_limits, sizeof(Py_ssize_t) * (size_t)n);
    n_columns = (int)n;
    consumer_number = consumer;
    opt_in_number = opt_in;
    col_account = roles[R_ACCOUNT];
    col_campaign = roles[R_CAMPAIGN];
    col_partner = roles[R_PARTNER_KEY];
    col_country = roles[R_COUNTRY];
    col_state = roles[R_STATE];
    col_ip = roles[R_IP];
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq;
    Py_buffer table;
    Py_ssize_t keys, key_len, value_len;
    unsigned long long consumer, opt_in;
    if (!PyArg_ParseTuple(args, "Oy*nnnKK:configure", &seq, &table, &keys, &key_len,
                          &value_len, &consumer, &opt_in)) {
        return NULL;
    }
    if (table.len != 26 * 26) {
        PyBuffer_Release(&table);
        PyErr_SetString(PyExc_ValueError, "676 country codes");
        return NULL;
    }
    PyObject *columns = PySequence_Tuple(seq); /* a copy nothing can change under us */
    if (columns == NULL || configure_columns(columns, consumer, opt_in) < 0) {
        Py_XDECREF(columns);
        PyBuffer_Release(&table);
        return NULL;
    }
    Py_DECREF(columns);
    memcpy(countries, table.buf, sizeof(countries));
    PyBuffer_Release(&table);
    if (keys > MAX_EXTRA_HARD) keys = MAX_EXTRA_HARD;
    max_extra_keys = keys;
    max_extra_key = key_len;
    max_extra_value = value_len;
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_batch", scan_batch, METH_VARARGS, scan_batch_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"number_lines", number_lines, METH_VARARGS, number_lines_doc},
    {"encode_results", encode_results, METH_VARARGS, encode_results_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Compiled fast path of referral ingest.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
