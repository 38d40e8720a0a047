#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run.sh BUILD_DIR: runs every benchmark against BUILD_DIR/libtwshim.so, each
# figure next to the same work without the library, prints one table and
# writes the figures to BUILD_DIR/bench/results.json.
#
# The machine is shared and noisy: timed figures are repeated with the
# variants interleaved (in a shuffled order each repetition) and medians are
# reported; a rate is divided by the rate without the library of the same
# repetition, and the median of those ratios is the claim. The run without
# the library is also repeated as a variant of its own (A/A): how far that
# ratio strays from 1 is the noise floor. Instruction counts (callgrind) and
# system call counts (strace -c) do not vary.
#
# Sections 2-4 run in private network namespaces (unshare -n), a fresh one per
# run, with the port range and tcp_tw_reuse they need, and traffic only on
# their loopback; they need root and are skipped otherwise. Section 1 makes a
# few loopback connections too: in a namespace of its own when root.
#
# Environment: BENCH_ONLY (sections to run, "1 2 3 4 5 6 7"), BENCH_REPS (churn
# repetitions, 9), BENCH_CHURN_MS (1000), BENCH_EXHAUST_REPS (2),
# BENCH_EXHAUST_MS (10000), BENCH_DEFER_N (10000), BENCH_DEFER_REPS (3),
# BENCH_RECORD_REPS (5), BENCH_RECORD_MS (500), BENCH_PAYS_REPS (3),
# BENCH_SEED (run orders, 1), BENCH_BEFORE (another build's libtwshim.so: it
# runs beside this one, interleaved with the rest, in rows named "-before":
# section 2 its stats-none and normal-log rows, section 4 every row, section 6
# its log-file and defer rows).
set -u

# ---- in a new namespace: set it up, then run the rest of the command line ----
if [ "${1:-}" = --netns ]; then
	# --netns TW_REUSE PORT_LO PORT_HI COMMAND...
	ip link set lo up || exit 1
	echo "$2" > /proc/sys/net/ipv4/tcp_tw_reuse || exit 1
	echo "$3 $4" > /proc/sys/net/ipv4/ip_local_port_range || exit 1
	shift 4
	exec "$@"
fi

# ---- in a namespace: one churn run, the server in the background, then the client ----
if [ "${1:-}" = --pair ]; then
	# --pair DIR CLIENT_OPTS SERVER_OPTS DURATION_MS ("-": without the library);
	# BENCH_LIB, BENCH_OUT, BENCH_PORT from the caller; with BENCH_STRACE set,
	# both run under strace -c (DIR/strace.client, DIR/strace.server)
	dir=$2
	cenv=(env)
	senv=(env)
	[ "$3" = - ] || cenv+=(LD_PRELOAD="$BENCH_LIB" TWSHIM_OPTIONS="$3")
	[ "$4" = - ] || senv+=(LD_PRELOAD="$BENCH_LIB" TWSHIM_OPTIONS="$4")
	ctrace=()
	strace=()
	if [ -n "${BENCH_STRACE:-}" ]; then
		ctrace=(strace -f -c -o "$dir/strace.client")
		strace=(strace -f -c -o "$dir/strace.server")
	fi
	rm -f "$dir/ready"
	# the server closes 2 ms after its reply unless the client's EOF came first
	"${strace[@]}" "${senv[@]}" "$BENCH_OUT/churn" server "$BENCH_PORT" 2 "$dir/ready" \
		> "$dir/server.out" &
	sp=$!
	for ((i = 0; i < 500; i++)); do
		[ -s "$dir/ready" ] && break
		sleep 0.01
	done
	if [ ! -s "$dir/ready" ]; then
		echo "churn server did not start" >&2
		kill $sp
		exit 1
	fi
	timeout -k 5 $(($5 / 1000 + 30)) "${ctrace[@]}" "${cenv[@]}" "$BENCH_OUT/churn" \
		client "$BENCH_PORT" "$5"
	kill -TERM "$(cat "$dir/ready")"
	wait $sp
	cat "$dir/server.out"
	exit 0
fi

# ---- in a namespace: one nginx run, its one worker's CPU time around a wrk run ----
if [ "${1:-}" = --nginx ]; then
	# --nginx DIR OPTS DURATION_S CONNECTIONS ("-": without the library);
	# BENCH_LIB, BENCH_PORT from the caller. Prints requests, elapsed, the
	# worker's CPU ticks (utime + stime of every thread) and its pid.
	dir=$2
	env=(env)
	[ "$3" = - ] || env+=(LD_PRELOAD="$BENCH_LIB" TWSHIM_OPTIONS="$3")
	cat > "$dir/nginx.conf" <<-EOF
	daemon off;
	master_process on;
	worker_processes 1;
	user root;
	pid $dir/nginx.pid;
	error_log $dir/error.log warn;
	events { worker_connections 1024; }
	http {
	  access_log off;
	  client_body_temp_path $dir/body;
	  proxy_temp_path $dir/proxy;
	  fastcgi_temp_path $dir/fastcgi;
	  uwsgi_temp_path $dir/uwsgi;
	  scgi_temp_path $dir/scgi;
	  keepalive_timeout 0;
	  server {
	    listen 127.0.0.1:$BENCH_PORT;
	    location / { default_type text/plain; return 200 "hello\n"; }
	  }
	}
	EOF
	"${env[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	master=$!
	worker=
	for ((i = 0; i < 500; i++)); do
		worker=$(cat "/proc/$master/task/$master/children" 2> /dev/null | awk '{ print $1 }')
		[ -n "$worker" ] && ss -Hltn "sport = :$BENCH_PORT" | grep -q . && break
		sleep 0.01
	done
	if [ -z "$worker" ]; then
		echo "nginx did not start: $(tail -3 "$dir/error.log" 2> /dev/null)" >&2
		kill $master
		exit 1
	fi
	ticks() { awk '{ print $14 + $15 }' "/proc/$worker/stat"; }
	t0=$(ticks)
	wrk -t1 -c"$5" -d"$4"s "http://127.0.0.1:$BENCH_PORT/" > "$dir/wrk.out" 2>&1
	t1=$(ticks)
	kill -QUIT $master
	wait $master
	awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v w="$worker" '
		/ requests in / { n = $1; s = $4; sub(/s,?$/, "", s) }
		/Non-2xx/ { bad += $NF }
		/Socket errors/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
		END { printf "requests=%d elapsed_s=%s worker_ticks=%d hz=%d bad=%d errors=%d worker=%s\n",
		      n, s, t, hz, bad, err, w }' "$dir/wrk.out"
	exit 0
fi

# ---- in a namespace: one run of section 7 ----
if [ "${1:-}" = --pays ]; then
	# --pays BUILD short|exhaust OPTIONS|-: prints "ms=N" (short) or tw-client's summary
	b=$2
	cenv=(env)
	[ "$4" = - ] || cenv+=(LD_PRELOAD="$b/libtwshim.so" TWSHIM_OPTIONS="$4")
	if [ "$3" = short ]; then
		# never closes first: it waits for the client's EOF (nginx's keep-alive)
		"$b/examples/tw-server" --close last --threads 64 --timeout 60000 \
			-l 127.0.0.1:9001 > /dev/null 2>&1 &
	else
		"$b/examples/tw-server" --close-delay 50 --threads 64 -l 127.0.0.1:9001 \
			> /dev/null 2>&1 &
	fi
	sp=$!
	for ((i = 0; i < 200; i++)); do
		ss -ltn 2> /dev/null | grep -q ':9001 ' && break
		sleep 0.01
	done
	if [ "$3" = short ]; then
		t0=$(date +%s%N)
		for ((i = 0; i < 10; i++)); do
			"${cenv[@]}" "$b/examples/tw-client" 127.0.0.1:9001 > /dev/null
		done
		echo "ms=$((($(date +%s%N) - t0) / 1000000))"
	else
		"${cenv[@]}" "$b/examples/tw-client" -n 300 127.0.0.1:9001
	fi
	kill $sp
	wait $sp 2> /dev/null
	exit 0
fi

B=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd) || exit 1
OUT=$B/bench
LIB=$B/libtwshim.so
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
PORT=9000	# below every ephemeral range used here
export BENCH_LIB=$LIB BENCH_OUT=$OUT BENCH_PORT=$PORT
REPS=${BENCH_REPS:-9}
CHURN_MS=${BENCH_CHURN_MS:-1000}
EXH_REPS=${BENCH_EXHAUST_REPS:-2}
EXH_MS=${BENCH_EXHAUST_MS:-10000}
DEFER_N=${BENCH_DEFER_N:-10000}
DEFER_REPS=${BENCH_DEFER_REPS:-3}
REC_REPS=${BENCH_RECORD_REPS:-5}
REC_MS=${BENCH_RECORD_MS:-500}
NGINX_REPS=${BENCH_NGINX_REPS:-3}
NGINX_S=${BENCH_NGINX_S:-2}
NGINX_CONNS=16
PAYS_REPS=${BENCH_PAYS_REPS:-3}
BEFORE=${BENCH_BEFORE:-}

# the settings are exactly the ones given: no /etc/twshim.conf, nothing inherited
export TWSHIM_CONFIG=
unset TWSHIM_OPTIONS TWSHIM_DEBUG LD_PRELOAD

[ -f "$LIB" ] || { echo "run.sh: no $LIB: build it first (make all)" >&2; exit 1; }
[ -z "$BEFORE" ] || [ -f "$BEFORE" ] || { echo "run.sh: BENCH_BEFORE: no $BEFORE" >&2; exit 1; }
TMP=$(mktemp -d "$OUT/run.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
ROWS=()		# "id|measure|without|with|ratio|target|met": the table
JSON=()		# one JSON object per row
DETAILS=()	# lines printed under the table
NOTES=()	# what went wrong, or could not be measured
ROOT=0
[ "$(id -u)" = 0 ] && ROOT=1

log() { printf '%s\n' "$*" >&2; }
note() { NOTES+=("$*"); log "note: $*"; }
detail() { DETAILS+=("$*"); }

# the value of KEY in FILE's key=value pairs
kv() { grep -o "\b$1=[^ ]*" "$2" 2> /dev/null | head -1 | cut -d= -f2; }

median() {
	printf '%s\n' "$@" | grep -v '^$' | sort -g |
		awk '{ v[NR] = $1 }
		     END { if (!NR) print "null"; else if (NR % 2) print v[(NR + 1) / 2];
			   else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc FORMAT EXPR ARGS...: EXPR in awk, $1 $2 ... standing for ARGS; null
# when an argument is missing
calc() {
	local fmt=$1 expr=$2 i=1 vars=() v
	shift 2
	for v in "$@"; do
		case $v in ''|null) echo null; return ;; esac
		vars+=(-v "a$i=$v")
		i=$((i + 1))
	done
	expr=$(printf '%s' "$expr" | sed 's/\$\([0-9][0-9]*\)/a\1/g')
	# one expression is parenthesised (a comparison must not read as a
	# redirection); a list of them is not (mawk takes no "(a, b)" there)
	case $expr in *,*) ;; *) expr="($expr)" ;; esac
	awk "${vars[@]}" "BEGIN { printf \"$fmt\\n\", $expr }"
}

# yes when $1 OP $2 holds (OP: <=, <, >=), else no; - when either is missing
verdict() {
	local r
	r=$(calc '%s' "\$1 $2 \$2 ? \"yes\" : \"no\"" "$1" "$3" 2> /dev/null)
	case $r in yes|no) echo "$r" ;; *) echo - ;; esac
}

# the words in a random order: a run is not always preceded by the same
# other run (whose namespace may still be being torn down in the background)
shuffle() {
	local a=("$@") i j t
	for ((i = ${#a[@]} - 1; i > 0; i--)); do
		j=$((RANDOM % (i + 1)))
		t=${a[i]}
		a[i]=${a[j]}
		a[j]=$t
	done
	echo "${a[@]}"
}

# a JSON value: a number as it is, anything else as a string
jval() {
	case ${1#+} in
	''|-|null) echo null ;;
	*[!0-9.e-]*) printf '"%s"' "$(printf '%s' "$1" | tr '"\\' "''")" ;;
	*) echo "${1#+}" ;;
	esac
}

# a file of numbers, one a line, as a JSON array
jlist() { echo "[$(grep -v '^$' "$1" 2> /dev/null | paste -sd,)]"; }

# row ID MEASURE WITHOUT WITH RATIO TARGET MET UNIT [MORE_JSON_MEMBERS]
row() {
	local met=null
	ROWS+=("$1|$2|$3|$4|$5|$6|$7")
	case $7 in yes) met=true ;; no) met=false ;; esac
	JSON+=("{\"id\":\"$1\",\"measure\":$(jval "$2"),\"unit\":\"$8\",\"without\":$(jval "$3"),\
\"with\":$(jval "$4"),\"ratio_or_extra\":$(jval "$5"),\"target\":$(jval "$6"),\"met\":$met\
${9:+,$9}}")
}

in_netns() {	# TW_REUSE PORT_LO PORT_HI COMMAND...
	unshare -n -- "$SELF" --netns "$@"
}

# ---------------------------------------------------------------- 1 --
# User-space instructions of one close(), counted by callgrind inside
# bench_close_one() only. The difference between N and 2N calls cancels
# what happens once (symbol binding, the first touch of a table page).
CG_FD_N=10000
CG_TCP_N=500

cg_ir() {	# OUTFILE OPTIONS|- closeloop-args...
	local out=$1 opts=$2 envs=(env) netns=()
	shift 2
	[ "$opts" = - ] || envs+=(LD_PRELOAD="$LIB" TWSHIM_OPTIONS="$opts")
	# its loopback connections stay in a namespace of their own when it can
	[ $ROOT = 1 ] && netns=(unshare -n -- "$SELF" --netns 2 32768 60999)
	"${netns[@]}" "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" \
		--toggle-collect=bench_close_one --collect-atstart=no \
		"$OUT/closeloop" "$@" > "$out.stdout" 2> "$out.stderr" || return 1
	awk '/^summary:/ { print $2 }' "$out"
}

per_close() {	# NAME OPTIONS|- fd|tcp N [closeloop options]
	local name=$1 opts=$2 mode=$3 n=$4 a b
	shift 4
	a=$(cg_ir "$TMP/cg.$name.1" "$opts" $mode $n "$@") &&
		b=$(cg_ir "$TMP/cg.$name.2" "$opts" $mode $((2 * n)) "$@") &&
		calc '%.1f' '($2 - $1) / $3' "$a" "$b" "$n" ||
		{ note "1: callgrind failed for $name: $(tail -3 "$TMP/cg.$name.1.stderr")"
		  echo null; }
}

# close() must resolve to the library, and the log must show it tracked
check_tracked() {	# NAME LOG RECORDS
	local from lines
	from=$(kv close_from "$TMP/cg.$1.1.stdout")
	lines=$(cat "$2" 2> /dev/null | wc -l)
	case $from in
	*libtwshim.so) ;;
	*) note "1: $1: close() resolved to '$from', not to the library" ;;
	esac
	[ "$lines" -ge "$3" ] || note "1: $1: $lines records in its log, expected $3: not tracking?"
}

# inclusive instructions per call of FUNC in a per_close pair of profiles
cg_fn() {	# NAME FUNC N
	local a b
	command -v callgrind_annotate > /dev/null || { echo null; return; }
	a=$(callgrind_annotate --inclusive=yes "$TMP/cg.$1.1" 2> /dev/null |
		awk -v f=":$2 " 'index($0, f) { gsub(",", "", $1); print $1; exit }')
	b=$(callgrind_annotate --inclusive=yes "$TMP/cg.$1.2" 2> /dev/null |
		awk -v f=":$2 " 'index($0, f) { gsub(",", "", $1); print $1; exit }')
	calc '%.0f' '($2 - $1) / $3' "$a" "$b" "$3"
}

bench_close() {
	local plain plain_mt lib lib_mt lib_defer tplain tlib extra
	if ! command -v valgrind > /dev/null; then
		note "1, 5: valgrind is not installed: no instruction counts" \
			"(scripts/deps installs it)"
		return
	fi
	log "1: instructions per close() (callgrind)"
	plain=$(per_close plain - fd $CG_FD_N)
	lib=$(per_close lib "log=$TMP/cg-lib.jsonl" fd $CG_FD_N --probe)
	check_tracked lib "$TMP/cg-lib.jsonl" 4
	plain_mt=$(per_close plain_mt - fd $CG_FD_N --thread)
	lib_mt=$(per_close lib_mt "close=defer,defer_ms=100,log=$TMP/cg-mt.jsonl" \
		 fd $CG_FD_N --probe --thread)
	lib_defer=$(per_close lib_defer "close=defer,defer_ms=100,log=$TMP/cg-defer.jsonl" \
		    fd $CG_FD_N --probe)
	check_tracked lib_defer "$TMP/cg-defer.jsonl" 4
	tplain=$(per_close tplain - tcp $CG_TCP_N)
	tlib=$(per_close tlib "log=$TMP/cg-tcp.jsonl" tcp $CG_TCP_N)
	check_tracked tlib "$TMP/cg-tcp.jsonl" $((3 * CG_TCP_N))

	extra=$(calc '%+.1f' '$2 - $1' "$plain" "$lib")
	row 1a "close() of an untracked fd, tracking on (log=FILE)" "$plain" "$lib" "$extra" \
		"<= +20" "$(verdict "$extra" '<=' 20)" "user instructions per call"
	extra=$(calc '%+.1f' '$2 - $1' "$plain_mt" "$lib_mt")
	row 1b "the same, multi-threaded program, close=defer" "$plain_mt" "$lib_mt" "$extra" \
		"<= +20" "$(verdict "$extra" '<=' 20)" "user instructions per call"
	extra=$(calc '%+.1f' '$2 - $1' "$plain" "$lib_defer")
	row 1c "the same, single-threaded program, close=defer" "$plain" "$lib_defer" "$extra" \
		"<= +20" "$(verdict "$extra" '<=' 20)" "user instructions per call"
	extra=$(calc '%+.0f' '$2 - $1' "$tplain" "$tlib")
	row 1d "close() of a tracked TCP connection, log=FILE" "$tplain" "$tlib" "$extra" - - \
		"user instructions per call"
	detail "1d: conn_end (from the TCP_INFO read to the record's write) takes" \
		"$(cg_fn tlib conn_end $CG_TCP_N) of them, and record_format, which writes" \
		"the JSON line, $(cg_fn tlib record_format $CG_TCP_N)."
	detail "1: callgrind --toggle-collect=bench_close_one, (Ir(2N) - Ir(N)) / N. 1c: the" \
		"library's closer thread makes the process multi-threaded, and glibc's close()" \
		"then takes its cancellation-point path (1b: the same cost without the library)."
}

# ---------------------------------------------------------------- 2 --
# Connection churn: a client and a server, both preloaded, in a fresh
# namespace per run. The client connects, sends 16 bytes, reads 64, closes;
# the server closes at the client's EOF, or 2 ms after replying when the
# client's close is deferred. The server runs close=normal with the row's log
# setting and the client the row's policy: a server that defers too would
# wait for a client that waits for it, until defer_ms.

churn_once() {	# DIR CLIENT_OPTS SERVER_OPTS PORT_LO PORT_HI TW_REUSE DURATION_MS [LIB]
	mkdir -p "$1/stats"
	BENCH_LIB=${8:-$LIB} in_netns "$6" "$4" "$5" "$SELF" --pair "$1" "$2" "$3" "$7" \
		> "$1/pair.out" 2> "$1/pair.err"
}

# the library a variant runs: BENCH_BEFORE for the "-before" rows
churn_lib() {	# VARIANT
	case $1 in
	*-before) echo "$BEFORE" ;;
	*) echo "$LIB" ;;
	esac
}

churn_opts() {	# VARIANT DIR: "CLIENT_OPTS SERVER_OPTS"
	case ${1%-before} in
	none|none2) echo "- -" ;;
	normal-none) echo "close=normal,log=none close=normal,log=none" ;;
	normal-log) echo "close=normal,log=$2/c.jsonl close=normal,log=$2/s.jsonl" ;;
	stats-none) echo "close=normal,log=none,stats=$2/stats close=normal,log=none,stats=$2/stats" ;;
	defer|abort) echo "close=$1,log=$2/c.jsonl close=normal,log=$2/s.jsonl" ;;
	esac
}

# one record per connection, on both sides
churn_check() {	# VARIANT DIR
	local ok acc c s
	[ -f "$2/c.jsonl" ] || return 0
	ok=$(kv ok "$2/pair.out")
	acc=$(kv accepted "$2/pair.out")
	c=$(wc -l < "$2/c.jsonl")
	s=$(wc -l < "$2/s.jsonl")
	[ "$c" = "$ok" ] || note "2: $1: the client wrote $c records for $ok connections"
	[ "$s" = "$acc" ] || note "2: $1: the server wrote $s records for $acc connections"
	[ -f "$TMP/ends.$1" ] || grep -o '"end":"[a-z]*"' "$2/c.jsonl" | cut -d'"' -f4 |
		sort | uniq -c | awk '{ printf "%s%s %s", s, $2, $1; s = ", " }' > "$TMP/ends.$1"
}

# system calls per connection of client and server together, by name
churn_syscalls() {	# VARIANT
	local dir=$TMP/strace.$1 opts
	opts=($(churn_opts $1 "$dir"))
	BENCH_STRACE=1 churn_once "$dir" "${opts[0]}" "${opts[1]}" 1024 65535 1 1000 \
		"$(churn_lib $1)"
	cat "$dir/strace.client" "$dir/strace.server" 2> /dev/null |
		awk -v ok="$(kv ok "$dir/pair.out")" '
			$NF != "total" && $4 ~ /^[0-9]+$/ { n[$NF] += $4 }
			END { if (ok > 0) for (k in n) printf "%s %.2f\n", k, n[k] / ok }' |
		sort > "$TMP/sys.$1"
	rm -f "$dir"/*.jsonl
}

sys_total() { awk '{ t += $2 } END { printf "%.1f", t }' "$TMP/sys.$1" 2> /dev/null; }

# the calls that differ from the run without the library (differences under
# 0.9 a connection are the server's epoll batching, which varies)
sys_diff() {
	join -a1 -a2 -e 0 -o 0,1.2,2.2 "$TMP/sys.none" "$TMP/sys.$1" 2> /dev/null |
		awk '{ d = $3 - $2
		       if (d >= 0.9 || d <= -0.9) { printf "%s%+.0f %s", s, d, $1; s = ", " } }'
}

bench_churn() {
	# none2 is the run without the library once more: the A/A comparison
	local variants=(none none2 normal-none stats-none normal-log defer abort) v i dir opts out
	local rate cpu brate bcpu rr cr target met desc traced=(none normal-none stats-none normal-log
		defer abort)
	if [ -n "$BEFORE" ]; then
		variants+=(stats-none-before normal-log-before)
		traced+=(stats-none-before normal-log-before)
	fi
	if [ $ROOT = 0 ]; then
		note "2: skipped: it needs root for its network namespaces (unshare -n)"
		return
	fi
	log "2: connection churn, $REPS x ${CHURN_MS} ms per variant"
	for ((i = 0; i < REPS; i++)); do
		for v in $(shuffle "${variants[@]}"); do
			dir=$TMP/churn-run.$v.$i
			opts=($(churn_opts $v "$dir"))
			churn_once "$dir" "${opts[0]}" "${opts[1]}" 1024 65535 1 "$CHURN_MS" \
				"$(churn_lib $v)"
			out=$dir/pair.out
			[ "$(kv failed "$out")" = 0 ] ||
				note "2: $v, run $i: failed=$(kv failed "$out")" \
					"$(head -c 300 "$dir/pair.err")"
			# connections a second; CPU time of client and server (every
			# thread) per connection, microseconds
			calc '%.1f %.2f' '$1 * 1000 / $2, ($3 + $4) / $1' "$(kv ok "$out")" \
				"$(kv elapsed_ms "$out")" "$(kv client_cpu_us "$out")" \
				"$(kv server_cpu_us "$out")" > "$TMP/churn.$v.$i"
			churn_check $v "$dir"
			rm -rf "$dir"/*.jsonl "$dir"/stats
		done
	done
	if command -v strace > /dev/null; then
		log "2: system calls per connection (strace -c)"
		for v in "${traced[@]}"; do
			churn_syscalls $v
		done
	else
		note "2: strace is not installed: no system call counts"
	fi
	for v in "${variants[@]}"; do
		local rratios=() cratios=()
		: > "$TMP/rates.$v"
		: > "$TMP/cpus.$v"
		for ((i = 0; i < REPS; i++)); do
			read -r rate cpu < "$TMP/churn.$v.$i"
			read -r brate bcpu < "$TMP/churn.none.$i"
			echo "$rate" >> "$TMP/rates.$v"
			echo "$cpu" >> "$TMP/cpus.$v"
			rratios+=("$(calc '%.4f' '$1 / $2' "$rate" "$brate")")
			cratios+=("$(calc '%.4f' '$2 / $1' "$cpu" "$bcpu")")
		done
		[ $v = none ] && continue
		rr=$(calc '%.3f' '$1' "$(median "${rratios[@]}")")
		cr=$(calc '%.3f' '$1' "$(median "${cratios[@]}")")
		case $v in
		*-before) target=-; desc="${v%-before}, the library of BENCH_BEFORE" ;;
		none2) target=-; desc="A/A: no library in either run" ;;
		normal-none) target=">= 0.98"; desc="close=normal, log=none (nothing tracked)" ;;
		stats-none) target=">= 0.97"; desc="close=normal, stats=DIR, log=none" ;;
		normal-log) target=">= 0.95"; desc="close=normal, log=FILE" ;;
		*) target=-; desc="client close=$v, server close=normal, log=FILE" ;;
		esac
		met=-
		[ "$target" = - ] || met=$(verdict "$rr" '>=' "${target#>= }")
		row "2 $v" "connections/s over loopback: $desc" \
			"$(calc '%.0f' '$1' "$(median $(cat "$TMP/rates.none"))")" \
			"$(calc '%.0f' '$1' "$(median $(cat "$TMP/rates.$v"))")" \
			"$rr" "$target" "$met" \
			"connections/s; ratio: median over repetitions of with/without" \
			"\"conn_per_s_with\":$(jlist "$TMP/rates.$v"),\
\"conn_per_s_without\":$(jlist "$TMP/rates.none"),\"cpu_us_per_conn_with\":$(jlist "$TMP/cpus.$v"),\
\"cpu_us_per_conn_without\":$(jlist "$TMP/cpus.none"),\"per_cpu_second_ratio\":$(jval "$cr"),\
\"syscalls_per_conn\":$(jval "$(sys_total $v)"),\"syscalls_per_conn_without\":$(jval \
"$(sys_total none)"),\"syscalls_added\":$(jval "$(sys_diff $v)"),\"client_ends\":$(jval \
"$(cat "$TMP/ends.$v" 2> /dev/null)")"
		if [ ${v%-before} = normal-log ] && [ -s "$TMP/sys.$v" ]; then
			row "2 syscalls${v#normal-log}" "system calls per connection, client and server together: close=normal, log=FILE (strace -f -c)" \
				"$(sys_total none)" \
				"$(sys_total $v)" "$(calc '%+.1f' '$2 - $1' "$(sys_total none)" \
				"$(sys_total $v)")" "<= 21" "$(verdict "$(sys_total $v)" '<=' 21)" \
				"calls per connection"
		fi
		if [ $v = none2 ]; then
			detail "2 $v: connections per CPU-second (client + server CPU time," \
				"every thread), with/without: $cr."
		else
			local d
			d=$(sys_diff $v)
			detail "2 $v: per CPU-second $cr; system calls per connection (client +" \
				"server) $(sys_total none) -> $(sys_total $v)${d:+: $d}$([ -s \
				"$TMP/ends.$v" ] && echo "; client records, first run:" \
				"$(cat "$TMP/ends.$v")")."
		fi
	done
}

# ---------------------------------------------------------------- 3 --
# Port exhaustion: 1,000 ephemeral ports, tcp_tw_reuse=0. The client closes
# first (the server would close 2 ms after its reply); only the client is
# preloaded. A failed connect is followed by a 1 ms pause.
bench_exhaust() {
	local variants=(none defer abort) i v dir opts base bfail ok fail ratio
	if [ $ROOT = 0 ]; then
		note "3: skipped: it needs root for its network namespaces (unshare -n)"
		return
	fi
	log "3: port exhaustion, $EXH_REPS x ${EXH_MS} ms per variant"
	for ((i = 0; i < EXH_REPS; i++)); do
		for v in $(shuffle "${variants[@]}"); do
			dir=$TMP/exhaust-run.$v.$i
			opts=-
			[ $v = none ] || opts="close=$v,log=$dir/c.jsonl"
			churn_once "$dir" "$opts" - 40000 40999 0 "$EXH_MS"
			echo "$(kv ok "$dir/pair.out") $(kv failed "$dir/pair.out") $(kv \
			      first_error_ms "$dir/pair.out") $(kv first_error "$dir/pair.out")" \
				>> "$TMP/exhaust.$v"
			if [ -f "$dir/c.jsonl" ] &&
			   [ "$(wc -l < "$dir/c.jsonl")" != "$(kv ok "$dir/pair.out")" ]; then
				note "3: $v, run $i: $(wc -l < "$dir/c.jsonl") records for $(kv ok \
				      "$dir/pair.out") connections"
			fi
			rm -f "$dir"/*.jsonl
		done
	done
	base=$(median $(awk '{ print $1 }' "$TMP/exhaust.none"))
	bfail=$(median $(awk '{ print $2 }' "$TMP/exhaust.none"))
	for v in defer abort; do
		ok=$(median $(awk '{ print $1 }' "$TMP/exhaust.$v"))
		fail=$(median $(awk '{ print $2 }' "$TMP/exhaust.$v"))
		ratio=$(calc '%.1f' '$2 / $1' "$base" "$ok")
		row "3 $v" "connections completed in $((EXH_MS / 1000)) s, client close=$v" \
			"$base" "$ok" "$ratio" ">= 10, 0 failed" \
			"$(calc '%s' '$1 >= 10 && $2 == 0 ? "yes" : "no"' "$ratio" "$fail")" \
			"connections; ratio: with/without" \
			"\"failed_without\":$(jval "$bfail"),\"failed_with\":$(jval "$fail"),\
\"runs_without\":$(jval "$(paste -sd';' "$TMP/exhaust.none")"),\
\"runs_with\":$(jval "$(paste -sd';' "$TMP/exhaust.$v")")"
	done
	detail "3: 1,000 ephemeral ports, tcp_tw_reuse=0, ${EXH_MS} ms; failed connects:" \
		"without $bfail (the first after $(median $(awk '{ print $3 }' \
		"$TMP/exhaust.none")) ms: $(awk '{ print $4 }' "$TMP/exhaust.none" | head -1)," \
		"then one try a ms), defer $(median $(awk '{ print $2 }' \
		"$TMP/exhaust.defer")), abort $(median $(awk '{ print $2 }' "$TMP/exhaust.abort"))."
}

# ---------------------------------------------------------------- 4 --
# Deferred scale: the closer connects DEFER_N times and closes them all
# (deferred); then the peer sends its FINs one at a time ("paced") and, in a
# second round, all at once ("burst"). "manual" is the same work without the
# library: the program's own thread waits with epoll and closes.
defer_once() {	# VARIANT DIR
	local cmd=("$OUT/deferscale" closer $((PORT + 1)) "$DEFER_N") envs=(env)
	case $1 in
	lib) envs+=(LD_PRELOAD="$LIB" TWSHIM_OPTIONS="close=defer,defer_ms=30000,log=$2/d.jsonl") ;;
	lib-nolog) envs+=(LD_PRELOAD="$LIB" TWSHIM_OPTIONS="close=defer,defer_ms=30000,log=none") ;;
	before) envs+=(LD_PRELOAD="$BEFORE" TWSHIM_OPTIONS="close=defer,defer_ms=30000,log=$2/d.jsonl") ;;
	manual) cmd+=(--manual) ;;
	esac
	mkdir -p "$2"
	# the closer starts with a low soft fd limit (the library puts its fds in
	# the upper half of it) and raises it to the hard limit itself
	in_netns 2 10000 60999 "$OUT/deferscale" peer $((PORT + 1)) "$DEFER_N" -- \
		sh -c 'ulimit -Sn 4096 && exec "$@"' sh "${envs[@]}" "${cmd[@]}" \
		> "$2/out" 2> "$2/err"
	grep '^round=paced' "$2/out" > "$2/paced"
	grep '^round=burst' "$2/out" > "$2/burst"
}

defer_check() {	# VARIANT DIR RUN
	local recs pass
	[ "$(kv failed "$2/paced")" = 0 ] && [ "$(kv failed "$2/burst")" = 0 ] ||
		note "4: $1, run $3: FINs without an EOF: $(head -c 300 "$2/out" "$2/err")"
	[ "$(kv fds_held "$2/paced")" -ge "$DEFER_N" ] 2> /dev/null ||
		note "4: $1, run $3: $(kv fds_held "$2/paced") fds held after $DEFER_N closes"
	# once every connection ended, only the closer's epoll and eventfd and
	# the log (opened when the closer starts) may be left
	[ "$(kv fds_left "$2/out")" -le 3 ] 2> /dev/null ||
		note "4: $1, run $3: $(kv fds_left "$2/out") fds left open at the end"
	[ -f "$2/d.jsonl" ] || return 0
	recs=$(wc -l < "$2/d.jsonl")
	pass=$(grep -c '"policy":"defer".*"end":"passive"' "$2/d.jsonl")
	[ "$recs" = $((2 * DEFER_N)) ] && [ "$pass" = "$recs" ] ||
		note "4: run $3: $recs records, $pass deferred and passive;" \
			"expected $((2 * DEFER_N))"
	rm -f "$2/d.jsonl"
}

bench_defer() {
	local variants=(lib lib-nolog manual ${BEFORE:+before}) i v dir mem p99
	if [ $ROOT = 0 ]; then
		note "4: skipped: it needs root for its network namespaces (unshare -n)"
		return
	fi
	log "4: $DEFER_N deferred connections, $DEFER_REPS x per variant"
	for ((i = 0; i < DEFER_REPS; i++)); do
		for v in $(shuffle "${variants[@]}"); do
			dir=$TMP/defer-run.$v.$i
			defer_once $v "$dir"
			defer_check $v "$dir" $i
			# 1 bytes a connection, 2 close() CPU us, 3 closer thread CPU us a
			# connection, 4-5 paced p50 p99 us, 6-7 burst p50 p99 ms, 8 burst:
			# last FIN sent to last close, ms
			calc '%.1f %.2f %.2f %.1f %.1f %.1f %.1f %.1f' \
				'($2 - $1) / $9, $3 / $9 / 1000, $4 / $9 / 2000, $5, $6, $7 / 1000,
				 $8 / 1000, $10 / 1000' \
				"$(kv rss_start "$dir/paced")" "$(kv rss_deferred "$dir/paced")" \
				"$(kv close_cpu_ns "$dir/paced")" \
				"$(kv closer_thread_cpu_ns "$dir/out")" \
				"$(kv fin_to_close_p50_us "$dir/paced")" \
				"$(kv fin_to_close_p99_us "$dir/paced")" \
				"$(kv fin_to_close_p50_us "$dir/burst")" \
				"$(kv fin_to_close_p99_us "$dir/burst")" "$DEFER_N" \
				"$(kv last_fin_to_last_close_us "$dir/burst")" >> "$TMP/defer.$v"
		done
	done
	col() { median $(awk -v c=$2 '{ print $c }' "$TMP/defer.$1"); }
	mem=$(col lib 1)
	p99=$(col lib 5)
	row "4 memory" "library memory per deferred connection ($DEFER_N at once)" \
		"$(col manual 1)" "$mem" - "<= 128" "$(verdict "$mem" '<=' 128)" \
		"bytes (anonymous RSS growth / N)" \
		"\"runs_with\":$(jval "$(awk '{ print $1 }' "$TMP/defer.lib" | paste -sd';')")"
	row "4 close" "CPU time of the program's close()" "$(col manual 2)" "$(col lib 2)" \
		"$(calc '%.2f' '$2 / $1' "$(col manual 2)" "$(col lib 2)")" - - "us per call"
	row "4 closer" "CPU time of the closer thread per deferred connection" \
		"$(col manual 3)" "$(col lib 3)" \
		"$(calc '%.2f' '$2 / $1' "$(col manual 3)" "$(col lib 3)")" - - "us per connection"
	row "4 p50" "peer's FIN to the real close, one FIN at a time: p50" \
		"$(col manual 4)" "$(col lib 4)" - - - "us"
	row "4 p99" "peer's FIN to the real close, one FIN at a time: p99" \
		"$(col manual 5)" "$p99" - "< 1000" "$(verdict "$p99" '<' 1000)" "us"
	row "4 burst" "all $DEFER_N FINs at once: FIN to close p50 / p99; last FIN to last close" \
		"$(col manual 6) / $(col manual 7); $(col manual 8)" \
		"$(col lib 6) / $(col lib 7); $(col lib 8)" - - - "ms"
	[ -z "$BEFORE" ] || {
		row "4 close-before" "the same (4 close), BENCH_BEFORE's library" \
			"$(col manual 2)" "$(col before 2)" \
			"$(calc '%.2f' '$2 / $1' "$(col manual 2)" "$(col before 2)")" - - "us per call"
		row "4 closer-before" "the same (4 closer), BENCH_BEFORE's library" \
			"$(col manual 3)" "$(col before 3)" \
			"$(calc '%.2f' '$2 / $1' "$(col manual 3)" "$(col before 3)")" - - \
			"us per connection"
		row "4 p50-before" "the same (4 p50), BENCH_BEFORE's library" \
			"$(col manual 4)" "$(col before 4)" - - - "us"
		row "4 p99-before" "the same (4 p99), BENCH_BEFORE's library" \
			"$(col manual 5)" "$(col before 5)" - - - "us"
		row "4 burst-before" "the same (4 burst), BENCH_BEFORE's library" \
			"$(col manual 6) / $(col manual 7); $(col manual 8)" \
			"$(col before 6) / $(col before 7); $(col before 8)" - - - "ms"
	}
	detail "4: without = the program defers by itself (its own epoll thread, no library)." \
		"With log=none instead of a log file: closer thread $(col lib-nolog 3) us a" \
		"connection, FIN to close p50 $(col lib-nolog 4) us, p99 $(col lib-nolog 5) us." \
		"In the burst the peer's own FIN loop takes most of the time."
}

# ---------------------------------------------------------------- 5 --
# The record writer, called directly from 8 threads, against write() of the
# same line formatted once; instructions per record from callgrind.
bench_records() {
	local i m rec raw a b ir_record=null ir_raw=null ir_format=null ratios=()
	log "5: record throughput, $REC_REPS x ${REC_MS} ms per variant"
	for ((i = 0; i < REC_REPS; i++)); do
		for m in $(shuffle record raw); do
			"$OUT/records" $m 8 "$REC_MS" "$TMP/records.jsonl" > "$TMP/rec.out" 2>&1
			[ "$(kv bad_lines "$TMP/rec.out")" = 0 ] ||
				note "5: $m, run $i: $(kv bad_lines "$TMP/rec.out") lines" \
					"missing or cut"
			kv rate "$TMP/rec.out" > "$TMP/rec.$m.$i"
			kv rate "$TMP/rec.out" >> "$TMP/rec.$m"
		done
		ratios+=("$(calc '%.4f' '$1 / $2' "$(cat "$TMP/rec.record.$i")" \
			    "$(cat "$TMP/rec.raw.$i")")")
	done
	rec=$(median $(cat "$TMP/rec.record"))
	raw=$(median $(cat "$TMP/rec.raw"))
	row "5 rate" "records/s, 8 threads, one file" "$(calc '%.0f' '$1' "$raw")" \
		"$(calc '%.0f' '$1' "$rec")" "$(calc '%.3f' '$1' "$(median "${ratios[@]}")")" - - \
		"records/s; ratio: median over repetitions of with/without" \
		"\"rates_with\":$(jlist "$TMP/rec.record"),\
\"rates_without\":$(jlist "$TMP/rec.raw")"
	if command -v valgrind > /dev/null; then
		for m in record raw format; do
			for i in 1 2; do
				valgrind --tool=callgrind --callgrind-out-file="$TMP/cgr.$m.$i" \
					--toggle-collect=bench_record_one --collect-atstart=no \
					"$OUT/records" $m 0 $((i * 10000)) "$TMP/records.jsonl" \
					> /dev/null 2>&1
			done
			a=$(awk '/^summary:/ { print $2 }' "$TMP/cgr.$m.1")
			b=$(awk '/^summary:/ { print $2 }' "$TMP/cgr.$m.2")
			eval "ir_$m=\$(calc '%.0f' '(\$2 - \$1) / 10000' '$a' '$b')"
		done
		row "5 cost" "cost of one record" "$ir_raw" "$ir_record" \
			"$(calc '%+.0f' '$2 - $1' "$ir_raw" "$ir_record")" - - "user instructions"
		row "5 format" "of which record_format(): the JSON line alone" - "$ir_format" - \
			"< 1000" "$(verdict "$ir_format" '<' 1000)" "user instructions"
	fi
	detail "5: without = write() of the same line, formatted once; with = the library's" \
		"record writer (conn_record: JSON formatting, clock, one write() with O_APPEND);" \
		"5 format: record_format() alone, called in the same loop (records format)."
}

# ---------------------------------------------------------------- 6 --
# nginx (Debian's), one worker, keepalive_timeout 0 (it closes every
# connection first), access_log off, driven by wrk with 16 connections in a
# fresh namespace per run; the library is preloaded into nginx only. The
# worker's CPU time (utime + stime of all its threads, the library's closer
# included) per request, and requests a second.
nginx_opts() {	# VARIANT DIR
	case ${1%-before} in
	bare|bare2) echo - ;;
	log-none) echo "log=none" ;;
	log-file) echo "log=$2/n.jsonl" ;;
	defer) echo "close=defer" ;;
	esac
}

bench_nginx() {
	local variants=(bare bare2 log-none log-file defer) i v dir out cpu rps
	local cr rr desc target met
	[ -n "$BEFORE" ] && variants+=(log-file-before defer-before)
	if [ $ROOT = 0 ]; then
		note "6: skipped: it needs root for its network namespaces (unshare -n)"
		return
	fi
	if ! command -v nginx > /dev/null || ! command -v wrk > /dev/null; then
		note "6: skipped: nginx or wrk is not installed (scripts/deps bench installs them)"
		return
	fi
	log "6: nginx and wrk, $NGINX_REPS x ${NGINX_S} s per variant"
	for ((i = 0; i < NGINX_REPS; i++)); do
		for v in $(shuffle "${variants[@]}"); do
			dir=$TMP/nginx-run.$v.$i
			mkdir -p "$dir"
			BENCH_LIB=$(churn_lib $v) in_netns 1 1024 65535 "$SELF" --nginx "$dir" \
				"$(nginx_opts $v "$dir")" "$NGINX_S" "$NGINX_CONNS" > "$dir/out" \
				2> "$dir/err"
			out=$dir/out
			[ "$(kv requests "$out")" -gt 0 ] 2> /dev/null ||
				{ note "6: $v, run $i: no requests: $(head -c 300 "$dir/err")"; continue; }
			[ "$(kv bad "$out")" = 0 ] && [ "$(kv errors "$out")" = 0 ] ||
				note "6: $v, run $i: $(kv bad "$out") bad responses," \
					"$(kv errors "$out") socket errors"
			if [ ${v%-before} = log-file ] && [ "$(wc -l < "$dir/n.jsonl")" -lt "$(kv requests \
			     "$out")" ]; then
				note "6: run $i: $(wc -l < "$dir/n.jsonl") records for" \
					"$(kv requests "$out") requests"
			fi
			# worker CPU us a request; requests a second
			calc '%.2f %.1f' '$1 * 1000000 / $2 / $3, $3 / $4' "$(kv worker_ticks "$out")" \
				"$(kv hz "$out")" "$(kv requests "$out")" "$(kv elapsed_s "$out")" \
				> "$TMP/nginx.$v.$i"
			rm -f "$dir"/*.jsonl
		done
	done
	for v in "${variants[@]}"; do
		local cratios=() rratios=() bcpu brps
		: > "$TMP/ncpu.$v"
		: > "$TMP/nrps.$v"
		for ((i = 0; i < NGINX_REPS; i++)); do
			[ -s "$TMP/nginx.$v.$i" ] && [ -s "$TMP/nginx.bare.$i" ] || continue
			read -r cpu rps < "$TMP/nginx.$v.$i"
			read -r bcpu brps < "$TMP/nginx.bare.$i"
			echo "$cpu" >> "$TMP/ncpu.$v"
			echo "$rps" >> "$TMP/nrps.$v"
			cratios+=("$(calc '%.4f' '$1 / $2' "$cpu" "$bcpu")")
			rratios+=("$(calc '%.4f' '$1 / $2' "$rps" "$brps")")
		done
		[ $v = bare ] && continue
		cr=$(calc '%.3f' '$1' "$(median "${cratios[@]}")")
		rr=$(calc '%.3f' '$1' "$(median "${rratios[@]}")")
		case $v in
		*-before) target=-; desc="${v%-before}, the library of BENCH_BEFORE" ;;
		bare2) target=-; desc="A/A: no library in either run" ;;
		log-none) target=-; desc="log=none (nothing tracked)" ;;
		log-file) target="<= 1.05"; desc="log=FILE" ;;
		defer) target="<= 1.10"; desc="close=defer on the server (log=none)" ;;
		esac
		met=-
		[ "$target" = - ] || met=$(verdict "$cr" '<=' "${target#<= }")
		row "6 $v" "nginx worker CPU per request; requests/s: $desc" \
			"$(median $(cat "$TMP/ncpu.bare")); $(calc '%.0f' '$1' \
			"$(median $(cat "$TMP/nrps.bare"))")" \
			"$(median $(cat "$TMP/ncpu.$v")); $(calc '%.0f' '$1' \
			"$(median $(cat "$TMP/nrps.$v"))")" "$cr; $rr" "$target" "$met" \
			"us per request, requests/s; ratios: median over repetitions of with/without" \
			"\"cpu_us_per_request_with\":$(jlist "$TMP/ncpu.$v"),\
\"cpu_us_per_request_without\":$(jlist "$TMP/ncpu.bare"),\"requests_per_s_with\":$(jlist \
"$TMP/nrps.$v"),\"requests_per_s_without\":$(jlist "$TMP/nrps.bare"),\
\"cpu_ratio\":$(jval "$cr"),\"requests_per_s_ratio\":$(jval "$rr")"
	done
	detail "6: nginx $(nginx -v 2>&1 | cut -d/ -f2), 1 worker, keepalive_timeout 0," \
		"access_log off; wrk $NGINX_CONNS connections, ${NGINX_S} s a run, $NGINX_REPS" \
		"runs per variant; only nginx preloaded. Worker CPU: utime + stime from" \
		"/proc/PID/stat (every thread, the closer's too; $(getconf CLK_TCK) ticks a" \
		"second) over the wrk run, divided by its requests. Under defer the clients hold" \
		"the TIME_WAIT, which costs them too: requests/s shows it."
}

# ---------------------------------------------------------------- 7 --
# Defer that pays off. Short-lived clients: ten runs of tw-client, one
# connection each, against a server that never closes first, without the
# library and under close=defer,fallback=abort: the program does not wait
# for its deferred connection (the holder process does). Exhaustion: 300
# connections through 20 ephemeral ports to a server that closes 50 ms
# after its reply: the client is faster than the server's close, and a
# connect that lacks a port waits for a deferred connection to end.
bench_pays() {
	local i v opts base with ratio okb okw
	if [ $ROOT = 0 ]; then
		note "7: skipped: it needs root for its network namespaces (unshare -n)"
		return
	fi
	log "7: defer that pays off, $PAYS_REPS x 10 short-lived runs per variant"
	for ((i = 0; i < PAYS_REPS; i++)); do
		for v in $(shuffle none normal defer); do
			opts=-
			[ $v = normal ] && opts=close=normal
			[ $v = defer ] && opts=close=defer,fallback=abort
			in_netns 0 40000 40099 "$SELF" --pays "$B" short "$opts" > "$TMP/pays.out"
			kv ms "$TMP/pays.out" >> "$TMP/pays.$v"
		done
	done
	base=$(median $(cat "$TMP/pays.none"))
	with=$(median $(cat "$TMP/pays.defer"))
	ratio=$(calc '%.2f' '$2 / $1' "$base" "$with")
	row "7 short" "ten short-lived client runs against a keep-alive server, close=defer,fallback=abort" \
		"$base" "$with" "$ratio" "<= 1.1" "$(calc '%s' '$1 <= 1.1 ? "yes" : "no"' "$ratio")" \
		"ms (median of $PAYS_REPS); ratio: with/without" \
		"\"runs_without\":$(jlist "$TMP/pays.none"),\"runs_with\":$(jlist "$TMP/pays.defer")"
	detail "7: the same ten runs with the library loaded and close=normal:" \
		"$(median $(cat "$TMP/pays.normal")) ms (what loading the library costs a short" \
		"program; defer adds the hand-off to the holder, a fork, to it)."
	in_netns 0 40000 40019 "$SELF" --pays "$B" exhaust - > "$TMP/pays-exh.none"
	in_netns 0 40000 40019 "$SELF" --pays "$B" exhaust close=defer > "$TMP/pays-exh.defer"
	okb=$(kv ok "$TMP/pays-exh.none")
	okw=$(kv ok "$TMP/pays-exh.defer")
	row "7 exhaust" "connections that succeed of 300 through 20 ports, the server closing 50 ms after its reply, close=defer" \
		"$okb" "$okw" "$((okw - okb))" "300" "$([ "$okw" = 300 ] && echo yes || echo no)" \
		"connections; extra: with - without"
}

# ---------------------------------------------------------------- run --
machine() {
	local cpu glibc
	cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
	glibc=$(ldd --version 2> /dev/null | head -1 | awk '{ print $NF }')
	echo "$(nproc) CPUs ($cpu), Linux $(uname -r), glibc $glibc"
}

RANDOM=${BENCH_SEED:-1}	# the same orders every time
START=$(date +%s)
log "twshim benchmarks: $(machine)"
[ $ROOT = 1 ] || log "not root: sections 2, 3, 4, 6 and 7 need network namespaces and are skipped"
for section in ${BENCH_ONLY:-1 2 3 4 5 6 7}; do
	case $section in
	1) bench_close ;;
	2) bench_churn ;;
	3) bench_exhaust ;;
	4) bench_defer ;;
	5) bench_records ;;
	6) bench_nginx ;;
	7) bench_pays ;;
	*) note "BENCH_ONLY: there is no section '$section' (1 to 7)" ;;
	esac
done
ELAPSED=$(($(date +%s) - START))

echo
echo "twshim benchmarks: $(machine); ${ELAPSED} s"
echo
echo "| # | measure | unit | without library | with library | ratio / extra | target | met |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for j in "${!ROWS[@]}"; do
	IFS='|' read -r id m wo w ra t me <<< "${ROWS[$j]}"
	unit=$(printf '%s' "${JSON[$j]}" | grep -o '"unit":"[^"]*"' | cut -d'"' -f4 | cut -d';' -f1)
	echo "| $id | $m | $unit | $wo | $w | $ra | $t | $me |"
done
echo
for d in "${DETAILS[@]}"; do
	echo "- $d"
done
for n in "${NOTES[@]}"; do
	echo "- note: $n"
done
echo
echo "JSON: $OUT/results.json"

{
	printf '{"machine":%s,"date":"%s","elapsed_s":%s,"root":%s,' "$(jval "$(machine)")" \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ELAPSED" \
		"$([ $ROOT = 1 ] && echo true || echo false)"
	printf '"settings":{"churn_reps":%s,"churn_ms":%s,"exhaust_reps":%s,"exhaust_ms":%s,' \
		"$REPS" "$CHURN_MS" "$EXH_REPS" "$EXH_MS"
	printf '"defer_n":%s,"defer_reps":%s,"record_reps":%s,"record_ms":%s,' \
		"$DEFER_N" "$DEFER_REPS" "$REC_REPS" "$REC_MS"
	printf '"nginx_reps":%s,"nginx_s":%s,"nginx_connections":%s},' "$NGINX_REPS" \
		"$NGINX_S" "$NGINX_CONNS"
	printf '"figures":[%s],' "$(IFS=,; printf '%s' "${JSON[*]}")"
	printf '"details":['
	sep=
	for d in "${DETAILS[@]}"; do
		printf '%s%s' "$sep" "$(jval "$d")"
		sep=,
	done
	printf '],"notes":['
	sep=
	for n in "${NOTES[@]}"; do
		printf '%s%s' "$sep" "$(jval "$n")"
		sep=,
	done
	printf ']}\n'
} > "$OUT/results.json"
