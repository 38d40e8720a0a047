/* SPDX-License-Identifier: MIT */
/*
 * Decimal digits without stdio or locale, for what runs on the close path or
 * in a signal handler (records, addresses, the log's path). Two digits at a
 * time from a table, in 32-bit arithmetic where the value allows, inline: a
 * record holds some twenty numbers, and their digits were most of its cost.
 */
#ifndef TWSHIM_FMT_H
#define TWSHIM_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* "00" to "99" */
extern const char fmt_digits2[200];

/* Writes the n (at most 10) lowest decimal digits of v, zero-padded, to buf (no NUL). */
static inline void fmt_digits(char *buf, uint32_t v, unsigned n)
{
	char *q = buf + n;

	for (; n >= 2; n -= 2) {
		q -= 2;
		memcpy(q, fmt_digits2 + (v % 100) * 2, 2);
		v /= 100;
	}
	if (n)
		q[-1] = (char)('0' + v % 10);
}

/* Writes v, of n digits (fmt_len32()), to buf: no zero to pad with. */
static inline void fmt_digits_exact(char *buf, uint32_t v, unsigned n)
{
	char *q = buf + n;

	while (v >= 100) {
		q -= 2;
		memcpy(q, fmt_digits2 + (v % 100) * 2, 2);
		v /= 100;
	}
	if (v >= 10)
		memcpy(q - 2, fmt_digits2 + v * 2, 2);
	else
		q[-1] = (char)('0' + v);
}

/* the number of decimal digits of v (1 for 0): from its bit length, then one comparison */
static inline unsigned fmt_len32(uint32_t v)
{
	static const uint32_t pow10[] = {
		1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
	};
	/* 1233 / 4096 ~ log10(2): the digits of 2^bits - 1, or one more */
	unsigned n = (unsigned)(32 - __builtin_clz(v | 1)) * 1233 >> 12;

	return n + (v >= pow10[n]);
}

/* fmt_u64() above UINT32_MAX */
size_t fmt_u64_big(char *buf, uint64_t v);

/* Writes v in decimal to buf (20 bytes at most, no NUL); returns the length. */
static inline size_t fmt_u64(char *buf, uint64_t v)
{
	unsigned n;

	if (v < 10) {
		buf[0] = (char)('0' + v);
		return 1;
	}
	if (v > UINT32_MAX)
		return fmt_u64_big(buf, v);
	n = fmt_len32((uint32_t)v);
	fmt_digits_exact(buf, (uint32_t)v, n);
	return n;
}

#endif
