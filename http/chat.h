/* chat.h — the chat template of /v1/chat/completions: how "messages" become one GPT-2 prompt.
 *
 * A template file has `key = value` lines ('#' comments; "\n" in a value is a newline, "\\" a
 * backslash): `system`, `user`, `assistant` (each with {content} where the message goes),
 * `generation` (appended after the messages) and up to CHAT_MAX_STOPS `stop` lines (added to the
 * request's stop strings). The built-in default is docs/chat-template.txt:
 *   system = {content}\n\n    user = User: {content}\n    assistant = Assistant: {content}\n
 *   generation = Assistant:    stop = \nUser:                                                      */
#ifndef GPT2D_HTTP_CHAT_H
#define GPT2D_HTTP_CHAT_H

#include <stddef.h>

#define CHAT_MAX_STOPS 4
#define CHAT_MAX_FORMAT 1024 /* bytes of one value */

typedef enum { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT, CHAT_ROLES } chat_role;

typedef struct {
    char role[CHAT_ROLES][CHAT_MAX_FORMAT];
    char generation[CHAT_MAX_FORMAT];
    char stop[CHAT_MAX_STOPS][CHAT_MAX_FORMAT];
    int n_stop;
} chat_template;

/* The built-in template. */
void chat_default(chat_template *t);
/* Reads path (over the default: keys not in the file keep theirs, except stop, which the file
 * replaces when it has any). 0, or -1 with "path:line: message" in err. */
int chat_load(chat_template *t, const char *path, char *err, size_t errlen);
/* The role of a name ("system", "user", "assistant", also "developer" as system), or -1. */
int chat_role_of(const char *name);
/* Appends the message rendered with role's format to *buf (malloc'd, grown). 0 or -1 (no memory). */
int chat_append(const chat_template *t, chat_role role, const char *content, size_t len, char **buf,
                size_t *n, size_t *cap);
/* Appends raw text. 0 or -1. */
int chat_append_raw(const char *s, size_t len, char **buf, size_t *n, size_t *cap);

#endif
