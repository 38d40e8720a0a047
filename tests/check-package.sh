#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The Debian package as an operator meets it (CI runs this after make test,
# as root, on a fresh Debian machine):
#   - make deb builds it, and lintian finds no error in it;
#   - dpkg -i installs it: the tool, the library in its multiarch directory,
#     the man pages, the policies, /etc/twshim.conf and the logrotate file
#     (both conffiles), the exporter's unit (installed, not enabled);
#   - the installed twshim run preloads the installed library, and a program
#     run under it writes a close record, /etc/twshim.conf changing nothing;
#   - twshim enable and disable on a test unit: the drop-in is written,
#     systemd-analyze verify accepts it, twshim status lists it, disable
#     removes it; logrotate accepts the logrotate file and rotates by rename;
#   - dpkg --purge leaves no file of the package behind, not even the
#     drop-in of a unit still enabled.
# It installs and purges a package on this machine: it refuses to run when
# twshim is installed already.
#
# Usage: tests/check-package.sh   (B: the build directory, default build)
set -eu
cd "$(dirname "$0")/.."
B=${B:-build}
fail() {
	echo "check-package: FAIL: $*" >&2
	exit 1
}
checks=0
# shellcheck source=tests/one-record.sh
. ./tests/one-record.sh
ok() {
	checks=$((checks + 1))
}

[ "$(id -u)" = 0 ] || fail "needs root (it installs and purges the package)"
if dpkg-query -W -f='${Status}' twshim 2>/dev/null | grep -q "ok installed"; then
	fail "the twshim package is installed on this machine already: not touching it"
fi
tmp=$(mktemp -d /tmp/twshim-package.XXXXXX)
unit=twshim-check-$$.service
spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null
	rm -f "/etc/systemd/system/$unit"
	rm -rf "/etc/systemd/system/$unit.d" "$tmp"
	dpkg-query -W -f='${Status}' twshim 2>/dev/null | grep -q "ok installed" &&
		dpkg --purge twshim > /dev/null 2>&1
	true
}
trap cleanup EXIT

# --- build and lintian ----------------------------------------------------------

# the examples (tw-server, tw-client) are the programs run under the library
make -s B="$B" all > "$tmp/make.log" 2>&1 || { tail -n 30 "$tmp/make.log" >&2; fail "make all"; }
make -s B="$B" deb > "$tmp/deb.log" 2>&1 || { tail -n 30 "$tmp/deb.log" >&2; fail "make deb"; }
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)
deb=$B/deb/twshim_${version}_${arch}.deb
[ -f "$deb" ] || fail "make deb did not make $deb"
ok
if command -v lintian > /dev/null 2>&1; then
	lintian "$B/deb/twshim_${version}_${arch}.changes" > "$tmp/lintian.out" 2>&1 || true
	! grep -q '^E:' "$tmp/lintian.out" || fail "lintian errors: $(grep '^E:' "$tmp/lintian.out")"
	grep '^[WE]:' "$tmp/lintian.out" | sed 's/^/check-package: lintian: /' || true
	ok
else
	echo "check-package: lintian is not installed: the package was not checked with it"
fi

# --- install ----------------------------------------------------------------------

dpkg -i "$deb" > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i $deb"; }
dpkg -L twshim > "$tmp/files"
lib=/usr/lib/$multiarch/twshim/libtwshim.so
for f in /usr/bin/twshim "$lib" /usr/share/man/man1/twshim.1.gz \
	/usr/share/man/man5/twshim.conf.5.gz /etc/twshim.conf /etc/logrotate.d/twshim \
	/lib/systemd/system/twshim-exporter.service; do
	[ -f "$f" ] || fail "$f is not installed"
	ok
done
for p in policies/*.conf; do
	cmp -s "$p" "/usr/share/twshim/$p" || fail "/usr/share/twshim/$p is not installed"
	ok
done
for f in /etc/twshim.conf /etc/logrotate.d/twshim; do
	dpkg-query -W -f='${Conffiles}\n' twshim | grep -q " $f " || fail "$f is no conffile"
	ok
done
if [ -e /etc/systemd/system/multi-user.target.wants/twshim-exporter.service ]; then
	fail "the exporter's unit was enabled"
fi
ok
man -w twshim > /dev/null 2>&1 || fail "man twshim finds no page"
ok

# --- the installed tool and library --------------------------------------------------

# shellcheck disable=SC2016 # the shell that twshim runs expands it
got=$(env -u LD_PRELOAD /usr/bin/twshim run -- /bin/sh -c 'printf "%s" "$LD_PRELOAD"') ||
	fail "twshim run of /bin/sh failed"
[ "$got" = "$lib" ] || fail "twshim run preloads '$got', not $lib"
ok

# one connection under close=abort; TWSHIM_CONFIG unset, so the library also
# reads the shipped /etc/twshim.conf, which must change nothing
unset TWSHIM_CONFIG
one_record /usr/bin/twshim "$B"
! grep -q twshim "$tmp/client.out" || fail "the library complained: $(cat "$tmp/client.out")"
ok

# --- a drop-in for a test unit -------------------------------------------------------

printf '[Unit]\nDescription=twshim package check\n\n[Service]\nExecStart=/bin/true\nEnvironment=LD_PRELOAD=/lib/other.so\n' \
	> "/etc/systemd/system/$unit"
dropin=/etc/systemd/system/$unit.d/twshim.conf
twshim enable "$unit" -o "close=defer,log=/var/log/twshim/%n.jsonl" > "$tmp/enable.out" ||
	fail "twshim enable $unit"
grep -q "Restart $unit" "$tmp/enable.out" || fail "enable does not say to restart: $(cat "$tmp/enable.out")"
grep -qxF "Environment=\"LD_PRELOAD=$lib:/lib/other.so\"" "$dropin" ||
	fail "the drop-in's LD_PRELOAD: $(cat "$dropin")"
grep -qxF 'Environment="TWSHIM_OPTIONS=close=defer,log=/var/log/twshim/%%n.jsonl"' "$dropin" ||
	fail "the drop-in's TWSHIM_OPTIONS: $(cat "$dropin")"
ok
if command -v systemd-analyze > /dev/null 2>&1; then
	systemd-analyze verify --man=no "/etc/systemd/system/$unit" > "$tmp/verify.out" 2>&1 ||
		fail "systemd-analyze verify: $(cat "$tmp/verify.out")"
	[ ! -s "$tmp/verify.out" ] || fail "systemd-analyze verify: $(cat "$tmp/verify.out")"
	ok
else
	echo "check-package: systemd-analyze is not installed: the drop-in was not verified"
fi
twshim status > "$tmp/status.out" || fail "twshim status"
grep -q "^$unit  *$lib " "$tmp/status.out" || fail "twshim status: $(cat "$tmp/status.out")"
ok
twshim disable "$unit" > /dev/null || fail "twshim disable $unit"
if [ -e "$dropin" ] || [ -e "/etc/systemd/system/$unit.d" ]; then
	fail "disable left $dropin"
fi
twshim status "$unit" > /dev/null && fail "twshim status $unit after disable exits 0"
ok
logrotate -d /etc/logrotate.d/twshim > "$tmp/logrotate.out" 2>&1 ||
	fail "logrotate -d: $(cat "$tmp/logrotate.out")"
ok
# a rotation of a directory of its own: renamed, not copied, and no new file
# made (the process makes its own when it sees the rename)
mkdir "$tmp/logs"
echo '{"ts":1}' > "$tmp/logs/a.jsonl"
sed "s|/var/log/twshim|$tmp/logs|" /etc/logrotate.d/twshim > "$tmp/logrotate.conf"
logrotate -f -s "$tmp/logrotate.state" "$tmp/logrotate.conf" > "$tmp/logrotate.out" 2>&1 ||
	fail "logrotate: $(cat "$tmp/logrotate.out")"
if [ "$(cat "$tmp/logs/a.jsonl.1" 2>/dev/null)" != '{"ts":1}' ] || [ -e "$tmp/logs/a.jsonl" ]; then
	fail "logrotate made: $(ls "$tmp/logs")"
fi
ok

# --- purge ------------------------------------------------------------------------------

# enabled again, so that the purge has a drop-in to take away
twshim enable "$unit" > /dev/null || fail "twshim enable $unit, again"
dpkg --purge twshim > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --purge"; }
left=
while read -r f; do
	# directories: the shared ones (/usr, /etc ...) stay; the package's own
	# are looked at below
	if [ -e "$f" ] && [ ! -d "$f" ]; then
		left="$left $f"
	fi
done < "$tmp/files"
[ -z "$left" ] || fail "dpkg --purge left behind:$left"
ok
if [ -e "$dropin" ] || [ -e "/etc/systemd/system/$unit.d" ]; then
	fail "the purge left $dropin"
fi
ok
for d in "/usr/lib/$multiarch/twshim" /usr/share/twshim /usr/share/doc/twshim; do
	[ ! -e "$d" ] || fail "the purge left $d"
done
ok

echo "check-package: PASS: $deb built, installed, used and purged ($checks checks)"
