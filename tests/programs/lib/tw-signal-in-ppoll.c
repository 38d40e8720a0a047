// SPDX-License-Identifier: MIT
/*
 * tw-signal-in-ppoll: preloaded after the library, it raises SIGUSR1 in the
 * calling thread whenever syscall(SYS_ppoll, ...) is called, so that a
 * signal arrives exactly while the library's close settles deferred
 * connections (its one ppoll). Built by the closer test:
 *   cc -shared -fPIC -o tw-signal-in-ppoll.so tw-signal-in-ppoll.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/syscall.h>

__attribute__((visibility("default"))) long syscall(long n, ...);

long syscall(long n, ...)
{
	static long (*real)(long, ...);
	long a[6];
	va_list ap;

	va_start(ap, n);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (!real)
		real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	if (n == SYS_ppoll)
		raise(SIGUSR1);
	return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
