// SPDX-License-Identifier: MIT
/* Decimal digits (fmt.h): the table, and numbers above 32 bits. */
#include "fmt.h"

const char fmt_digits2[200] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

/* the ten lowest digits in 32-bit pieces, what is above them first */
size_t fmt_u64_big(char *buf, uint64_t v)
{
	const uint64_t e10 = 10000000000ull;
	/* v > UINT32_MAX: ten digits at least */
	size_t n = v >= e10 ? fmt_u64(buf, v / e10) : 0;

	v %= e10;
	fmt_digits(buf + n, (uint32_t)(v / 100000), 5);
	fmt_digits(buf + n + 5, (uint32_t)(v % 100000), 5);
	return n + 10;
}
