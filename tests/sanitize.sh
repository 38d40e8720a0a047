#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The test suite under a sanitizer: tests/sanitize.sh asan|ubsan|tsan
# (make asan, make ubsan, make tsan).
#
#   asan   AddressSanitizer (and LeakSanitizer): the whole suite
#   ubsan  UndefinedBehaviorSanitizer: the whole suite
#   tsan   ThreadSanitizer: the tests that run threads over the library
#
# Everything is built in a directory of its own (build-asan/ ...) with
# -O1 -g and the sanitizer, the library, the tool, the examples, the helper
# programs of tests/programs/ and both test binaries included. The
# integration tests preload the sanitizer's runtime before the library
# (TWSHIM_TEST_PRELOAD): ASan and TSan must be the first library loaded,
# even into programs that were not built with them (nginx, curl, python).
#
# Every process writes its reports to $B/reports/ (log_path), so a report
# from a program that a test started in the background counts as much as
# one from the test itself. The run fails on any failed test and on any
# report.
#
# Environment: CC (cc), B (build-KIND), JOBS (2), FILTER (a Criterion
# --filter for the integration tests, replacing the default of the kind).
set -eu
cd "$(dirname "$0")/.."

kind=${1:-}
CC=${CC:-cc}
JOBS=${JOBS:-2}
case "$kind" in
asan)
	san="-fsanitize=address -fno-omit-frame-pointer"
	rt=libasan.so
	filter=${FILTER:-}
	;;
ubsan)
	san="-fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
	rt=libubsan.so
	filter=${FILTER:-}
	;;
tsan)
	san="-fsanitize=thread"
	rt=libtsan.so
	# the tests where threads meet the library: the stress suite, the
	# threaded record tests, the counters and the closer under a busy
	# program; the rest is single-threaded and costs time
	filter=${FILTER:-"@(stress|records|stats|closer)/*"}
	;;
*)
	echo "usage: $0 asan|ubsan|tsan" >&2
	exit 2
	;;
esac

B=${B:-build-$kind}
reports=$B/reports
preload=$($CC -print-file-name=$rt)
case "$preload" in
/*) ;;
*)
	echo "$0: $CC has no $rt (install the compiler's sanitizer runtime)" >&2
	exit 1
	;;
esac

./scripts/deps
runner=$B
if [ "$kind" = tsan ]; then
	# Criterion's test runner cannot start under TSan (its inheritable
	# arena wants memory TSan reserves): the test binaries are built
	# plainly in $B/runner; the library, the tool and the programs they
	# start, where the threads are, are built with TSan.
	runner=$B/runner
	make -j"$JOBS" B="$B" SAN="$san" OPT="-O1 -g" all
	make -j"$JOBS" B="$runner" OPT="-O1 -g" "$runner/tests/integration"
else
	make -j"$JOBS" B="$B" SAN="$san" OPT="-O1 -g" all "$B/tests/unit" "$B/tests/integration"
fi

# helper programs of the integration tests, built like everything else
mkdir -p "$B/programs"
for src in tests/programs/*.c; do
	[ -e "$src" ] || continue
	name=$(basename "$src" .c)
	$CC -std=gnu11 -D_GNU_SOURCE -O1 -g $san -o "$B/programs/$name" "$src" -lpthread
done

rm -rf "$reports"
mkdir -p "$reports"
abs_reports=$(cd "$reports" && pwd)
abs_b=$(cd "$B" && pwd)

# Reports go to files named after each process; nothing may be found there.
# Programs the tests start inherit all of this.
#
# LeakSanitizer stays on for every program, but the test binaries keep what
# the lab allocates until they exit by design, so leaks whose stack runs
# through them are suppressed (full unwinding makes every such stack reach
# the test binary), as are libconfig's known parser leak (tests/fuzz/lsan.supp)
# and those of the Debian programs the tests run (python3, nginx, ...): a
# leak of the library shows in the tree's own programs (examples, helpers).
#
# verify_asan_link_order=0: `twshim run` and `twshim ab` preload the library
# without the ASan runtime in front of it (TWSHIM_TEST_PRELOAD is the lab's,
# not the tool's); the programs they start still run, with the library's own
# code checked and only their allocations left uninstrumented.
supp=$abs_b/lsan.supp
{
	cat tests/fuzz/lsan.supp
	echo "leak:/tests/integration"
	echo "leak:/tests/unit"
	# the Debian programs the integration tests preload the library into
	# free what they like at exit; their leaks are theirs
	for m in /usr/bin/python3 libpython3 /usr/sbin/nginx /usr/bin/redis- /usr/bin/curl \
		libcurl.so /bin/sh /usr/bin/dash /usr/bin/bash; do
		echo "leak:$m"
	done
	# a child forked while another thread was starting inherits that
	# thread's start-up state half made ("Running thread ... was not
	# suspended. False leaks are possible"): ASan's own, not a leak
	echo "leak:__asan::AsanThread::ThreadStart"
} > "$supp"
export ASAN_OPTIONS="log_path=$abs_reports/asan:detect_leaks=1:exitcode=99:verify_asan_link_order=0:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$supp:print_suppressions=0"
export UBSAN_OPTIONS="log_path=$abs_reports/ubsan:print_stacktrace=1:halt_on_error=1:exitcode=99"
export TSAN_OPTIONS="log_path=$abs_reports/tsan:halt_on_error=0:exitcode=99:second_deadlock_stack=1"

status=0
if [ "$kind" != tsan ]; then
	"$runner/tests/unit" --jobs="$JOBS" || status=1
fi
# A test that fails on its timing (a sanitizer makes every process several
# times slower) runs once more, alone; a second failure fails the run, and a
# sanitizer report from either run does too. Each retry is named.
if [ "$(id -u)" = 0 ]; then
	out=$B/integration.out
	TWSHIM_BUILD="$abs_b" TWSHIM_TEST_PRELOAD="$preload" \
		"$runner/tests/integration" --jobs="$JOBS" ${filter:+--filter "$filter"} 2>&1 |
		tee "$out"
	failed=$(sed -n 's/^\[FAIL\] \([a-z_0-9]*\)::\([a-z_0-9]*\):.*/\1\/\2/p' "$out")
	if grep -q "Crashing: [1-9]" "$out" || ! grep -q "Synthesis:" "$out"; then
		status=1
	fi
	for t in $failed; do
		echo "$kind: $t failed; run again alone"
		if TWSHIM_BUILD="$abs_b" TWSHIM_TEST_PRELOAD="$preload" \
			"$runner/tests/integration" --filter "$t"; then
			echo "$kind: $t passed the second time (retried)"
		else
			status=1
		fi
	done
else
	echo "integration tests skipped: they need root for network namespaces (unshare -n)"
fi

# A report is a file with an error in it; LeakSanitizer also leaves notes
# ("Running thread ... was not suspended") that are not findings.
found=$(grep -l -E "ERROR: |runtime error:|WARNING: ThreadSanitizer|SUMMARY: " \
	$(find "$reports" -type f) /dev/null 2>/dev/null || true)
n=$(echo "$found" | grep -c . || true)
if [ "$n" -gt 0 ]; then
	echo "$kind: $n report(s) in $reports:" >&2
	for f in $(echo "$found" | head -20); do
		echo "== $f" >&2
		head -60 "$f" >&2
	done
	status=1
else
	echo "$kind: no sanitizer reports"
fi
exit $status
