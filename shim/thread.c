// SPDX-License-Identifier: MIT
/*
 * pthread_exit(): the main thread may leave the process to its other
 * threads, and glibc ends the process when the last of them ends. The
 * closer's thread counts among them; it looks whether it is the last only
 * once the main thread has left (core/closer.c), so that no other program
 * pays for the look.
 */
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

SHIM_EXPORT void pthread_exit(void *ret)
{
	if (syscall(SYS_gettid) == syscall(SYS_getpid))
		atomic_store(&rt_main_gone, true);
	REAL(pthread_exit)(ret);
	__builtin_unreachable();
}
