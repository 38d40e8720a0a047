// SPDX-License-Identifier: MIT
/*
 * dup, dup2, dup3 and fcntl(F_DUPFD*): a duplicate is one more holder of a
 * connection, and dup2/dup3 onto a connection's fd is one way to end it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "observe.h"
#include "runtime.h"
#include "shim.h"

struct dup_args {
	int oldfd, flags;
	bool three;
};

static int op_dup(int newfd, void *arg)
{
	struct dup_args *a = arg;

	return a->three ? REAL(dup3)(a->oldfd, newfd, a->flags) : REAL(dup2)(a->oldfd, newfd);
}

/*
 * Does dup2/dup3 fail before it touches newfd (ksys_dup3())? Flags it does
 * not know, a number at or above the soft fd limit (lowered since newfd
 * was opened), and an invalid oldfd. A connection is ended only by a call
 * that gets that far: this asks only when newfd may be one.
 */
static bool dup_refused(int oldfd, int newfd, int flags, bool three)
{
	struct rlimit rl;

	if (three && (flags & ~O_CLOEXEC))
		return true;
	if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 &&
	    (rlim_t)newfd >= rl.rlim_cur)
		return true;
	return syscall(SYS_fcntl, oldfd, F_GETFD) < 0;
}

/*
 * dup2/dup3 close newfd first. When newfd is one of the library's, ours moves
 * away; when it is a connection, that close may end it (via dup2 or dup3).
 * A call that fails without touching newfd ends nothing, so that is checked
 * before anything is ended; one that fails after (EBUSY, an open under way
 * in another thread at that number) cannot be foreseen (README, Limits).
 */
static int shim_dup23(int oldfd, int newfd, int flags, bool three)
{
	struct dup_args a = { oldfd, flags, three };
	uint32_t v;
	int r;

	if (!rt.tracking || oldfd == newfd)
		return op_dup(newfd, &a);
	v = fdtab_get(newfd);
	if ((fdt_is_lib(v) || fdt_may_be_conn(v)) && dup_refused(oldfd, newfd, flags, three))
		return op_dup(newfd, &a);
	if (fdt_is_lib(v) && !rt_foreign() && !sink_evict(newfd) && !observe_evict(newfd))
		closer_evict(newfd);
	if (fdt_may_be_conn(v))
		r = conn_release(newfd, three ? TW_VIA_DUP3 : TW_VIA_DUP2, op_dup, &a);
	else
		r = op_dup(newfd, &a);
	if (r >= 0)
		conn_note_dup(oldfd, r);
	return r;
}

static int shim_dup(int oldfd)
{
	int r = REAL(dup)(oldfd);

	if (r >= 0 && rt.tracking)
		conn_note_dup(oldfd, r);
	return r;
}

/*
 * fcntl is variadic; like glibc's own, the wrapper passes the third argument
 * on as a pointer-sized value whatever the command.
 */
static int shim_fcntl(int (*fn)(int, int, ...), int fd, int cmd, void *arg)
{
	int r = fn(fd, cmd, arg);

	if (r >= 0 && rt.tracking && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		conn_note_dup(fd, r);
	if (r >= 0 && (cmd == F_SETOWN || cmd == F_SETOWN_EX))
		conn_note_owner(fd);
	return r;
}

SHIM_EXPORT int dup(int oldfd)
{
	return shim_dup(oldfd);
}

SHIM_EXPORT int dup2(int oldfd, int newfd)
{
	return shim_dup23(oldfd, newfd, 0, false);
}

SHIM_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return shim_dup23(oldfd, newfd, flags, true);
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return shim_fcntl(REAL(fcntl), fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return shim_fcntl(real.fcntl64 ? real.fcntl64 : REAL(fcntl), fd, cmd, arg);
}
