// SPDX-License-Identifier: MIT
/* Endpoint text as the close records and the tool print it. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include <criterion/criterion.h>

#include "addr.h"

/* Parses text with inet_pton (either family) and formats it back with addr_format. */
static const char *roundtrip(const char *text, uint16_t port, char *buf)
{
	struct sockaddr_storage ss;
	struct tw_addr a;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1, "%s", text);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1, "%s", text);
		len = sizeof(*sin);
	}
	cr_assert_eq(addr_from_sockaddr(&a, (struct sockaddr *)&ss, len), 0);
	cr_assert_eq(a.port, port);
	cr_assert_eq(addr_format(buf, &a), strlen(buf));
	return buf;
}

#define CHECK_TEXT(in, port, want)						\
	do {									\
		char buf_[TW_ADDR_STRLEN];					\
		cr_expect_str_eq(roundtrip(in, port, buf_), want, "input %s", in); \
	} while (0)

Test(addr, ipv4_dotted_with_port)
{
	CHECK_TEXT("127.0.0.1", 80, "127.0.0.1:80");
	CHECK_TEXT("0.0.0.0", 0, "0.0.0.0:0");
	CHECK_TEXT("255.255.255.255", 65535, "255.255.255.255:65535");
	CHECK_TEXT("10.20.30.4", 443, "10.20.30.4:443");
}

Test(addr, ipv4_is_kept_mapped)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(8080) };
	static const uint8_t want[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
					  192, 0, 2, 7 };
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	struct tw_addr a;

	inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
	cr_assert_eq(addr_from_sockaddr(&a, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_expect_arr_eq(a.a, want, 16);
	cr_expect(addr_is_v4(&a));
	cr_expect_eq(addr_to_sockaddr6(&a, &ss), sizeof(struct sockaddr_in6));
	cr_expect_eq(sin6->sin6_family, AF_INET6);
	cr_expect_eq(ntohs(sin6->sin6_port), 8080);
	cr_expect_arr_eq(&sin6->sin6_addr, want, 16);
}

Test(addr, mapped_ipv6_prints_as_ipv4)
{
	CHECK_TEXT("::ffff:127.0.0.1", 5000, "127.0.0.1:5000");
	CHECK_TEXT("::ffff:198.51.100.200", 1, "198.51.100.200:1");
}

Test(addr, ipv6_bracketed_lowercase_no_leading_zeros)
{
	CHECK_TEXT("2001:DB8:0:0:0:0:0:1", 80, "[2001:db8::1]:80");
	CHECK_TEXT("2001:0db8:00aa:0bbb:0ccc:0ddd:0eee:0fff", 1,
		   "[2001:db8:aa:bbb:ccc:ddd:eee:fff]:1");
	CHECK_TEXT("::1", 443, "[::1]:443");
	CHECK_TEXT("::", 0, "[::]:0");
	CHECK_TEXT("fe80::", 22, "[fe80::]:22");
}

Test(addr, ipv6_compresses_longest_zero_run)
{
	/* RFC 5952 4.2.3: the longest run, the first one on a tie */
	CHECK_TEXT("2001:db8:0:0:1:0:0:0", 1, "[2001:db8:0:0:1::]:1");
	CHECK_TEXT("2001:0:0:1:0:0:0:1", 1, "[2001:0:0:1::1]:1");
	CHECK_TEXT("2001:db8:0:0:1:0:0:1", 1, "[2001:db8::1:0:0:1]:1");
	CHECK_TEXT("0:0:1:0:0:0:0:0", 9, "[0:0:1::]:9");
}

Test(addr, ipv6_single_zero_group_not_compressed)
{
	/* RFC 5952 4.2.2 */
	CHECK_TEXT("2001:db8:0:1:1:1:1:1", 80, "[2001:db8:0:1:1:1:1:1]:80");
	CHECK_TEXT("0:1:2:3:4:5:6:7", 80, "[0:1:2:3:4:5:6:7]:80");
	CHECK_TEXT("1:2:3:4:5:6:7:0", 80, "[1:2:3:4:5:6:7:0]:80");
}

Test(addr, ipv6_longest_text_fits)
{
	char buf[TW_ADDR_STRLEN];
	const char *out;

	out = roundtrip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, buf);
	cr_expect_str_eq(out, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535");
	cr_expect_lt(strlen(out), TW_ADDR_STRLEN);
}

Test(addr, formats_like_inet_ntop_for_many_addresses)
{
	/* every pattern of zero and non-zero groups, checked against glibc */
	unsigned mask;

	for (mask = 0; mask < 256; mask++) {
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(7) };
		char want[INET6_ADDRSTRLEN + 16], text[INET6_ADDRSTRLEN], buf[TW_ADDR_STRLEN];
		struct tw_addr a;
		int g;

		for (g = 0; g < 8; g++)
			if (mask & (1u << g))
				sin6.sin6_addr.s6_addr[2 * g + 1] = (uint8_t)(g + 0xa0);
		cr_assert_eq(addr_from_sockaddr(&a, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
		if (addr_is_v4(&a))
			continue;
		inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof(text));
		/* glibc writes ::a.b.c.d for the old IPv4-compatible form; RFC 5952 does not */
		if (strchr(text, '.'))
			continue;
		snprintf(want, sizeof(want), "[%s]:7", text);
		addr_format(buf, &a);
		cr_expect_str_eq(buf, want, "mask %#x", mask);
	}
}

Test(addr, rejects_other_families_and_short_lengths)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct tw_addr a;

	cr_expect_eq(addr_from_sockaddr(&a, (struct sockaddr *)&sun, sizeof(sun)), -EAFNOSUPPORT);
	cr_expect_eq(addr_from_sockaddr(&a, (struct sockaddr *)&sin, 4), -EINVAL);
	cr_expect_eq(addr_from_sockaddr(&a, NULL, 0), -EINVAL);
}
