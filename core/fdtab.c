// SPDX-License-Identifier: MIT
/*
 * The fd table, the library's own fds, clocks and randomness: small pieces the
 * close path needs, all async-signal-safe.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "runtime.h"

/*
 * Indexed by fd. It lives in .bss: 4 MiB of address space whose pages the
 * kernel only backs once a tracked fd touches them.
 */
_Atomic uint32_t fdtab[TW_FD_MAX];

struct rt rt = { .libfd_base = 3 };

/*
 * Moves fd to the library's range (at or above rt.libfd_base, close-on-exec)
 * and marks it in the table as the library's. Returns the fd's number: the
 * new one, or fd itself when no number up there was free. The number given
 * up is one the program gets next: it is closed through close(), so that
 * what interposes on the program's calls (a sanitizer's fd bookkeeping)
 * sees it go; the table knows nothing of it, so the library's own wrapper
 * passes it straight through. Cancellation stays off across that close.
 */
int libfd_move(int fd, uint32_t mark)
{
	long nfd = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, rt.libfd_base);
	int cancel;

	if (nfd < 0) {
		fdtab_set(fd, mark);
		return fd;
	}
	fdtab_set((int)nfd, mark);
	fdtab_set(fd, FDT_NONE);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	close(fd);
	pthread_setcancelstate(cancel, NULL);
	return (int)nfd;
}

/*
 * Closes one of the library's fds. The mark is cleared after the close and
 * only if nobody re-marked the number meanwhile: cleared before, a program
 * sweeping its fds could close ours and have the number given back to it
 * while we still hold it. The window left is a program's open() in the
 * instant between the two, whose fd a later close() would then leave open.
 */
void libfd_close(int fd)
{
	uint32_t mark = fdtab_get(fd);

	syscall(SYS_close, fd);
	if (fdt_is_lib(mark) && (unsigned)fd < TW_FD_MAX)
		atomic_compare_exchange_strong(&fdtab[fd], &mark, FDT_NONE);
}

uint64_t clock_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_real_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * A per-thread xorshift64* generator for A/B draws: no syscall, no lock.
 * Seeded from the clock, the thread's stack address and the pid, so threads
 * and forked children draw differently.
 */
static __thread uint64_t rnd_state;

uint64_t rnd_next(void)
{
	uint64_t x = rnd_state;

	if (!x) {
		x = clock_mono_ns() ^ ((uint64_t)(uintptr_t)&x << 16) ^ (uint64_t)rt.pid << 40;
		x |= 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rnd_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* the forking thread's state was copied into the child: draw anew */
void rnd_fork_child(void)
{
	rnd_state = 0;
}
