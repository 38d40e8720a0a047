// SPDX-License-Identifier: MIT
/*
 * Where records go: a file (O_APPEND, one write() a record, so processes
 * sharing it never interleave), stderr, or syslog. A destination is opened at
 * its first record, not at start-up: a process that makes no connection has
 * exactly the fds it would have without the library. Written from the close
 * path, maybe in a signal handler: system calls and atomics only, no lock, no
 * allocation.
 *
 * A file is looked at again at most once a second, on the write path: when
 * its path now names another file (logrotate renamed it, or it was deleted)
 * it is opened anew; records written meanwhile went to the renamed file, so
 * none is lost or split.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "diagmsg.h"
#include "runtime.h"

enum sink_kind { SINK_FILE, SINK_STDERR, SINK_SYSLOG };

/* sink.fd before the first open, and after the file was lost */
#define FD_NONE		(-1)

/*
 * sink.retired: the fd in the low half, the count of reopens in the high
 * half, so that a retired fd closed and its number given to a later one is
 * never taken for the fd another thread saw.
 */
#define RETIRED_NONE	((uint64_t)(uint32_t)FD_NONE)

static int retired_fd(uint64_t r)
{
	return (int)(uint32_t)r;
}

struct sink {
	enum sink_kind kind;
	_Atomic int fd;
	_Atomic uint64_t retired;	/* the fd replaced at a reopen, until no write holds it */
	_Atomic uint32_t reopens;	/* tags retired: a number given out again is not the old fd */
	_Atomic bool warned;		/* a failure was reported; a success clears it */
	_Atomic bool partial;		/* a write stopped inside a record */
	_Atomic bool special;		/* not a regular file: a write may raise SIGPIPE */
	_Atomic uint64_t next_check;	/* CLOCK_MONOTONIC_COARSE second of the next look */
	_Atomic uint64_t open_retry;	/* no open before this second (the last one failed) */
	_Atomic unsigned writers;	/* writes in flight: a retired fd waits for none */
	_Atomic uint64_t dev, ino;	/* of the file open now */
	const char *name;		/* as configured, %p and %n unexpanded */
	char path[TW_PATH_MAX];		/* expanded; "" when it cannot be */
	int path_err;			/* why it cannot be */
};

static struct sink sinks[TW_SINKS_MAX];
static unsigned nsinks;
/* RLIMIT_FSIZE as last read (RLIM_INFINITY: none), refreshed with each check */
static _Atomic uint64_t fsize_limit = RLIM_INFINITY;

static char *put_num(char *p, char *end, unsigned v)
{
	char tmp[20];
	size_t n = fmt_u64(tmp, v);

	if (n > (size_t)(end - p))
		n = (size_t)(end - p);
	memcpy(p, tmp, n);
	return p + n;
}

/*
 * Expands %p (pid) and %n (process name) and %% in a log path. Returns 0,
 * -ENAMETOOLONG, or -EPERM when %n has no usable value ("", ".", "..": a
 * name must not climb out of the directory it is put in). Async-signal-safe:
 * a forked child calls it.
 */
static int expand_path(char *out, size_t len, const char *in)
{
	char *p = out, *end = out + len - 1;

	for (; *in; in++) {
		if (*in == '%' && in[1] == 'p') {
			p = put_num(p, end, (unsigned)rt.pid);
			in++;
		} else if (*in == '%' && in[1] == 'n') {
			if (!rt.comm[0] || !strcmp(rt.comm, ".") || !strcmp(rt.comm, ".."))
				return -EPERM;
			for (const char *n = rt.comm; *n && p < end; n++)
				*p++ = *n == '/' ? '_' : *n;
			in++;
		} else if (*in == '%' && in[1] == '%') {
			if (p < end)
				*p++ = '%';
			in++;
		} else if (p < end) {
			*p++ = *in;
		}
		if (p >= end)
			return -ENAMETOOLONG;
	}
	*p = 0;
	return 0;
}

/*
 * Can someone other than this process's user (or root) add, remove or rename
 * entries of the directory? Then whatever the log's name points to may have
 * been put there by them.
 */
static bool dir_open_to_others(const struct stat *d)
{
	return (d->st_mode & (S_IWGRP | S_IWOTH)) ||
	       (d->st_uid != 0 && d->st_uid != (uid_t)syscall(SYS_geteuid));
}

/*
 * A log in such a directory must be this user's own file: regular, owned by
 * the effective uid, one link (not a hard link to someone's file), and not
 * writable by group or others.
 */
static bool file_is_own(const struct stat *f)
{
	return S_ISREG(f->st_mode) && f->st_uid == (uid_t)syscall(SYS_geteuid) &&
	       f->st_nlink == 1 && !(f->st_mode & (S_IWGRP | S_IWOTH));
}

/*
 * Opens the file at s->path for appending. The directory is opened first and
 * the file relative to it, so that what was checked is what is used; the
 * last component is never followed (O_NOFOLLOW: a planted symlink gives
 * ELOOP), a FIFO without a reader never blocks (O_NONBLOCK: ENXIO), a
 * terminal never becomes the controlling one. In a directory others can
 * write to, anything but the user's own file is refused (-EPERM). Returns the
 * fd, moved to the library's range, or -errno. Raw system calls: the
 * library's own wrappers stay out.
 */
static int open_file(struct sink *s, struct stat *st)
{
	char dir[TW_PATH_MAX];
	const char *base, *slash;
	struct stat dst;
	long dfd, fd;
	int err = 0;

	if (s->path_err)
		return s->path_err;
	slash = strrchr(s->path, '/');
	if (slash) {
		size_t n = slash == s->path ? 1 : (size_t)(slash - s->path);

		memcpy(dir, s->path, n);
		dir[n] = 0;
		base = slash + 1;
	} else {
		dir[0] = '.';
		dir[1] = 0;
		base = s->path;
	}
	if (!*base)
		return -EISDIR;
	dfd = syscall(SYS_openat, AT_FDCWD, dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	fd = syscall(SYS_openat, (int)dfd, base, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
		     O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0644);
	if (fd < 0)
		err = -errno;
	else if (syscall(SYS_fstat, (int)fd, st) < 0 || syscall(SYS_fstat, (int)dfd, &dst) < 0)
		err = -errno;
	else if (dir_open_to_others(&dst) && !file_is_own(st))
		err = -EPERM;
	syscall(SYS_close, dfd);
	if (err) {
		if (fd >= 0)
			syscall(SYS_close, fd);
		return err;
	}
	return libfd_move((int)fd, FDT_LIB);
}

/* a datagram socket connected to the local syslog daemon */
static int open_syslog(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
	long fd = syscall(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (syscall(SYS_connect, fd, &sun, sizeof(sun)) < 0) {
		int err = -errno;

		syscall(SYS_close, fd);
		return err;
	}
	return libfd_move((int)fd, FDT_LIB);
}

static const char *why_text(int err)
{
	if (err == -EPERM)
		return "in a directory others can write to, a log must be a regular file "
		       "of the user's own, one link, not writable by group or others";
	if (err == -ELOOP)
		return "it is a symbolic link";
	return strerrordesc_np(-err);
}

/* One line when a destination starts losing records; a success re-arms it. */
static void warn_once(struct sink *s, const char *what, const char *why)
{
	if (!atomic_exchange(&s->warned, true))
		SHIM_ERR("log: %s %s: %s; its records are dropped until it can be", what,
			 s->name, why);
}

/*
 * Opens s's destination and installs it where no other thread did first
 * (the first records of two threads may race here: both open, one keeps its
 * fd, the other closes its own and uses that one). Returns the fd or -errno.
 */
static int sink_open(struct sink *s)
{
	struct stat st = { 0 };
	int fd, expect = FD_NONE;

	if (s->kind == SINK_STDERR)
		return STDERR_FILENO;
	fd = s->kind == SINK_SYSLOG ? open_syslog() : open_file(s, &st);
	if (fd < 0)
		return fd;
	atomic_store(&s->dev, st.st_dev);
	atomic_store(&s->ino, st.st_ino);
	atomic_store(&s->special, s->kind == SINK_FILE && !S_ISREG(st.st_mode));
	if (!atomic_compare_exchange_strong(&s->fd, &expect, fd)) {
		libfd_close(fd);
		return expect;
	}
	return fd;
}

/* RLIMIT_FSIZE, read at start-up, at a first open, once a second and when the program sets it */
void sink_fsize_refresh(void)
{
	struct rlimit rl;

	if (syscall(SYS_prlimit64, 0, RLIMIT_FSIZE, NULL, &rl) == 0)
		atomic_store(&fsize_limit, rl.rlim_cur);
}

/* Claims this second's look at s: true for one caller a second. */
static bool check_due(struct sink *s)
{
	uint64_t now = clock_mono_s(), next = atomic_load(&s->next_check);

	return now >= next && atomic_compare_exchange_strong(&s->next_check, &next, now + 1);
}

/*
 * The once-a-second look: RLIMIT_FSIZE is read again, and a file whose path
 * now names another file, or none, is opened anew (unless the fd replaced
 * last time is still waiting for its writers: see retire()). An fd that is no
 * longer the file the library opened (the program closed it with a raw
 * system call and got the number back) is left to the program. Returns the
 * fd to write to.
 */
/*
 * Closes the fd replaced at a reopen once no write is in flight. A write
 * counts itself in s->writers before it loads s->fd, and the reopen swaps
 * s->fd before it sets s->retired: seen here in that order, retired and then
 * no writer, no write can still hold the old fd, and every later one loads
 * the new. However long a thread is held up between loading the fd and
 * writing, the number it holds is never closed and given to the program
 * under it.
 */
static void retire(struct sink *s)
{
	uint64_t r = atomic_load(&s->retired);

	if (r == RETIRED_NONE || atomic_load(&s->writers) != 0)
		return;
	if (atomic_compare_exchange_strong(&s->retired, &r, RETIRED_NONE))
		libfd_close(retired_fd(r));
}

static int sink_check(struct sink *s, int fd)
{
	struct stat fst, pst;
	int nfd;

	sink_fsize_refresh();
	if (s->kind != SINK_FILE || fd < 0)
		return fd;
	if (atomic_load(&s->retired) != RETIRED_NONE)
		return fd;	/* the last replaced fd is not closed yet: no new one */
	if (syscall(SYS_fstat, fd, &fst) < 0 || fst.st_dev != atomic_load(&s->dev) ||
	    fst.st_ino != atomic_load(&s->ino)) {
		int expect = fd;

		if (fdtab_get(fd) == FDT_LIB)
			fdtab_set(fd, FDT_NONE);
		atomic_compare_exchange_strong(&s->fd, &expect, FD_NONE);
		return sink_open(s);
	}
	if (syscall(SYS_newfstatat, AT_FDCWD, s->path, &pst, AT_SYMLINK_NOFOLLOW) == 0 &&
	    pst.st_dev == fst.st_dev && pst.st_ino == fst.st_ino)
		return fd;
	/* rotated or deleted: the new file takes the records from now on */
	nfd = open_file(s, &pst);
	if (nfd < 0) {
		warn_once(s, "cannot reopen", why_text(nfd));
		return fd;
	}
	atomic_store(&s->dev, pst.st_dev);
	atomic_store(&s->ino, pst.st_ino);
	atomic_store(&s->special, !S_ISREG(pst.st_mode));
	if (atomic_compare_exchange_strong(&s->fd, &fd, nfd)) {
		uint64_t tag = (uint64_t)(atomic_fetch_add(&s->reopens, 1) + 1) << 32;

		atomic_store(&s->retired, tag | (uint32_t)fd);
		return nfd;
	}
	libfd_close(nfd);
	return fd;
}

/*
 * Notes every log destination the settings name; nothing is opened yet.
 * A path that cannot be expanded is reported now, once.
 */
int sink_open_all(const struct conf *c)
{
	nsinks = (unsigned)conf_nsinks(c);
	if (nsinks > TW_SINKS_MAX)
		nsinks = TW_SINKS_MAX;
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];

		s->name = conf_sink(c, i);
		s->kind = !strcmp(s->name, "stderr") ? SINK_STDERR :
			  !strcmp(s->name, "syslog") ? SINK_SYSLOG : SINK_FILE;
		atomic_store(&s->fd, s->kind == SINK_STDERR ? STDERR_FILENO : FD_NONE);
		atomic_store(&s->retired, RETIRED_NONE);
		if (s->kind == SINK_FILE)
			s->path_err = expand_path(s->path, sizeof(s->path), s->name);
		if (s->path_err == -EPERM)
			warn_once(s, "cannot open", "%n has no safe value in this process");
		else if (s->path_err)
			warn_once(s, "cannot open", strerrordesc_np(-s->path_err));
	}
	sink_fsize_refresh();
	return 0;
}

/* syslog's frame: "<14>" is facility user, level info (RFC 3164); no newline */
static size_t syslog_frame(char *msg, size_t cap, const char *buf, size_t len)
{
	char *p = msg, *end = msg + cap;

	memcpy(p, "<14>twshim[", 11);
	p = put_num(p + 11, end, (unsigned)rt.pid);
	memcpy(p, "]: ", 3);
	p += 3;
	if (len - 1 > (size_t)(end - p))
		len = (size_t)(end - p) + 1;
	memcpy(p, buf, len - 1);
	return (size_t)(p - msg) + len - 1;
}

/*
 * Would this record take a regular file past RLIMIT_FSIZE? The kernel would
 * then write part of it, or raise SIGXFSZ (which kills by default).
 */
static bool over_fsize(int fd, size_t len)
{
	uint64_t lim = atomic_load(&fsize_limit);
	struct stat st;

	if (lim == RLIM_INFINITY)
		return false;
	return syscall(SYS_fstat, fd, &st) == 0 && (uint64_t)st.st_size + len > lim;
}

/*
 * The first open of s (or the first after it was lost), at most once a
 * second while it fails; a failure is said once. Returns the fd or -errno.
 */
static int sink_first_open(struct sink *s)
{
	int fd;

	if (clock_mono_s() < atomic_load(&s->open_retry))
		return -EAGAIN;	/* failed less than a second ago */
	sink_fsize_refresh();
	fd = sink_open(s);
	if (fd < 0) {
		atomic_store(&s->open_retry, clock_mono_s() + 1);
		warn_once(s, "cannot open", why_text(fd));
	}
	return fd;
}

/*
 * Opens now the destinations not open yet, in a process about to hand its
 * connections to the holder: the holder then has the log from the start,
 * and a log that cannot be opened is said on this process's stderr, which
 * the holder does not keep.
 */
void sink_open_pending(void)
{
	int saved = errno;

	for (unsigned i = 0; i < nsinks; i++)
		if (sinks[i].kind != SINK_STDERR && atomic_load(&sinks[i].fd) < 0)
			sink_first_open(&sinks[i]);
	errno = saved;
}

/*
 * One record, one write(): O_APPEND makes each land whole after the others.
 * Nothing is ever taken back (a truncate would cut other writers' records):
 * after a write that stopped inside a record (a full disk) the next record
 * starts with a newline, so the piece stays a line of its own that readers
 * skip. A failure is reported once per destination, never to the program,
 * and raises no signal in it.
 */
void sink_write(unsigned i, const char *buf, size_t len)
{
	struct sink *s = &sinks[i];
	char msg[TW_RECORD_MAX + 64];
	bool partial;
	ssize_t n;
	int fd, saved = errno;

	if (i >= nsinks)
		return;
	atomic_fetch_add(&s->writers, 1);
	fd = atomic_load(&s->fd);
	if (fd < 0 && s->kind != SINK_STDERR) {
		fd = sink_first_open(s);
		if (fd < 0)
			goto out;
	} else if (check_due(s)) {
		fd = sink_check(s, fd);
		if (fd < 0)
			goto out;
	}
	partial = atomic_load(&s->partial);
	if (s->kind == SINK_SYSLOG) {
		len = syslog_frame(msg, sizeof(msg), buf, len);
		n = send(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	} else if (s->kind == SINK_STDERR) {
		if (!diag_stderr_same())
			goto out;	/* fd 2 is no longer the stderr of start-up */
		n = write_nosig(fd, buf, len, SIGPIPE);
	} else {
		if (partial && len < sizeof(msg)) {
			msg[0] = '\n';
			memcpy(msg + 1, buf, len);
			buf = msg;
			len++;
		}
		if (over_fsize(fd, len)) {
			warn_once(s, "cannot write to", "the program's file size limit "
				  "(RLIMIT_FSIZE) is reached");
			goto out;
		}
		if (atomic_load(&s->special))
			n = write_nosig(fd, buf, len, SIGPIPE);
		else if (atomic_load(&fsize_limit) != RLIM_INFINITY)
			n = write_nosig(fd, buf, len, SIGXFSZ);
		else
			do {
				n = write(fd, buf, len);
			} while (n < 0 && errno == EINTR);
	}
	if (n == (ssize_t)len) {
		atomic_store(&s->partial, false);
		atomic_store(&s->warned, false);
		goto out;
	}
	if (n > 0 && s->kind == SINK_FILE)
		atomic_store(&s->partial, true);
	if (n < 0 && errno == EBADF && s->kind == SINK_FILE) {
		/* closed under us with a raw system call: open it again next time */
		int expect = fd;

		if (atomic_compare_exchange_strong(&s->fd, &expect, FD_NONE)) {
			if (fdtab_get(fd) == FDT_LIB)
				fdtab_set(fd, FDT_NONE);
			atomic_store(&s->open_retry, 0);
		}
	}
	warn_once(s, "cannot write to", n < 0 ? strerrordesc_np(errno) : "short write");
out:
	atomic_fetch_sub(&s->writers, 1);
	retire(s);
	errno = saved;
}

/*
 * A forked child writes to its own file when the path names the pid: the
 * parent's is closed here and the child's opened at its first record.
 */
void sink_fork_child(void)
{
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];
		int fd;

		/* the threads whose writes were in flight did not come along */
		atomic_store(&s->writers, 0);
		if (s->kind != SINK_FILE || !strstr(s->name, "%p"))
			continue;
		fd = atomic_exchange(&s->fd, FD_NONE);
		if (fd >= 0)
			libfd_close(fd);
		s->path_err = expand_path(s->path, sizeof(s->path), s->name);
		atomic_store(&s->open_retry, 0);
		atomic_store(&s->partial, false);
	}
}

/* the fds of s: the one written to, and the one a reopen replaced (or -1) */
static void sink_fds(struct sink *s, int fds[2])
{
	uint64_t r = atomic_load(&s->retired);

	fds[0] = atomic_load(&s->fd);
	fds[1] = r == RETIRED_NONE ? FD_NONE : retired_fd(r);
}

int sink_fds_all(int *out, int max)
{
	int n = 0, fds[2];

	for (unsigned i = 0; i < nsinks; i++) {
		sink_fds(&sinks[i], fds);
		for (int k = 0; k < 2; k++)
			if (fds[k] >= 0 && n < max)
				out[n++] = fds[k];
	}
	return n;
}

bool sink_evict(int fd)
{
	for (unsigned i = 0; i < nsinks; i++) {
		struct sink *s = &sinks[i];
		uint64_t old = atomic_load(&s->retired);
		long nfd;

		/* the file replaced at a rotation: the program's dup2 closes it */
		if (old != RETIRED_NONE && retired_fd(old) == fd &&
		    atomic_compare_exchange_strong(&s->retired, &old, RETIRED_NONE)) {
			fdtab_set(fd, FDT_NONE);
			return true;
		}
		if (s->kind == SINK_STDERR || atomic_load(&s->fd) != fd)
			continue;
		nfd = libfd_dup(fd);
		if (nfd >= 0)
			fdtab_set((int)nfd, FDT_LIB);
		atomic_store(&s->fd, nfd >= 0 ? (int)nfd : FD_NONE);
		fdtab_set(fd, FDT_NONE);
		return true;
	}
	return false;
}
