// SPDX-License-Identifier: MIT
/*
 * The exec family. A successful exec closes every fd marked close-on-exec
 * inside the kernel, where close() is not interposed, and takes the
 * library's closer with it: connections the program marked so are recorded
 * here first, with via "exec" and the end that close makes, as at exit, and
 * left open; those still deferred go to the holder. Should the exec fail,
 * the program has its fds as they were.
 */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

/* once per exec; a vfork child's exec leaves the parent's table alone */
static void shim_exec_prepare(void)
{
	int saved = errno;

	if (rt.tracking && !rt_foreign())
		conn_exec_all();
	errno = saved;
}

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	shim_exec_prepare();
	return REAL(execve)(path, argv, envp);
}

SHIM_EXPORT int execv(const char *path, char *const argv[])
{
	shim_exec_prepare();
	return REAL(execv)(path, argv);
}

SHIM_EXPORT int execvp(const char *file, char *const argv[])
{
	shim_exec_prepare();
	return REAL(execvp)(file, argv);
}

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	shim_exec_prepare();
	return REAL(execvpe)(file, argv, envp);
}

SHIM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	shim_exec_prepare();
	return REAL(fexecve)(fd, argv, envp);
}

/*
 * execl, execlp and execle take their arguments as a list: counted, then
 * copied into an array on the stack, as glibc does (execle is
 * async-signal-safe: no allocation), and passed to the array forms. The
 * list goes by pointer, so that execle may read on after it (C11 7.16 note).
 */
static size_t count_args(va_list *ap)
{
	va_list cp;
	size_t n = 1;

	va_copy(cp, *ap);
	while (va_arg(cp, char *))
		n++;
	va_end(cp);
	return n;
}

static void fill_args(char **argv, size_t n, const char *arg0, va_list *ap)
{
	argv[0] = (char *)arg0;
	for (size_t i = 1; i <= n; i++)
		argv[i] = va_arg(*ap, char *);
}

/* execl and execlp: the list as an array, then the array form fn */
static int exec_list(int (*fn)(const char *, char *const[]), const char *file,
		     const char *arg0, va_list *ap)
{
	size_t n = count_args(ap);
	char *argv[n + 1];

	fill_args(argv, n, arg0, ap);
	return fn(file, argv);
}

SHIM_EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	int r;

	va_start(ap, arg);
	r = exec_list(execv, path, arg, &ap);
	va_end(ap);
	return r;
}

SHIM_EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	int r;

	va_start(ap, arg);
	r = exec_list(execvp, file, arg, &ap);
	va_end(ap);
	return r;
}

SHIM_EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	char **envp;
	size_t n;

	va_start(ap, arg);
	n = count_args(&ap);
	char *argv[n + 1];

	fill_args(argv, n, arg, &ap);
	envp = va_arg(ap, char **);
	va_end(ap);
	return execve(path, argv, envp);
}
