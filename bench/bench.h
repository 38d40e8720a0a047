/* SPDX-License-Identifier: MIT */
/* What the benchmark programs share: a clock and the loopback address. */
#ifndef TWSHIM_BENCH_H
#define TWSHIM_BENCH_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline struct sockaddr_in loopback(int port)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};

	return sin;
}

#endif
