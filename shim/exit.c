// SPDX-License-Identifier: MIT
/*
 * Process exit: exit() (through the library's destructor), _exit() and
 * _Exit(). Connections still open are recorded here and left for the
 * kernel to close as the process ends; the ones a policy defers go, with
 * those still deferred, to the holder process (conn_exit_all(), hold.h):
 * the process itself does not wait.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static _Atomic bool exiting;

/*
 * Once per process. A child made by vfork or clone shares the parent's
 * memory, not its fds: its pid differs from the one the fork handlers keep,
 * and it leaves the table alone. Nothing is flushed here: glibc flushes
 * stdio after the destructors have run, without the streams' locks, and a
 * flush here would take them (a thread blocked reading stdin holds its
 * lock for ever). What a stream on a socket still buffers then is not in
 * that connection's record (README, Limits), and under `abort` the
 * connection is not reset at once (conn.c, exit_one()).
 */
static void shim_exit_all(void)
{
	if (!rt.tracking || syscall(SYS_getpid) != rt.pid || atomic_exchange(&exiting, true))
		return;
	conn_exit_all(TW_VIA_EXIT);
}

__attribute__((destructor)) static void shim_fini(void)
{
	shim_exit_all();
}

SHIM_EXPORT void _exit(int status)
{
	shim_exit_all();
	REAL(_exit)(status);
}

SHIM_EXPORT void _Exit(int status)
{
	shim_exit_all();
	REAL(_Exit)(status);
}
