#!/bin/sh
# SPDX-License-Identifier: MIT
#
# `make install` and `make uninstall` as a user runs them: build with the
# default PREFIX, then install into a temporary PREFIX, and check that
#   - the library, the tool, both man pages and every policy are installed;
#   - the installed twshim preloads the installed library (not the build's),
#     and a program it runs writes a close record with the settings given;
#   - man renders both installed pages without a warning;
#   - make uninstall leaves no file behind.
# Needs no root: the one connection goes to 127.0.0.1 and ends with a reset,
# so it leaves no TIME_WAIT behind.
#
# Usage: tests/check-install.sh   (run by make test; MAKE names the make to use)
set -eu

cd "$(dirname "$0")/.."
make=${MAKE:-make}
tmp=$(mktemp -d /tmp/twshim-install.XXXXXX)
build=$tmp/build
prefix=$tmp/prefix
spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

checks=0
# shellcheck source=tests/one-record.sh
. ./tests/one-record.sh
fail() {
	echo "check-install: FAIL: $*" >&2
	exit 1
}
ok() {
	checks=$((checks + 1))
}

# A fresh build with the default PREFIX, then the install somewhere else: the
# tool must still look for the library where it is installed. SAN= keeps a
# sanitizer build out of programs that the library is preloaded into.
"$make" -s B="$build" SAN= all > "$tmp/make.log" 2>&1 ||
	{ cat "$tmp/make.log" >&2; fail "make all"; }
"$make" -s B="$build" SAN= PREFIX="$prefix" DESTDIR= install > "$tmp/make.log" 2>&1 ||
	{ cat "$tmp/make.log" >&2; fail "make install PREFIX=$prefix"; }

# --- the files ----------------------------------------------------------------

for f in bin/twshim lib/libtwshim.so share/man/man1/twshim.1 share/man/man5/twshim.conf.5; do
	[ -f "$prefix/$f" ] || fail "PREFIX/$f is not installed"
	ok
done
[ -x "$prefix/bin/twshim" ] || fail "PREFIX/bin/twshim is not executable"
for p in policies/*.conf; do
	cmp -s "$p" "$prefix/share/twshim/$p" || fail "PREFIX/share/twshim/$p is not installed"
	ok
done

# --- the installed tool and library -------------------------------------------

tool=$prefix/bin/twshim
lib=$prefix/lib/libtwshim.so

# shellcheck disable=SC2016 # the shell that twshim runs expands it
got=$(env -u LD_PRELOAD "$tool" run -c '' -- /bin/sh -c 'printf "%s" "$LD_PRELOAD"') ||
	fail "twshim run of /bin/sh failed"
[ "$got" = "$lib" ] ||
	fail "the installed twshim preloads '$got', not the installed library $lib"
ok

# one connection under close=abort; -c '' keeps any /etc/twshim.conf out
one_record "$tool" "$build" -c ''
"$tool" report "$tmp/rec.jsonl" > "$tmp/report.out" ||
	fail "the installed twshim report failed"
grep -q '^tw-client  *1 ' "$tmp/report.out" ||
	fail "twshim report does not count the record: $(cat "$tmp/report.out")"
ok

# --- the man pages --------------------------------------------------------------

# man_check ARGS...: man ARGS renders a page, with a NAME, and warns of nothing
man_check() {
	MANWIDTH=80 MANPAGER=cat PAGER=cat man --warnings "$@" \
		> "$tmp/man.out" 2> "$tmp/man.err" || true
	[ ! -s "$tmp/man.err" ] || fail "man $*: $(head -n 5 "$tmp/man.err")"
	grep -q '^NAME' "$tmp/man.out" || fail "man $*: no NAME section rendered"
	ok
}

if command -v man > /dev/null 2>&1; then
	man_check -l "$prefix/share/man/man1/twshim.1"
	man_check -l "$prefix/share/man/man5/twshim.conf.5"
	# and found where they were installed, as `man twshim` would find them
	man_check -M "$prefix/share/man" 1 twshim
	man_check -M "$prefix/share/man" 5 twshim.conf
else
	echo "check-install: man is not installed: the pages were not rendered"
fi

# --- uninstall ------------------------------------------------------------------

"$make" -s B="$build" SAN= PREFIX="$prefix" DESTDIR= uninstall > "$tmp/make.log" 2>&1 ||
	{ cat "$tmp/make.log" >&2; fail "make uninstall PREFIX=$prefix"; }
left=$(cd "$prefix" && find . ! -type d | sed 's|^\./||' | tr '\n' ' ')
[ -z "$left" ] || fail "make uninstall left behind: $left"
ok

echo "check-install: PASS: make install PREFIX=... and uninstall ($checks checks)"
