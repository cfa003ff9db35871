/* fdguard.c — see fdguard.h. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int g_reserve = -1;         /* the reserved fd (/dev/null), or -1 */
static atomic_ulong g_refused;            /* connections closed for want of an fd */

void fdguard_init(void) {
    if (atomic_load(&g_reserve) >= 0) return;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int none = -1;
    if (fd >= 0 && !atomic_compare_exchange_strong(&g_reserve, &none, fd)) close(fd);
}

unsigned long fdguard_refused(void) { return atomic_load(&g_refused); }

/* Out of fds: the reserve makes room for one accept, whose connection is closed at once. */
static int fdguard_shed(int listener) {
    int saved = errno;
    int r = atomic_exchange(&g_reserve, -1);
    if (r >= 0) close(r);
    int s = (int)syscall(SYS_accept4, listener, NULL, NULL, SOCK_CLOEXEC);
    if (s >= 0) {
        close(s);
        atomic_fetch_add(&g_refused, 1);
    }
    fdguard_init();
    errno = s >= 0 ? EAGAIN : saved == EMFILE ? EAGAIN : saved;
    return -1;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    int s = (int)syscall(SYS_accept4, fd, addr, len, flags);
    if (s < 0 && (errno == EMFILE || errno == ENFILE)) return fdguard_shed(fd);
    return s;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, 0);
}
