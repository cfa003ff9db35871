/* proto_runtime.h — the runtime directory that holds the default ipc:// sockets, checked the way
 * ssh-agent and tmux check theirs.
 *
 * The default directory is $GPT2D_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpt2d, else /tmp/gpt2d-$UID
 * (proto_default_endpoint). Only the two derived defaults are checked: a directory somebody else
 * made first in /tmp (or a world-writable XDG directory) could hold a listener of theirs in place
 * of client.sock, reading every prompt sent to it. So such a directory must be a real directory
 * (not a symbolic link), owned by the user, with no group or other permission bits (0700);
 * anything else is refused with a message saying why. $GPT2D_RUNTIME_DIR is an explicit choice
 * (e.g. systemd's /run/gpt2d, 0750, shared with a client group) and is taken as given. */
#ifndef GPT2D_PROTO_RUNTIME_H
#define GPT2D_PROTO_RUNTIME_H

#include <stddef.h>

/* 1 if $GPT2D_RUNTIME_DIR does not name the directory (the default is derived, so it is checked). */
int proto_runtime_is_derived(void);

/* Checks dir as above. create: make it (mode 0700) if it does not exist (the daemon); else a
 * missing directory passes (the client: there is nothing to connect to yet). 0, or -1 with err
 * ("runtime directory /tmp/gpt2d-0 is owned by uid 1001, not by you (uid 0): refusing to use it;
 * remove it or set GPT2D_RUNTIME_DIR"). */
int proto_runtime_check(const char *dir, int create, char *err, size_t errlen);

/* For an ipc:// endpoint under the derived default directory (ep equals the default endpoint of
 * that side): proto_runtime_check() of that directory; anything else passes. */
int proto_runtime_check_endpoint(const char *ep, int worker_side, int create, char *err, size_t errlen);

#endif
