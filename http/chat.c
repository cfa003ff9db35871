/* chat.c — see chat.h. */
#include "chat.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[CHAT_ROLES] = {"system", "user", "assistant"};

void chat_default(chat_template *t) {
    memset(t, 0, sizeof(*t));
    strcpy(t->role[CHAT_SYSTEM], "{content}\n\n");
    strcpy(t->role[CHAT_USER], "User: {content}\n");
    strcpy(t->role[CHAT_ASSISTANT], "Assistant: {content}\n");
    strcpy(t->generation, "Assistant:");
    strcpy(t->stop[0], "\nUser:");
    t->n_stop = 1;
}

/* Copies src with \n, \t and \\ unescaped into dst (cap bytes). -1 if it does not fit. */
static int unescape(char *dst, size_t cap, const char *src) {
    size_t n = 0;
    for (const char *p = src; *p; p++) {
        char ch = *p;
        if (ch == '\\' && (p[1] == 'n' || p[1] == 't' || p[1] == '\\')) {
            p++;
            ch = *p == 'n' ? '\n' : *p == 't' ? '\t' : '\\';
        }
        if (n + 1 >= cap) return -1;
        dst[n++] = ch;
    }
    dst[n] = 0;
    return 0;
}

int chat_load(chat_template *t, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "chat-template %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4 * CHAT_MAX_FORMAT];
    int line_no = 0, file_stops = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        line_no++;
        line[strcspn(line, "\r\n")] = 0;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, line_no);
            rc = -1;
            break;
        }
        char *kend = eq;
        while (kend > s && isspace((unsigned char)kend[-1])) kend--;
        *kend = 0;
        char *val = eq + 1;
        while (*val == ' ' || *val == '\t') val++;
        size_t vn = strlen(val);
        while (vn > 0 && (val[vn - 1] == ' ' || val[vn - 1] == '\t')) val[--vn] = 0;
        char *dst = NULL;
        for (int r = 0; r < CHAT_ROLES; r++)
            if (strcmp(s, role_names[r]) == 0) dst = t->role[r];
        if (strcmp(s, "generation") == 0) dst = t->generation;
        if (strcmp(s, "stop") == 0) {
            if (file_stops == 0) t->n_stop = 0;
            if (t->n_stop == CHAT_MAX_STOPS) {
                snprintf(err, errlen, "%s:%d: more than %d stop lines", path, line_no, CHAT_MAX_STOPS);
                rc = -1;
                break;
            }
            file_stops++;
            dst = t->stop[t->n_stop++];
        }
        if (!dst) {
            snprintf(err, errlen, "%s:%d: unknown key '%s' (system, user, assistant, generation, stop)", path,
                     line_no, s);
            rc = -1;
        } else if (unescape(dst, CHAT_MAX_FORMAT, val) < 0) {
            snprintf(err, errlen, "%s:%d: value longer than %d bytes", path, line_no, CHAT_MAX_FORMAT - 1);
            rc = -1;
        } else if (dst == t->stop[t->n_stop - 1] && file_stops && !*dst) {
            snprintf(err, errlen, "%s:%d: empty stop string", path, line_no);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

int chat_role_of(const char *name) {
    for (int r = 0; r < CHAT_ROLES; r++)
        if (strcmp(name, role_names[r]) == 0) return r;
    if (strcmp(name, "developer") == 0) return CHAT_SYSTEM;
    return -1;
}

int chat_append_raw(const char *s, size_t len, char **buf, size_t *n, size_t *cap) {
    if (*n + len + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *n + len + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return -1;
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *n, s, len);
    *n += len;
    (*buf)[*n] = 0;
    return 0;
}

int chat_append(const chat_template *t, chat_role role, const char *content, size_t len, char **buf,
                size_t *n, size_t *cap) {
    const char *fmt = t->role[role];
    const char *at = strstr(fmt, "{content}");
    if (!at) return chat_append_raw(fmt, strlen(fmt), buf, n, cap);
    if (chat_append_raw(fmt, (size_t)(at - fmt), buf, n, cap) < 0 || chat_append_raw(content, len, buf, n, cap) < 0)
        return -1;
    const char *rest = at + strlen("{content}");
    return chat_append_raw(rest, strlen(rest), buf, n, cap);
}
