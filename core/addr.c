// SPDX-License-Identifier: MIT
/*
 * Endpoints of TCP connections: IPv4 is kept as IPv4-mapped IPv6 so that one
 * memcmp() compares any two endpoints, whatever family the socket had.
 *
 * addr_format() runs on the library's close path, possibly inside a signal
 * handler, so it uses neither stdio nor inet_ntop() (which may consult the
 * locale) and writes digits by hand.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "addr.h"
#include "fmt.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

int addr_from_sockaddr(struct tw_addr *out, const struct sockaddr *sa, socklen_t len)
{
	if (!sa || len < sizeof(sa_family_t))
		return -EINVAL;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (len < sizeof(*sin))
			return -EINVAL;
		memcpy(out->a, v4_mapped_prefix, sizeof(v4_mapped_prefix));
		memcpy(out->a + 12, &sin->sin_addr, 4);
		out->port = ntohs(sin->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		if (len < sizeof(*sin6))
			return -EINVAL;
		memcpy(out->a, &sin6->sin6_addr, 16);
		out->port = ntohs(sin6->sin6_port);
		return 0;
	}
	return -EAFNOSUPPORT;
}

int addr_of_fd(struct tw_addr *out, int fd, bool peer)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct tw_addr t;
	int r;

	if (syscall(peer ? SYS_getpeername : SYS_getsockname, fd, (struct sockaddr *)&ss, &sl) < 0)
		return -errno;
	r = addr_from_sockaddr(&t, (struct sockaddr *)&ss, sl);
	if (r == 0)
		*out = t;
	return r;
}

socklen_t addr_to_sockaddr6(const struct tw_addr *a, struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(a->port);
	memcpy(&sin6->sin6_addr, a->a, 16);
	return sizeof(*sin6);
}

bool addr_is_v4(const struct tw_addr *a)
{
	return memcmp(a->a, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

/* the decimal text of every byte value: one 4-byte move and an add for each */
struct octet {
	char s[3];
	uint8_t len;
};

#define O(str)		{ str, sizeof(str) - 1 }
#define O10(p)		O(p "0"), O(p "1"), O(p "2"), O(p "3"), O(p "4"), O(p "5"), O(p "6"), \
			O(p "7"), O(p "8"), O(p "9")

static const struct octet octets[256] = {
	O10(""), O10("1"), O10("2"), O10("3"), O10("4"), O10("5"), O10("6"), O10("7"), O10("8"),
	O10("9"), O10("10"), O10("11"), O10("12"), O10("13"), O10("14"), O10("15"), O10("16"),
	O10("17"), O10("18"), O10("19"), O10("20"), O10("21"), O10("22"), O10("23"), O10("24"),
	O("250"), O("251"), O("252"), O("253"), O("254"), O("255"),
};

/* Writes a byte in decimal at p, and one byte more; returns the number of digits. */
static inline size_t put_octet(char *p, uint8_t v)
{
	memcpy(p, &octets[v], sizeof(octets[v]));
	return octets[v].len;
}

/* Writes v in lower-case hex without leading zeros (RFC 5952 4.1, 4.3). */
static size_t put_hex16(char *p, unsigned v)
{
	static const char digits[] = "0123456789abcdef";
	size_t n = 0;
	int shift;
	bool started = false;

	for (shift = 12; shift >= 0; shift -= 4) {
		unsigned d = (v >> shift) & 0xf;

		if (d || started || shift == 0) {
			p[n++] = digits[d];
			started = true;
		}
	}
	return n;
}

/*
 * RFC 5952 text of a 16-byte address: the longest run of two or more zero
 * groups becomes "::" (the first such run on a tie, 4.2.3); a single zero
 * group stays "0" (4.2.2).
 */
/* out of line: the IPv4 path in addr_format() stays a leaf without its registers */
static __attribute__((noinline)) size_t put_ipv6(char *p, const uint8_t *a)
{
	unsigned g[8];
	int best = -1, best_len = 0, run = -1, run_len = 0, i;
	size_t n = 0;

	for (i = 0; i < 8; i++)
		g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	for (i = 0; i < 8; i++) {
		if (g[i] == 0) {
			if (run < 0) {
				run = i;
				run_len = 0;
			}
			run_len++;
			if (run_len > best_len) {
				best = run;
				best_len = run_len;
			}
		} else {
			run = -1;
		}
	}
	if (best_len < 2)
		best = -1;
	for (i = 0; i < 8; i++) {
		if (i == best) {
			p[n++] = ':';
			p[n++] = ':';
			i += best_len - 1;
			continue;
		}
		if (i > 0 && i != best + best_len)
			p[n++] = ':';
		n += put_hex16(p + n, g[i]);
	}
	return n;
}

size_t addr_format(char *buf, const struct tw_addr *a)
{
	size_t n = 0;
	int i;

	if (addr_is_v4(a)) {
		for (i = 12; i < 15; i++) {
			n += put_octet(buf + n, a->a[i]);
			buf[n++] = '.';
		}
		n += put_octet(buf + n, a->a[15]);
		buf[n++] = ':';
	} else {
		buf[n++] = '[';
		n += put_ipv6(buf + n, a->a);
		buf[n++] = ']';
		buf[n++] = ':';
	}
	n += fmt_u64(buf + n, a->port);
	buf[n] = '\0';
	return n;
}
