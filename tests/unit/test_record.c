// SPDX-License-Identifier: MIT
/* The close record: valid JSON whatever the input, the fields the contract names. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "config.h"
#include "defaults.h"
#include "record.h"

static struct tw_record sample(void)
{
	struct tw_record r = {
		.ts_us = 1795967707577390ull,
		.pid = 4242,
		.comm = "curl",
		.role = TW_ROLE_CLIENT,
		.policy = TW_CLOSE_DEFER,
		.state = TW_ESTABLISHED,
		.end = TW_END_PASSIVE,
		.via = TW_VIA_CLOSE,
		.deferred = true,
		.dur_us = 7670,
		.deferred_us = 350,
		.bytes_acked = 4,
		.bytes_received = 6,
		.fd = 3,
	};
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(40070) };
	struct sockaddr_in b = { .sin_family = AF_INET, .sin_port = htons(9000) };

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	inet_pton(AF_INET, "10.1.2.3", &b.sin_addr);
	addr_from_sockaddr(&r.local, (struct sockaddr *)&a, sizeof(a));
	addr_from_sockaddr(&r.remote, (struct sockaddr *)&b, sizeof(b));
	return r;
}

/* formats r, checks it is one line of valid JSON, returns the object */
static json_t *format_parse(const struct tw_record *r)
{
	char buf[TW_RECORD_MAX];
	size_t n = record_format(buf, sizeof(buf), r);
	json_error_t err;
	json_t *j;

	cr_assert_gt(n, 0, "record did not fit");
	cr_assert_eq(buf[n - 1], '\n', "a record ends with a newline");
	cr_assert_null(memchr(buf, '\n', n - 1), "a record is one line");
	j = json_loadb(buf, n, 0, &err);
	cr_assert_not_null(j, "not JSON (%s): %.*s", err.text, (int)n, buf);
	return j;
}

static const char *str(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);

	cr_assert(json_is_string(v), "field %s is not a string", k);
	return json_string_value(v);
}

Test(record, has_every_field_of_the_contract)
{
	struct tw_record r = sample();
	json_t *j = format_parse(&r);

	cr_assert_float_eq(json_real_value(json_object_get(j, "ts")), 1795967707.577390, 1e-6);
	cr_assert_eq(json_integer_value(json_object_get(j, "pid")), 4242);
	cr_assert_str_eq(str(j, "comm"), "curl");
	cr_assert_str_eq(str(j, "role"), "client");
	cr_assert_str_eq(str(j, "local"), "127.0.0.1:40070");
	cr_assert_str_eq(str(j, "remote"), "10.1.2.3:9000");
	cr_assert_str_eq(str(j, "policy"), "defer");
	cr_assert_str_eq(str(j, "state"), "ESTABLISHED");
	cr_assert_str_eq(str(j, "end"), "passive");
	cr_assert_str_eq(str(j, "tw"), "peer");
	cr_assert_str_eq(str(j, "via"), "close");
	cr_assert_float_eq(json_number_value(json_object_get(j, "dur_ms")), 7.670, 1e-9);
	cr_assert_float_eq(json_number_value(json_object_get(j, "deferred_ms")), 0.350, 1e-9);
	cr_assert_eq(json_integer_value(json_object_get(j, "bytes_acked")), 4);
	cr_assert_eq(json_integer_value(json_object_get(j, "bytes_received")), 6);
	cr_assert_eq(json_integer_value(json_object_get(j, "fd")), 3);
	cr_assert_null(json_object_get(j, "arm"), "no arm without a split");
	cr_assert_null(json_object_get(j, "timeout"), "timeout only when true");
	cr_assert_null(json_object_get(j, "why"));
	json_decref(j);
}

Test(record, optional_fields_appear_when_set)
{
	struct tw_record r = sample();
	json_t *j;

	r.arm = "control";
	r.timeout = true;
	r.why = "shared";
	r.deferred = false;
	r.role = TW_ROLE_SERVER;
	j = format_parse(&r);
	cr_assert_str_eq(str(j, "arm"), "control");
	cr_assert(json_is_true(json_object_get(j, "timeout")));
	cr_assert_str_eq(str(j, "why"), "shared");
	cr_assert_str_eq(str(j, "role"), "server");
	cr_assert_null(json_object_get(j, "deferred_ms"), "deferred_ms only for defer/abort");
	json_decref(j);
}

Test(record, ipv6_addresses_in_brackets)
{
	struct tw_record r = sample();
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(443) };
	json_t *j;

	inet_pton(AF_INET6, "2001:db8::1", &a.sin6_addr);
	addr_from_sockaddr(&r.remote, (struct sockaddr *)&a, sizeof(a));
	j = format_parse(&r);
	cr_assert_str_eq(str(j, "remote"), "[2001:db8::1]:443");
	json_decref(j);
}

/* Process names are whatever a program calls itself: quotes, escapes, bytes. */
Test(record, hostile_process_names_stay_valid_json)
{
	static const struct {
		const char *comm, *want;
	} cases[] = {
		{ "a\"b", "a\"b" },
		{ "back\\slash", "back\\slash" },
		{ "tab\there\nnl\r\x01\x1f\x7f", "tab\there\nnl\r\x01\x1f\x7f" },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
		{ "bad\xff\xfe", "bad\xef\xbf\xbd\xef\xbf\xbd" },
		{ "cut\xe2\x82", "cut\xef\xbf\xbd\xef\xbf\xbd" },
		{ "overlong\xc0\xaf", "overlong\xef\xbf\xbd\xef\xbf\xbd" },
		{ "surrogate\xed\xa0\x80", "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "", "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tw_record r = sample();
		json_t *j;

		r.comm = cases[i].comm;
		j = format_parse(&r);
		cr_assert_str_eq(str(j, "comm"), cases[i].want, "case %zu", i);
		json_decref(j);
	}
}

Test(record, longest_name_fits_and_a_short_buffer_gives_zero)
{
	char name[TW_COMM_MAX + 1], buf[TW_RECORD_MAX];
	struct tw_record r = sample();

	memset(name, '"', TW_COMM_MAX);
	name[TW_COMM_MAX] = 0;
	r.comm = name;
	r.arm = "an-arm-with-a-long-name-of-some-length";
	r.why = "no_closer";
	r.timeout = true;
	json_decref(format_parse(&r));
	cr_assert_eq(record_format(buf, 40, &r), 0, "a record that does not fit is not cut");
}

/* Who sent the first FIN, from the state the program's close met. */
Test(record, classify_by_state)
{
	cr_assert_eq(record_classify(TW_ESTABLISHED), TW_END_ACTIVE);
	cr_assert_eq(record_classify(TW_FIN_WAIT1), TW_END_ACTIVE);
	cr_assert_eq(record_classify(TW_FIN_WAIT2), TW_END_ACTIVE);
	cr_assert_eq(record_classify(TW_CLOSING), TW_END_ACTIVE);
	cr_assert_eq(record_classify(TW_CLOSE_WAIT), TW_END_PASSIVE);
	cr_assert_eq(record_classify(TW_LAST_ACK), TW_END_PASSIVE);
	cr_assert_eq(record_classify(TW_CLOSE), TW_END_RESET);
	cr_assert_eq(record_classify(TW_SYN_SENT), TW_END_RESET);
	cr_assert_eq(record_classify(0), TW_END_RESET);
	cr_assert_eq(record_where(TW_END_ACTIVE), TW_TW_LOCAL);
	cr_assert_eq(record_where(TW_END_PASSIVE), TW_TW_PEER);
	cr_assert_eq(record_where(TW_END_ABORT), TW_TW_NONE);
	cr_assert_eq(record_where(TW_END_RESET), TW_TW_NONE);
	cr_assert_str_eq(record_state_name(TW_CLOSE_WAIT), "CLOSE_WAIT");
	cr_assert_str_eq(record_state_name(99), "UNKNOWN");
	cr_assert_str_eq(record_via_name(TW_VIA_CLOSE_RANGE), "close_range");
	cr_assert_str_eq(record_via_name(TW_VIA_EXIT), "exit");
}

/* formats r into a NUL-terminated string; the line must fit */
static const char *line_of(const struct tw_record *r, char *buf, size_t size)
{
	size_t n = record_format(buf, size - 1, r);

	cr_assert_gt(n, 0, "record did not fit");
	buf[n] = '\0';
	return buf;
}

/* The bytes themselves, not only what a JSON parser makes of them. */
Test(record, exact_line)
{
	struct tw_record r = sample();
	char buf[TW_RECORD_MAX + 1];

	cr_assert_str_eq(line_of(&r, buf, sizeof(buf)),
			 "{\"ts\":1795967707.577390,\"pid\":4242,\"comm\":\"curl\",\"role\":\"client\","
			 "\"local\":\"127.0.0.1:40070\",\"remote\":\"10.1.2.3:9000\",\"policy\":\"defer\","
			 "\"state\":\"ESTABLISHED\",\"end\":\"passive\",\"tw\":\"peer\",\"via\":\"close\","
			 "\"dur_ms\":7.670,\"deferred_ms\":0.350,\"bytes_acked\":4,\"bytes_received\":6,"
			 "\"fd\":3}\n");
	r.arm = "b";
	r.timeout = true;
	r.why = "no_closer";
	r.role = TW_ROLE_SERVER;
	r.policy = TW_CLOSE_ABORT;
	r.state = TW_CLOSE_WAIT;
	r.end = TW_END_ABORT;
	r.via = TW_VIA_CLOSE_RANGE;
	cr_assert_str_eq(line_of(&r, buf, sizeof(buf)),
			 "{\"ts\":1795967707.577390,\"pid\":4242,\"comm\":\"curl\",\"role\":\"server\","
			 "\"local\":\"127.0.0.1:40070\",\"remote\":\"10.1.2.3:9000\",\"policy\":\"abort\","
			 "\"arm\":\"b\",\"state\":\"CLOSE_WAIT\",\"end\":\"abort\",\"tw\":\"none\","
			 "\"via\":\"close_range\",\"dur_ms\":7.670,\"deferred_ms\":0.350,\"timeout\":true,"
			 "\"why\":\"no_closer\",\"bytes_acked\":4,\"bytes_received\":6,\"fd\":3}\n");
}

/* The digits after the point keep their leading zeros; the part before has none. */
Test(record, fractions_keep_leading_zeros)
{
	struct tw_record r = sample();
	char buf[TW_RECORD_MAX + 1];

	r.ts_us = 1000000000000001ull;
	r.dur_us = 5;
	r.deferred_us = 0;
	line_of(&r, buf, sizeof(buf));
	cr_assert(strstr(buf, "{\"ts\":1000000000.000001,"), "%s", buf);
	cr_assert(strstr(buf, ",\"dur_ms\":0.005,\"deferred_ms\":0.000,"), "%s", buf);
	r.ts_us = 999999;
	r.dur_us = 1234567;
	r.deferred_us = 60000;
	line_of(&r, buf, sizeof(buf));
	cr_assert(strstr(buf, "{\"ts\":0.999999,"), "%s", buf);
	cr_assert(strstr(buf, ",\"dur_ms\":1234.567,\"deferred_ms\":60.000,"), "%s", buf);
}

Test(record, largest_numbers)
{
	struct tw_record r = sample();
	char buf[TW_RECORD_MAX + 1];

	r.ts_us = UINT64_MAX;
	r.pid = 2147483647;
	r.dur_us = 4294967296000ull;
	r.deferred_us = 9999999999ull;
	r.bytes_acked = UINT64_MAX;
	r.bytes_received = 4294967296ull;
	r.fd = -2147483647 - 1;
	line_of(&r, buf, sizeof(buf));
	cr_assert(strstr(buf, "{\"ts\":18446744073709.551615,\"pid\":2147483647,"), "%s", buf);
	cr_assert(strstr(buf, ",\"dur_ms\":4294967296.000,\"deferred_ms\":9999999.999,"), "%s", buf);
	cr_assert(strstr(buf, ",\"bytes_acked\":18446744073709551615,\"bytes_received\":4294967296,"
			 "\"fd\":-2147483648}\n"), "%s", buf);
	r.fd = -1;
	line_of(&r, buf, sizeof(buf));
	cr_assert(strstr(buf, ",\"fd\":-1}\n"), "%s", buf);
}

/* every power of ten and its neighbours, against printf */
Test(record, decimal_digits_at_every_length)
{
	char buf[24], want[24];

	for (uint64_t p = 1;; p *= 10) {
		for (uint64_t v = p - 1; v <= p + 1; v++) {
			size_t n = fmt_u64(buf, v);

			buf[n] = '\0';
			snprintf(want, sizeof(want), "%llu", (unsigned long long)v);
			cr_assert_str_eq(buf, want);
		}
		if (p > UINT64_MAX / 10)
			break;
	}
	buf[fmt_u64(buf, UINT64_MAX)] = '\0';
	cr_assert_str_eq(buf, "18446744073709551615");
	buf[fmt_u64(buf, (uint64_t)UINT32_MAX + 1)] = '\0';
	cr_assert_str_eq(buf, "4294967296");
}

/* RFC 5952 text inside the record, brackets and port included */
Test(record, ipv6_endpoints_exact)
{
	static const struct {
		const char *addr, *want;
		uint16_t port;
	} cases[] = {
		{ "::1", "\"[::1]:1\"", 1 },
		{ "::", "\"[::]:0\"", 0 },
		{ "1::", "\"[1::]:65535\"", 65535 },
		{ "2001:db8:0:0:1:0:0:1", "\"[2001:db8::1:0:0:1]:80\"", 80 },
		{ "2001:db8:0:1:1:1:1:1", "\"[2001:db8:0:1:1:1:1:1]:443\"", 443 },
		{ "fe80::abcd:ef01:0:1", "\"[fe80::abcd:ef01:0:1]:9000\"", 9000 },
		{ "::ffff:192.0.2.255", "\"192.0.2.255:8080\"", 8080 },
		{ "::ffff:0.0.0.0", "\"0.0.0.0:10\"", 10 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tw_record r = sample();
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(cases[i].port) };
		char buf[TW_RECORD_MAX + 1], want[128];

		cr_assert_eq(inet_pton(AF_INET6, cases[i].addr, &a.sin6_addr), 1);
		addr_from_sockaddr(&r.local, (struct sockaddr *)&a, sizeof(a));
		line_of(&r, buf, sizeof(buf));
		snprintf(want, sizeof(want), ",\"local\":%s,\"remote\":", cases[i].want);
		cr_assert(strstr(buf, want), "%s: %s", cases[i].addr, buf);
	}
}

/* Escapes as bytes: \" \\ \u00XX for control bytes and DEL, \ufffd for what is not UTF-8. */
Test(record, hostile_process_names_exact_escapes)
{
	static const struct {
		const char *comm, *want;
	} cases[] = {
		{ "a\"b\\c", "\"a\\\"b\\\\c\"" },
		{ "\x01\x1f\x7f\t\n", "\"\\u0001\\u001f\\u007f\\u0009\\u000a\"" },
		{ "x\xff" "y\xc0\xaf", "\"x\\ufffdy\\ufffd\\ufffd\"" },
		{ "\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" },
		{ "\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\x80\\\"\"" },
		{ "}\n{\"ts\":1", "\"}\\u000a{\\\"ts\\\":1\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tw_record r = sample();
		char buf[TW_RECORD_MAX + 1], want[128];

		r.comm = cases[i].comm;
		line_of(&r, buf, sizeof(buf));
		snprintf(want, sizeof(want), ",\"comm\":%s,\"role\":", cases[i].want);
		cr_assert(strstr(buf, want), "case %zu: %s", i, buf);
	}
}

/* A buffer of any length gets the whole line or nothing: never a cut one. */
Test(record, whole_line_or_nothing_at_every_length)
{
	struct tw_record r = sample();
	char full[TW_RECORD_MAX], buf[TW_RECORD_MAX];
	size_t n;

	r.arm = "arm";
	r.why = "shared";
	r.timeout = true;
	r.comm = "a\"\x01\xff";
	n = record_format(full, sizeof(full), &r);
	cr_assert_gt(n, 0);
	for (size_t len = 0; len <= n + 1; len++) {
		size_t got = record_format(buf, len, &r);

		if (len < n) {
			cr_assert_eq(got, 0, "length %zu: %zu bytes of %zu", len, got, n);
		} else {
			cr_assert_eq(got, n, "length %zu", len);
			cr_assert_arr_eq(buf, full, n);
		}
	}
}
