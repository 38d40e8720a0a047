# SPDX-License-Identifier: MIT
# shellcheck shell=sh
#
# Sourced by tests/check-install.sh and tests/check-package.sh, which define
# fail, ok and the variables tmp and spid (killed by their clean-up).
#
# one_record TOOL BUILD RUN-OPTIONS...: one connection, from tw-client run by
# `TOOL run RUN-OPTIONS -o close=abort,log=$tmp/rec.jsonl` to a tw-server
# (BUILD/examples/) that waits for the client's close; then checks that
# $tmp/rec.jsonl holds exactly that connection's record, under close=abort,
# so that the settings are seen to have reached the library.
# shellcheck disable=SC2154 # tmp is the sourcing script's
one_record() {
	tool=$1
	build=$2
	shift 2
	"$build/examples/tw-server" -l 127.0.0.1:0 -n 1 --close last --timeout 2000 \
		> "$tmp/server.out" 2> "$tmp/server.err" &
	spid=$!
	tries=0
	until grep -q '^listening' "$tmp/server.out" 2>/dev/null; do
		tries=$((tries + 1))
		[ "$tries" -le 300 ] || { cat "$tmp/server.err" >&2; fail "tw-server did not start"; }
		sleep 0.01
	done
	port=$(sed -n 's/^listening //p' "$tmp/server.out")
	env -u LD_PRELOAD -u TWSHIM_OPTIONS "$tool" run "$@" -o "close=abort,log=$tmp/rec.jsonl" -- \
		"$build/examples/tw-client" --timeout 2000 "127.0.0.1:$port" \
		> "$tmp/client.out" 2>&1 || { cat "$tmp/client.out" >&2; fail "the client failed"; }
	wait "$spid" || true
	spid=
	[ -s "$tmp/rec.jsonl" ] || fail "the program run under $tool wrote no record"
	[ "$(wc -l < "$tmp/rec.jsonl")" -eq 1 ] || fail "expected one record: $(cat "$tmp/rec.jsonl")"
	for field in '"comm":"tw-client"' '"role":"client"' '"policy":"abort"' '"end":"abort"'; do
		grep -qF "$field" "$tmp/rec.jsonl" ||
			fail "no $field in the record: $(cat "$tmp/rec.jsonl")"
		ok
	done
}
