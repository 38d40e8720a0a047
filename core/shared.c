// SPDX-License-Identifier: MIT
/*
 * Connections held by more than one process.
 *
 * Does a process next to this one hold a socket too? After fork() both
 * processes hold every socket that was open; after exec the new program
 * holds what it inherited. The kernel keeps no count of a file's holders
 * that user space can read, so the parent and the children are asked the
 * way ss -p does it: by reading their /proc/PID/fd links.
 *
 * Called on the close path of connections open across a fork or inherited
 * across exec, and only when a policy other than normal would change the
 * connection. Async-signal-safe: raw syscalls, buffers on the stack.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "runtime.h"

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static char *put_u(char *p, unsigned long v)
{
	return p + fmt_u64(p, v);
}

static int open_dir(const char *path)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/*
 * 1 when one of pid's fds links to `want` ("socket:[INODE]"), 0 when none
 * does or the process is gone, -1 when its fds cannot be read (another user).
 */
static int pid_holds(unsigned long pid, const char *want, size_t wlen)
{
	char path[48], buf[2048], link[64];
	int dfd, found = 0;
	long n;

	memcpy(put_u(memcpy(path, "/proc/", 6) + 6, pid), "/fd", 4);
	dfd = open_dir(path);
	if (dfd < 0)
		return errno == EACCES ? -1 : 0;
	while (!found && (n = syscall(SYS_getdents64, dfd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			long l;

			off += d->d_reclen;
			if (d->d_name[0] == '.')
				continue;
			l = syscall(SYS_readlinkat, dfd, d->d_name, link, sizeof(link));
			if (l == (long)wlen && !memcmp(link, want, wlen)) {
				found = 1;
				break;
			}
		}
	}
	if (n < 0 && !found)
		found = errno == EACCES ? -1 : 0;
	syscall(SYS_close, dfd);
	return found;
}

/* calls pid_holds for every child of every thread of this process */
static int children_hold(const char *want, size_t wlen)
{
	char buf[2048], path[64], list[1024];
	int tdir, r = 0;
	long n;

	tdir = open_dir("/proc/self/task");
	if (tdir < 0)
		return -1;
	while (!r && (n = syscall(SYS_getdents64, tdir, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n && !r;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			unsigned long pid = 0;
			long l;
			int cfd;

			off += d->d_reclen;
			if (d->d_name[0] == '.' || strlen(d->d_name) > 20)
				continue;
			memcpy(path, "/proc/self/task/", 16);
			memcpy(stpcpy(path + 16, d->d_name), "/children", 10);
			cfd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
			if (cfd < 0)
				return -1;	/* no CONFIG_PROC_CHILDREN: cannot tell */
			l = syscall(SYS_read, cfd, list, sizeof(list) - 1);
			syscall(SYS_close, cfd);
			if (l == sizeof(list) - 1)
				return -1;	/* more children than we read */
			for (long i = 0; i < l && !r; i++) {
				if (list[i] >= '0' && list[i] <= '9') {
					pid = pid * 10 + (unsigned long)(list[i] - '0');
					continue;
				}
				if (pid)
					r = pid_holds(pid, want, wlen);
				pid = 0;
			}
		}
	}
	syscall(SYS_close, tdir);
	return r;
}

/*
 * true when the parent or a child of this process may hold fd's socket, or
 * when that cannot be found out; false only when they all were read and
 * none does. Grandchildren and unrelated processes (a socket sent with
 * SCM_RIGHTS) are not looked at: such sockets are marked shared for good.
 */
bool holders_elsewhere(int fd)
{
	char want[48], *p;
	struct stat st;
	long ppid;

	if (fstat(fd, &st) < 0)
		return true;
	p = put_u(memcpy(want, "socket:[", 8) + 8, (unsigned long)st.st_ino);
	*p++ = ']';
	ppid = syscall(SYS_getppid);
	if (ppid > 1 && pid_holds((unsigned long)ppid, want, (size_t)(p - want)) != 0)
		return true;
	return children_hold(want, (size_t)(p - want)) != 0;
}

/*
 * Who records a shared connection: the process whose close released the
 * last reference, which the kernel shows after the close (the socket is
 * orphaned or gone). When two holders close at the same instant both see
 * that, so each then claims the socket's cookie in a table that every
 * process forked from this one shares (MAP_SHARED survives fork): the first
 * claim records, the other stays silent. A slot holds the latest cookie that
 * hashed to it; a claim only has to outlive that instant.
 */
#define CLAIM_SLOTS	8192

static _Atomic uint64_t *claims;

int shared_init(void)
{
	void *p = mmap(NULL, CLAIM_SLOTS * sizeof(*claims), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	claims = p;
	return 0;
}

bool shared_claim(uint64_t cookie)
{
	_Atomic uint64_t *slot;
	uint64_t v;

	if (!claims)
		return true;
	slot = &claims[(cookie * 0x9e3779b97f4a7c15ull) >> 51];
	v = atomic_load(slot);
	while (v != cookie)
		if (atomic_compare_exchange_weak(slot, &v, cookie))
			return true;
	return false;
}
