// SPDX-License-Identifier: MIT
/*
 * vfork() and clone(): the children that share this process's memory but
 * not its fds. They are counted in rt_vforks while they may run, so that
 * the close path asks getpid() only then (rt_foreign()), and not on every
 * close of every process.
 *
 * posix_spawn(), system() and popen() make such children too, but their
 * children call only glibc's internal functions, never these wrappers.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <asm/unistd.h>

#include "conn.h"
#include "runtime.h"
#include "shim.h"

#if defined(__x86_64__)
#define STR_(x) #x
#define STR(x) STR_(x)

long shim_vfork_failed(long r);

/* The parent gets -errno back: errno and -1, as libc's vfork returns them. */
__attribute__((used)) long shim_vfork_failed(long r)
{
	errno = (int)-r;
	return -1;
}

/*
 * No C function can wrap vfork(): the child returns through the wrapper's
 * frame and the calls it makes overwrite it before the parent resumes there.
 * As glibc's own vfork does, the return address waits in a register, which
 * each side has its own copy of, not on the stack they share. The sockets
 * are marked (conn_spawn_prepare(), a C function: the ABI wants the stack
 * 16-byte aligned at the call, and the return address left it 8 off) and
 * the count goes up before the child exists; the count comes down once the
 * parent runs again: the child has exec'd or exited by then. vfork() takes
 * no arguments, so nothing the call may overwrite needs keeping.
 */
__asm__(
	".text\n"
	".globl vfork\n"
	".type vfork, @function\n"
	"vfork:\n"
	"	endbr64\n"
	"	subq $8, %rsp\n"
	"	call conn_spawn_prepare\n"
	"	addq $8, %rsp\n"
	"	lock incl rt_vforks(%rip)\n"
	"	popq %rdi\n"
	"	movl $" STR(__NR_vfork) ", %eax\n"
	"	syscall\n"
	"	pushq %rdi\n"
	"	testq %rax, %rax\n"
	"	jz 1f\n"
	"	lock decl rt_vforks(%rip)\n"
	"	cmpq $-4095, %rax\n"
	"	jae 2f\n"
	"1:	ret\n"
	"2:	movq %rax, %rdi\n"
	"	jmp shim_vfork_failed\n"
	".size vfork, .-vfork\n");
#endif

/* what the child of a fork-like clone() runs: the fork handler, then the program's fn */
struct clone_call {
	int (*fn)(void *);
	void *arg;
};

static int clone_child(void *p)
{
	const struct clone_call *call = p;

	shim_clone_child();
	return call->fn(call->arg);
}

/*
 * clone() with CLONE_VM and a fd table of its own: with CLONE_VFORK the
 * caller waits until the child exec'd or exited, and the count comes down;
 * without, the child may run as long as it likes, and the count stays up
 * for the rest of the process. A child that shares the fds too
 * (CLONE_FILES) is one of this process's holders: not counted, and the
 * process is one where another may act on its sockets (rt_cloned). A
 * child with a copy of both the memory and the fds is a fork that glibc
 * runs no handler for: the library runs its own around it, so that the
 * child lets go of the library's copies of deferred connections (which
 * would keep them open as long as it lives) and of the closer's epoll
 * (which its parent's closer would then hear the child's sockets in).
 * The child's copy of the call (on the parent's stack) tells it the
 * program's fn; the handler runs on the program's stack for the child,
 * which may be small, and uses little of it (stats makes the child's file
 * later, at its first connection). A call glibc refuses (no fn, no stack:
 * EINVAL) goes to it as it is. With a TLS of its own (CLONE_SETTLS) the
 * child has none of the handlers' thread state, and with CLONE_VFORK the
 * parent would hold the handlers' locks until the child execs: a spawn, as
 * any other child (conn_spawn_prepare()).
 */
SHIM_EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	bool counted = (flags & CLONE_VM) && !(flags & CLONE_FILES);
	bool forks = rt.tracking && fn && stack &&
		     !(flags & (CLONE_VM | CLONE_FILES | CLONE_SETTLS | CLONE_VFORK));
	struct clone_call call = { fn, arg };
	void *ptid, *tls, *ctid;
	va_list ap;
	int r, saved;

	va_start(ap, arg);
	ptid = va_arg(ap, void *);
	tls = va_arg(ap, void *);
	ctid = va_arg(ap, void *);
	va_end(ap);
	if (forks) {
		shim_fork_prepare();
		r = REAL(clone)(clone_child, stack, flags, &call, ptid, tls, ctid);
		saved = errno;
		shim_fork_parent();
		errno = saved;
		return r;
	}
	if (counted)
		atomic_fetch_add(&rt_vforks, 1);
	if (flags & CLONE_FILES)
		atomic_store(&rt_cloned, true);
	else
		conn_spawn_prepare();
	r = REAL(clone)(fn, stack, flags, arg, ptid, tls, ctid);
	saved = errno;
	if (counted && ((flags & CLONE_VFORK) || r < 0))
		atomic_fetch_sub(&rt_vforks, 1);
	errno = saved;
	return r;
}
