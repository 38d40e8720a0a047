#!/bin/sh
# SPDX-License-Identifier: MIT
#
# make test: the install and export checks, the unit suite and (as root) the
# integration suite, every one run even when an earlier one failed; then one
# line that counts what passed, failed and was skipped, and names each
# skipped test with its reason. Exits 1 when anything failed.
#
# Environment: B (build), MAKE (make), CRITERION_FLAGS (--jobs=2).
set -u
cd "$(dirname "$0")/.." || exit 1
B=${B:-build}
babs=$(cd "$B" && pwd)
out=$B/test-results
rm -rf "$out"
mkdir -p "$out"
results=$out/checks.tsv
: > "$results"

# check NAME CMD...: one test that passes when CMD exits 0
check() {
	name=$1
	shift
	if "$@"; then
		printf 'PASSED\t%s\t\n' "$name" >> "$results"
	else
		printf 'FAILED\t%s\t\n' "$name" >> "$results"
	fi
}

# suite NAME CMD...: a Criterion runner, its report in $out/NAME.json
suite() {
	name=$1
	shift
	# shellcheck disable=SC2086 # CRITERION_FLAGS is a list of options
	"$@" ${CRITERION_FLAGS:---jobs=2} --json="$out/$name.json"
	rc=$?
	if [ ! -s "$out/$name.json" ]; then
		printf 'FAILED\t%s\tthe runner exited %s without a report\n' "$name" "$rc" >> "$results"
	elif [ "$rc" != 0 ]; then
		printf '%s\t%s\n' "$name" "$rc" >> "$out/exit-codes"
	fi
}

check check-exports ./tests/check-exports.sh "$B/libtwshim.so"
check check-install env MAKE="${MAKE:-make}" ./tests/check-install.sh
suite unit "$B/tests/unit"
if [ "$(id -u)" = 0 ]; then
	TWSHIM_BUILD=$babs suite integration "$B/tests/integration"
else
	echo "integration tests skipped: they need root for network namespaces (unshare -n)"
	printf 'SKIPPED\tintegration/*\tneeds root for network namespaces (unshare -n)\n' >> "$results"
fi
exec /usr/bin/python3 tests/test-summary.py "$out"
