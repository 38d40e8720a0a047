// SPDX-License-Identifier: MIT
/*
 * Process exit: exit() (through the library's destructor), _exit() and
 * _Exit(). Connections still open are recorded here and left for the
 * kernel to close as the process ends; the ones a policy defers go, with
 * those still deferred, to the holder process (conn_exit_all(), hold.h):
 * the process itself does not wait.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

static _Atomic bool exiting;

/*
 * Once per process. A child made by vfork or clone shares the parent's
 * memory, not its fds: its pid differs from the one the fork handlers keep,
 * and it leaves the table alone. exit() flushes stdio first, because glibc
 * flushes only after destructors have run, and data still buffered for a
 * socket must be in its send queue before the record reads the counters.
 */
static void shim_exit_all(bool flush)
{
	if (!rt.tracking || syscall(SYS_getpid) != rt.pid || atomic_exchange(&exiting, true))
		return;
	if (flush)
		fflush(NULL);
	conn_exit_all(TW_VIA_EXIT);
}

__attribute__((destructor)) static void shim_fini(void)
{
	shim_exit_all(true);
}

SHIM_EXPORT void _exit(int status)
{
	shim_exit_all(false);
	REAL(_exit)(status);
}

SHIM_EXPORT void _Exit(int status)
{
	shim_exit_all(false);
	REAL(_Exit)(status);
}
