// SPDX-License-Identifier: MIT
/*
 * What `learn` keeps (include/learn.h): one 64-bit word per remote endpoint
 * in a fixed table, hashed by the network namespace (its cookie: never
 * reused, so a namespace made later never inherits what another learned),
 * the address and the port. A word holds a tag of the hash, how many
 * deferred closes in a row met no FIN within defer_ms, and when the last
 * did (seconds of CLOCK_MONOTONIC, the same in every process of the host).
 * Writers race with compare-and-swap; a slot another endpoint takes over
 * only costs what was learned of the first.
 *
 * The table is a file in /dev/shm of the effective user, 0600, mapped
 * shared, so short-lived clients of that user learn from each other. One
 * that cannot be opened safely (another owner, other modes, no /dev/shm)
 * leaves a private table: the process still learns for itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "defaults.h"
#include "learn.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE	71	/* Linux 5.14 */
#endif

#define STAMP_BITS	28
#define STAMP_MASK	((1u << STAMP_BITS) - 1)
#define MISS_MAX	15u

static _Atomic(_Atomic uint64_t *) table;
static _Atomic uint64_t netns;	/* written before table by every thread that races to make it */

/* the network namespace's cookie, or its inode on kernels without cookies */
static uint64_t netns_id(void)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);
	struct stat st;
	long fd = syscall(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd >= 0) {
		if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
			cookie = 0;
		syscall(SYS_close, fd);
	}
	if (!cookie && stat("/proc/self/ns/net", &st) == 0)
		cookie = ((uint64_t)st.st_dev << 32) ^ st.st_ino;
	return cookie;
}

/* the user's shared table, or NULL when it is not safely this user's own */
static void *map_shared(size_t size)
{
	char path[64];
	struct stat st;
	void *p = NULL;
	int fd;

	snprintf(path, sizeof(path), TW_LEARN_PATH, (unsigned)geteuid());
	fd = (int)syscall(SYS_openat, AT_FDCWD, path,
			  O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
	    !(st.st_mode & 077) && ((size_t)st.st_size >= size || ftruncate(fd, (off_t)size) == 0)) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			p = NULL;
	}
	syscall(SYS_close, fd);
	return p;
}

/*
 * At the first connection that may be deferred (not on the close path):
 * the namespace it is made in, and the table. Two threads may race here;
 * the second mapping goes.
 */
int learn_init(void)
{
	size_t size = TW_LEARN_SLOTS * sizeof(uint64_t);
	_Atomic uint64_t *none = NULL;
	void *p;

	if (atomic_load(&table))
		return 0;
	atomic_store_explicit(&netns, netns_id(), memory_order_relaxed);
	p = map_shared(size);
	if (!p) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -errno;
	}
	if (!atomic_compare_exchange_strong(&table, &none, p))
		munmap(p, size);
	return 0;
}

/* 64-bit FNV-1a over the namespace, the address and the port */
static uint64_t hash(const struct tw_addr *a)
{
	uint64_t h = 0xcbf29ce484222325ull;
	uint64_t ns = atomic_load_explicit(&netns, memory_order_relaxed);
	uint8_t b[26];

	memcpy(b, &ns, 8);
	memcpy(b + 8, a->a, 16);
	b[24] = (uint8_t)(a->port >> 8);
	b[25] = (uint8_t)a->port;
	for (size_t i = 0; i < sizeof(b); i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t word(uint32_t tag, uint32_t misses, uint64_t now_ns)
{
	uint32_t stamp = (uint32_t)(now_ns / 1000000000u) & STAMP_MASK;

	return (uint64_t)tag << 32 | misses << STAMP_BITS | stamp;
}

/* the slot of a, or NULL before learn_init() */
static _Atomic uint64_t *slot_of(const struct tw_addr *a, uint32_t *tag)
{
	_Atomic uint64_t *t = atomic_load_explicit(&table, memory_order_acquire);
	uint64_t h;

	if (!t)
		return NULL;
	h = hash(a);
	*tag = (uint32_t)(h >> 32) | 1;	/* never 0: an empty slot */
	return &t[h % TW_LEARN_SLOTS];
}

bool learn_skip(const struct tw_addr *remote, uint64_t now_ns)
{
	_Atomic uint64_t *s;
	uint32_t tag, misses, age;
	uint64_t w;

	s = slot_of(remote, &tag);
	if (!s)
		return false;
	w = atomic_load_explicit(s, memory_order_relaxed);
	misses = (uint32_t)(w >> STAMP_BITS) & MISS_MAX;
	if ((uint32_t)(w >> 32) != tag || misses < TW_LEARN_MISSES)
		return false;
	age = ((uint32_t)(now_ns / 1000000000u) - (uint32_t)w) & STAMP_MASK;
	if (age < TW_LEARN_RETRY_S)
		return true;
	/* time to wait once again: the close that stamps the slot does, the others skip */
	return !atomic_compare_exchange_strong(s, &w, word(tag, misses, now_ns));
}

void learn_note(const struct tw_addr *remote, bool closed, uint64_t now_ns)
{
	_Atomic uint64_t *s;
	uint32_t tag, misses;
	uint64_t w, nw;

	s = slot_of(remote, &tag);
	if (!s)
		return;
	w = atomic_load_explicit(s, memory_order_relaxed);
	do {
		bool mine = (uint32_t)(w >> 32) == tag;

		if (closed) {
			if (!mine)
				return;
			nw = 0;		/* it closes: forget it */
		} else {
			misses = mine ? ((uint32_t)(w >> STAMP_BITS) & MISS_MAX) + 1 : 1;
			nw = word(tag, misses > MISS_MAX ? MISS_MAX : misses, now_ns);
		}
	} while (!atomic_compare_exchange_weak(s, &w, nw));
}
