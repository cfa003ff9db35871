/* fdguard.h — the last line of the fd bound (see conns.h): the broker's own accept4()/accept().
 *
 * libzmq 4.3's ipc listener asserts that accept() never fails with EMFILE, so a process out of
 * descriptors aborts (issue 13). gpt2d defines accept4 and accept itself; the dynamic linker binds
 * libzmq's calls to them (an executable's definitions come first). They call the kernel, and on
 * EMFILE/ENFILE close a reserved descriptor, accept the pending connection with it, close that at
 * once (the peer sees the connection closed), take the reserve back, and report EAGAIN, which
 * libzmq handles. This is process-wide by nature: the reserve is the one global of the daemon
 * outside main.c. */
#ifndef GPT2D_FDGUARD_H
#define GPT2D_FDGUARD_H

/* Opens the reserved descriptor (idempotent). */
void fdguard_init(void);

/* Connections refused because the process was out of descriptors. */
unsigned long fdguard_refused(void);

#endif
