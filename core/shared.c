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

/* called for each fd link of a process; returns non-zero to stop */
typedef int (*link_fn)(const char *link, long len, void *arg);

/*
 * Calls fn for each of pid's fd links. Returns what fn returned when it
 * stopped the walk, 0 when it did not or the process is gone, -1 when its
 * fds cannot be read (another user).
 */
static int pid_links(unsigned long pid, link_fn fn, void *arg)
{
	char path[48], buf[2048], link[64];
	int dfd, found = 0;
	long n;

	memcpy(put_u(memcpy(path, "/proc/", 6) + 6, pid), "/fd", 4);
	dfd = open_dir(path);
	if (dfd < 0)
		return errno == EACCES ? -1 : 0;
	while (!found && (n = syscall(SYS_getdents64, dfd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n && !found;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			long l;

			off += d->d_reclen;
			if (d->d_name[0] == '.')
				continue;
			l = syscall(SYS_readlinkat, dfd, d->d_name, link, sizeof(link));
			if (l > 0)
				found = fn(link, l, arg);
		}
	}
	if (n < 0 && !found)
		found = errno == EACCES ? -1 : 0;
	syscall(SYS_close, dfd);
	return found;
}

struct want {
	const char *link;
	size_t len;
};

static int link_is(const char *link, long len, void *arg)
{
	const struct want *w = arg;

	return len == (long)w->len && !memcmp(link, w->link, w->len);
}

/*
 * Calls fn for every child of every thread of this process. Returns the
 * first non-zero fn returned, 0, or -1 when the children cannot be known.
 */
static int children_each(int (*fn)(unsigned long pid, void *arg), void *arg)
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
			if (cfd < 0) {
				r = -1;	/* no CONFIG_PROC_CHILDREN: cannot tell */
				break;
			}
			l = syscall(SYS_read, cfd, list, sizeof(list) - 1);
			syscall(SYS_close, cfd);
			if (l == sizeof(list) - 1) {
				r = -1;	/* more children than we read */
				break;
			}
			for (long i = 0; i < l && !r; i++) {
				if (list[i] >= '0' && list[i] <= '9') {
					pid = pid * 10 + (unsigned long)(list[i] - '0');
					continue;
				}
				if (pid)
					r = fn(pid, arg);
				pid = 0;
			}
		}
	}
	syscall(SYS_close, tdir);
	return r;
}

static int child_holds(unsigned long pid, void *arg)
{
	return pid_links(pid, link_is, arg);
}

/*
 * The socket inodes the parent and the children held when a run of
 * questions began (holders_begin()): their fds read once, not once a
 * question. Per thread: another thread asks the processes itself.
 */
struct holders {
	uint64_t *ino;		/* sorted */
	size_t n, cap;
	bool unknown;		/* some process could not be read: all may be held */
};

static __thread struct holders *snap;

static int snap_add(const char *link, long len, void *arg)
{
	struct holders *h = arg;
	uint64_t ino = 0;

	if (len < 10 || memcmp(link, "socket:[", 8) || link[len - 1] != ']')
		return 0;
	for (long i = 8; i < len - 1; i++)
		ino = ino * 10 + (uint64_t)(link[i] - '0');
	if (h->n == h->cap) {
		size_t cap = h->cap * 2;
		void *p = mremap(h->ino, h->cap * sizeof(*h->ino), cap * sizeof(*h->ino),
				 MREMAP_MAYMOVE);

		if (p == MAP_FAILED) {
			h->unknown = true;
			return 1;
		}
		h->ino = p;
		h->cap = cap;
	}
	h->ino[h->n++] = ino;
	return 0;
}

static int snap_child(unsigned long pid, void *arg)
{
	struct holders *h = arg;

	if (pid_links(pid, snap_add, h) != 0)
		h->unknown = true;
	return h->unknown;
}

/* heapsort: no allocation, no recursion */
static void sift(uint64_t *a, size_t i, size_t n)
{
	for (;;) {
		size_t m = i, l = 2 * i + 1;
		uint64_t t;

		if (l < n && a[l] > a[m])
			m = l;
		if (l + 1 < n && a[l + 1] > a[m])
			m = l + 1;
		if (m == i)
			return;
		t = a[i];
		a[i] = a[m];
		a[m] = t;
		i = m;
	}
}

static void sort_u64(uint64_t *a, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift(a, i, n);
	for (size_t e = n; e-- > 1;) {
		uint64_t t = a[0];

		a[0] = a[e];
		a[e] = t;
		sift(a, 0, e);
	}
}

static bool snap_has(const struct holders *h, uint64_t ino)
{
	size_t lo = 0, hi = h->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (h->ino[mid] < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < h->n && h->ino[lo] == ino;
}

void holders_begin(void)
{
	static __thread struct holders h;
	long ppid;

	if (snap)
		return;
	h.n = 0;
	h.cap = 4096;
	h.unknown = false;
	h.ino = mmap(NULL, h.cap * sizeof(*h.ino), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h.ino == MAP_FAILED)
		return;
	ppid = syscall(SYS_getppid);
	if (ppid > 1 && pid_links((unsigned long)ppid, snap_add, &h) != 0)
		h.unknown = true;
	if (!h.unknown && children_each(snap_child, &h) != 0)
		h.unknown = true;
	sort_u64(h.ino, h.n);
	snap = &h;
}

void holders_end(void)
{
	if (!snap)
		return;
	munmap(snap->ino, snap->cap * sizeof(*snap->ino));
	snap = NULL;
}

/*
 * true when the parent or a child of this process may hold fd's socket, or
 * when that cannot be found out; false only when they all were read and
 * none does. Grandchildren and unrelated processes (a socket sent with
 * SCM_RIGHTS) are not looked at: such sockets are marked shared for good.
 */
bool holders_elsewhere(int fd)
{
	char link[48], *p;
	struct want w = { link, 0 };
	struct stat st;
	long ppid;

	if (fstat(fd, &st) < 0)
		return true;
	if (snap)
		return snap->unknown || snap_has(snap, (uint64_t)st.st_ino);
	p = put_u(memcpy(link, "socket:[", 8) + 8, (unsigned long)st.st_ino);
	*p++ = ']';
	w.len = (size_t)(p - link);
	ppid = syscall(SYS_getppid);
	if (ppid > 1 && pid_links((unsigned long)ppid, link_is, &w) != 0)
		return true;
	return children_each(child_holds, &w) != 0;
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
