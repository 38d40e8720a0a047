// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the config file loader. The input is written to a memfd
 * and loaded by its /proc path; a config that loads is then resolved for a
 * few connections of both families and both roles, and redrawn.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;
static char path[64];

static void resolve_some(const struct conf *c)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	struct tw_policy p;
	unsigned i;

	inet_pton(AF_INET, "198.18.1.2", &s4.sin_addr);
	inet_pton(AF_INET6, "2001:db8:1::1", &s6.sin6_addr);
	for (i = 0; i < 4; i++) {
		conf_resolve(c, i & 1 ? TW_ROLE_SERVER : TW_ROLE_CLIENT,
			     i & 2 ? (struct sockaddr *)&s6 : (struct sockaddr *)&s4,
			     i & 2 ? sizeof(s6) : sizeof(s4), (uint16_t)(80 + i),
			     (uint64_t)i * 0x9e3779b97f4a7c15ull, &p);
		if (p.sink != TW_SINK_NONE && !conf_sink(c, p.sink))
			abort();
		if (p.arm && !conf_arm_name(c, p.arm))
			abort();
		if (p.close > TW_CLOSE_ABORT || p.fallback > TW_FALLBACK_ABORT)
			abort();
	}
	conf_resolve(c, TW_ROLE_CLIENT, NULL, 0, 443, 1, &p);
	(void)conf_tracking(c);
	(void)conf_reuseaddr(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_source src = { .comm = "nginx", .file = path };
	struct conf *c;
	char err[512];
	int ret;

	/*
	 * @include reaches the file system (stdin through /proc/self/fd/0,
	 * /dev/zero): not the parser under test.
	 */
	if (memmem(data, size, "include", 7))
		return 0;
	if (memfd < 0) {
		memfd = memfd_create("twshim-fuzz", MFD_CLOEXEC);
		if (memfd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) || pwrite(memfd, data, size, 0) != (ssize_t)size)
		abort();
	ret = conf_load(&c, &src, err, sizeof(err));
	if (ret) {
		if (c || !err[0] || strchr(err, '\n'))
			abort();
		return 0;
	}
	resolve_some(c);
	conf_reseed(c, (uint64_t)size);
	resolve_some(c);
	conf_free(c);
	return 0;
}
