#!/usr/bin/env bash
# Supervision: tori-run's supervisor side by side with supervisord, s6 and
# runit (and a bare Go fork/exec/wait loop as the anchor), in one run:
#   1. restart latency of a service that exits with status 1 at once;
#   2. footprint (PSS, RSS) of the supervisor's own processes with 100 services;
#   3. their wakeups over IDLE_SECS of idle with those 100 services.
# See docs/PERFORMANCE.md, "Supervision", for the method and the last results.
#
# Usage (as root, from anywhere): bench/supervise/bench.sh
#   RESTARTS=300        restarts measured for tori-run and the Go anchor (at least 200), after WARM=20
#   SLOW_RESTARTS=200   restarts measured for supervisord, s6 and runit (~1 s each: they run concurrently)
#   SERVICES=100        services for the footprint and idle phases
#   IDLE_SECS=60        idle window
#   MAX_LOAD=1.5        wait (up to LOAD_WAIT=180 s) for the 1-min load to fall below this
#   OUT=bench/supervise/results
#   TORI_BIN=path       use this tori-run instead of building bin/tori-run
#   SHORT=1             a few runs of everything (seconds; what make test runs): RESTARTS=20 WARM=2
#                       SLOW_RESTARTS=2 SERVICES=10 IDLE_SECS=3, no wait for the load, results in a
#                       temporary folder unless OUT is set; an anchor that cannot run is skipped, saying why
#
# It installs supervisor, s6, runit (and gcc, python3) with apt-get when
# missing and runs them by hand, never as system services; builds
# bin/tori-run and works on a private copy in a temporary folder with
# TORI_ROOT/TORI_RUN_DIR/TORI_STATE_ROOT inside it (/opt/tori, /run/tori are
# not touched). Every process it starts is tracked by pid; at the end it fails
# if any of them, any process under its folder, a tori instance or a mount is
# left.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SHORT=${SHORT:-0}
if ((SHORT)); then
	RESTARTS=${RESTARTS:-20} WARM=${WARM:-2} SLOW_RESTARTS=${SLOW_RESTARTS:-2} SERVICES=${SERVICES:-10}
	IDLE_SECS=${IDLE_SECS:-3} LOAD_WAIT=${LOAD_WAIT:-0}
fi
RESTARTS=${RESTARTS:-300}
WARM=${WARM:-20}
SLOW_RESTARTS=${SLOW_RESTARTS:-200}
SERVICES=${SERVICES:-100}
IDLE_SECS=${IDLE_SECS:-60}
MAX_LOAD=${MAX_LOAD:-1.5}
LOAD_WAIT=${LOAD_WAIT:-180}
OUT=${OUT:-}
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (capsules need namespaces, mounts and cgroups)"
((SHORT || RESTARTS >= 200)) || die "RESTARTS=$RESTARTS: at least 200 (SHORT=1 for a quick check)"

# --- 1. tools ---------------------------------------------------------------
missing=()
for t in supervisord:supervisor s6-svscan:s6 runsvdir:runit gcc:gcc python3:python3; do
	command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[[ -e /usr/lib/x86_64-linux-gnu/libc.a || -e /usr/lib/libc.a ]] || missing+=(libc6-dev)
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get update -qq
	# policy-rc.d / no init: the packages' own services are not started; we check below anyway.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# TORI_BIN=path uses that binary instead. If the build fails (others may be
# mid-edit) an existing bin/tori-run is used, and meta.txt says so.
tori_src=${TORI_BIN:-}
if [[ -z $tori_src ]]; then
	log "make build"
	if make -C "$repo" build >/dev/null; then
		tori_src=$repo/bin/tori-run
	elif [[ -x $repo/bin/tori-run ]]; then
		log "make build failed: using the existing bin/tori-run"
		tori_src=$repo/bin/tori-run
		tori_note="make build failed; used the existing bin/tori-run, built $(date -u -r "$tori_src" +%FT%TZ)"
	else
		die "make build failed"
	fi
fi

# --- the work folder, the pids we start, and the cleanup ------------------------
work=$(mktemp -d /tmp/tori-bench-sup.XXXXXX)
# Short runs report into the work folder (removed at the end) unless OUT is set.
if [[ -z $OUT ]]; then if ((SHORT)); then OUT=$work/results; else OUT=$here/results; fi; fi
mkdir -p "$work/bin" "$work/stamps" "$work/raw" "$work/out" "$OUT"
tracked=() # every process this script starts in the background (top of its tree)

children() { # pid: its children's pids
	ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}
tree() { # pid: it and its descendants, deepest last
	local c
	[[ -d /proc/$1 ]] || return 0
	echo "$1"
	for c in $(children "$1"); do tree "$c"; done
}
alive() { [[ -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
wait_gone() { # timeout-seconds pid...: wait for the pids to end (or be zombies)
	local t=$1 p left
	shift
	for ((i = 0; i < t * 10; i++)); do
		left=0
		for p in "$@"; do alive "$p" && left=1; done
		((left)) || return 0
		sleep 0.1
	done
	return 1
}
start_bg() { # logfile cmd...: start in the background, track the pid (in $bgpid)
	local lf=$1
	shift
	"$@" >"$lf" 2>&1 &
	bgpid=$!
	tracked+=("$bgpid")
}
kill_tree() { # pid: SIGKILL it and every descendant (last resort)
	local p
	for p in $(tree "$1"); do kill -KILL "$p" 2>/dev/null || true; done
}
leftovers() {
	local p
	for p in "${tracked[@]}"; do alive "$p" && echo "process: $p $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" 2>/dev/null)"; done
	for p in /proc/[0-9]*; do
		[[ $p == /proc/$$ || $p == /proc/$BASHPID ]] && continue
		if tr "\\0" " " 2>/dev/null <"$p/cmdline" | grep -qF "$work"; then
			echo "process: ${p#/proc/} $(tr '\0' ' ' 2>/dev/null <"$p/cmdline" 2>/dev/null)"
		fi
	done
	grep -F " $work" /proc/self/mountinfo | awk '{ print "mount: " $5 }'
	ls -A "$work/root/instances" 2>/dev/null | sed 's/^/tori instance: /'
	ls -A "$work/run/containers" 2>/dev/null | sed 's/^/libcontainer state: /'
	true
}
cleanup() {
	local rc=$? p
	set +e
	# Graceful first (tori-run removes its instance on SIGTERM), then SIGKILL whatever is left of each tree.
	for p in "${tracked[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
	wait_gone 20 "${tracked[@]}" 2>/dev/null
	for p in "${tracked[@]}"; do kill_tree "$p"; done
	wait 2>/dev/null
	# A tori-run killed above leaves its instance (mounts, cgroups, an
	# orphaned init): a foreground run of a /bin/true capsule sweeps every
	# instance whose runner is gone, as any later run would.
	if [[ -n $(ls -A "$work/root/instances" 2>/dev/null) && -x ${tori:-} ]]; then
		mkdir -p "$work/apps/sweep"
		printf 'name: supsweep\nversion: "1.0.0"\nservices:\n  t:\n    command: /bin/true\n' >"$work/apps/sweep/capsule.yml"
		for rec in "$work"/root/instances/*/instance.json; do # daemon-owned ones too: this run is over
			[[ -f $rec ]] && sed -i 's/"owner": "daemon"/"owner": "run"/' "$rec"
		done
		"$tori" run "$work/apps/sweep" --log-level error >/dev/null 2>&1
	fi
	local left
	left=$(leftovers)
	if [[ -n $left ]]; then
		echo "bench: left behind:" >&2
		echo "$left" >&2
		grep -qF " $work" /proc/self/mountinfo || [[ -n $(ls -A "$work/root/instances" 2>/dev/null) ]] ||
			rm -rf "$work"
		((rc)) || rc=1
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: other builds may replace bin/tori-run while this runs.
cp "$tori_src" "$work/bin/tori-run"
tori=$work/bin/tori-run
export TORI_ROOT=$work/root TORI_RUN_DIR=$work/run TORI_STATE_ROOT=$work/state
gcc -O2 -static -o "$work/bin/stamp" "$here/stamp/stamp.c"
(cd "$repo" && go build -o "$work/bin/forkloop" ./bench/supervise/forkloop)
cp /bin/sleep "$work/bin/sleep" # so that the anchors' idle services are recognisable as ours
stamp=$work/bin/stamp

# --- load ---------------------------------------------------------------------
load1() { awk '{ print $1 }' /proc/loadavg; }
wait_load() {
	local i
	for ((i = 0; i < LOAD_WAIT; i += 5)); do
		awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l < m) }' && return 0
		((i == 0)) && log "waiting for the load ($(load1)) to fall below $MAX_LOAD (up to ${LOAD_WAIT}s)"
		sleep 5
	done
	log "load still $(load1): going on, noted in the results"
}
note_load() { echo "$1 $(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/raw/load.txt"; }

lines() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }
wait_lines() { # file n timeout-seconds: wait until file has n lines
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		(($(lines "$1") >= $2)) && return 0
		sleep 0.1
	done
	die "$1: $(lines "$1") lines after $3 s, wanted $2"
}

# --- 2. restart latency ---------------------------------------------------------
fast_n=$((RESTARTS + WARM + 1))

wait_load
note_load restart-fast
log "restart latency: Go fork/exec/wait anchor ($fast_n runs)"
"$work/bin/forkloop" -n "$fast_n" -internal "$work/raw/forkloop.internal" "$stamp" "$work/stamps/forkloop"

# tori-run: the same stamp program, in a capsule, restart: always, backoff.initial 0, no limit.
crash_app() { # dir name stampfile-in-capsule
	mkdir -p "$1"
	cp "$stamp" "$1/stamp"
	cat >"$1/capsule.yml" <<EOF
name: $2
version: "1.0.0"
volumes: ["$work/stamps:/stamps"]
services:
  crash:
    command: /app/stamp /stamps/$3
    restart: always
    backoff: { initial: 0s, max: 0s, reset_after: 1h }
    max_restarts: 0
EOF
}
tori_stop() { # pid: SIGTERM a tori-run process and wait for it (it removes its instance)
	kill -TERM "$1" 2>/dev/null || true
	wait_gone 30 "$1" || die "tori-run $1 did not stop within 30 s"
	wait "$1" 2>/dev/null || true
}

log "restart latency: tori-run daemon + events ($fast_n restarts)"
crash_app "$work/apps/crash" supcrash tori-daemon
"$tori" build --from-dir "$work/apps/crash" --manifest "$work/apps/crash/capsule.yml" --output-dir "$work/out" >"$work/raw/build.log" 2>&1 || die "tori-run build failed: $(cat "$work/raw/build.log")"
"$tori" install "$work"/out/capsule-supcrash-*.tar.gz >"$work/raw/install.log" 2>&1 || die "tori-run install failed: $(cat "$work/raw/install.log")"
sock=$work/tori.sock
start_bg "$work/raw/daemon.log" "$tori" daemon --socket "$sock" --allow-volume "$work/stamps"
daemon=$bgpid
for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || die "the daemon's socket did not appear"
start_bg "$work/raw/tori-daemon.events.jsonl" "$tori" events --json --socket "$sock"
events=$bgpid
sleep 0.5
"$tori" enable supcrash --socket "$sock" --allow-volume "$work/stamps" >/dev/null
wait_lines "$work/stamps/tori-daemon" "$fast_n" 120
"$tori" disable supcrash --socket "$sock" >/dev/null
sleep 0.5
"$tori" status --json --socket "$sock" >"$work/raw/tori-daemon.status.json" 2>&1 || true
kill -TERM "$events" 2>/dev/null || true
wait "$events" 2>/dev/null || true
tori_stop "$daemon"

log "restart latency: tori-run run, foreground ($fast_n restarts)"
crash_app "$work/apps/crashrun" supcrashrun tori-run
start_bg "$work/raw/tori-run.log" "$tori" run "$work/apps/crashrun" --allow-volume "$work/stamps"
run=$bgpid
wait_lines "$work/stamps/tori-run" "$fast_n" 120
tori_stop "$run"

# The anchors wait ~1 s between restarts: they run concurrently (each is idle
# ~99.9% of the time). "-long": a service that lives 1.1 s before exiting (and,
# under s6, signals readiness at start), to show their restart path without
# the 1-second floor.
slow_n=$((SLOW_RESTARTS + 1))
mk_supervisord() { # name sleep_ms command... (one program, or SERVICES programs with "many")
	local d=$work/supervisord-$1 ms=$2
	shift 2
	mkdir -p "$d/logs"
	{
		printf '[supervisord]\nnodaemon=true\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\nchildlogdir=%s/logs\n' "$d" "$d" "$d"
		if [[ $1 == many ]]; then
			for ((i = 1; i <= SERVICES; i++)); do
				printf '\n[program:s%03d]\ncommand=%s 3600\nautorestart=true\nstartsecs=0\n' "$i" "$work/bin/sleep"
			done
		else
			printf '\n[program:crash]\ncommand=%s\nautorestart=true\nstartsecs=0\nstartretries=1000000\nenvironment=STAMP_SLEEP_MS="%s"\n' "$*" "$ms"
		fi
	} >"$d/supervisord.conf"
	echo "$d/supervisord.conf"
}
mk_svc() { # scandir name: a service dir whose run is the stamp program itself (writes $STAMP_FILE)
	mkdir -p "$1/$2"
	ln -s "$stamp" "$1/$2/run"
}

declare -A slow_pid slow_file
start_slow() { # name logfile stampfile cmd...
	local name=$1 lf=$2 sf=$3
	shift 3
	start_bg "$lf" "$@"
	slow_pid[$name]=$bgpid
	slow_file[$name]=$sf
}
wait_load
note_load restart-slow
log "restart latency: supervisord, s6, runit, each with and without the 1 s floor ($slow_n restarts, ~$((slow_n * 11 / 10)) s)"
for v in floor:0 long:1100; do
	name=${v%%:*} ms=${v#*:}
	conf=$(mk_supervisord "$name" "$ms" "$stamp" "$work/stamps/supervisord-$name")
	start_slow "supervisord-$name" "$work/raw/supervisord-$name.log" "$work/stamps/supervisord-$name" supervisord -c "$conf"
	mk_svc "$work/s6-$name" crash
	notify=
	if [[ $name == long ]]; then
		# s6-supervise waits 1 s after a death unless the service signalled readiness more than
		# a second before: the long-lived service signals it at start (notification-fd).
		echo 3 >"$work/s6-$name/crash/notification-fd"
		notify=3
	fi
	start_slow "s6-$name" "$work/raw/s6-$name.log" "$work/stamps/s6-$name" env STAMP_SLEEP_MS="$ms" STAMP_NOTIFY_FD="$notify" STAMP_FILE="$work/stamps/s6-$name" s6-svscan "$work/s6-$name"
	mk_svc "$work/runit-$name" crash
	start_slow "runit-$name" "$work/raw/runit-$name.log" "$work/stamps/runit-$name" env STAMP_SLEEP_MS="$ms" STAMP_FILE="$work/stamps/runit-$name" runsvdir "$work/runit-$name"
done
stop_anchor() { # kind pid: stop a supervisor tree the way it is meant to be stopped
	case $1 in
	s6*) kill -TERM "$2" ;; # s6-svscan: like s6-svscanctl -t, brings down the supervisors and their services
	runit*) kill -HUP "$2" ;; # runsvdir: TERM to every runsv, which stop their service, then exits
	*) kill -TERM "$2" ;;  # supervisord: stops its programs and exits
	esac 2>/dev/null || true
	if ! wait_gone 20 $(tree "$2"); then
		log "$1: still running after 20 s; killing its tree"
		kill_tree "$2"
	fi
	wait "$2" 2>/dev/null || true
}
deadline=$((SECONDS + slow_n * 4 + 60))
while ((${#slow_pid[@]})); do
	for name in "${!slow_pid[@]}"; do
		if (($(lines "${slow_file[$name]}") >= slow_n)); then
			stop_anchor "$name" "${slow_pid[$name]}"
			cp "${slow_file[$name]}" "$work/stamps/$name.slow"
			unset "slow_pid[$name]"
		elif ((SECONDS > deadline)); then
			log "$name: only $(lines "${slow_file[$name]}") restarts before the deadline"
			stop_anchor "$name" "${slow_pid[$name]}"
			cp "${slow_file[$name]}" "$work/stamps/$name.slow" 2>/dev/null || true
			unset "slow_pid[$name]"
		fi
	done
	sleep 1
done

# --- 3. footprint and idle wakeups, one supervisor at a time ------------------------
# procs(kind top-pid): the supervisor's own processes (never the services).
procs() {
	case $1 in
	tori-run | tori-1 | tori-daemon) echo "$2"; children "$2" | while read -r c; do
		grep -qa capsule-init "/proc/$c/cmdline" 2>/dev/null && echo "$c"; done ;;
	supervisord) echo "$2" ;;
	s6 | runit) echo "$2"; children "$2" ;; # s6-svscan + s6-supervise; runsvdir + runsv
	esac
}
services_up() { # kind top-pid: how many services run
	local n=0 p
	for p in $(procs "$1" "$2"); do n=$((n + $(children "$p" | while read -r c; do
		grep -qa -e sleep "/proc/$c/cmdline" 2>/dev/null && echo; done | wc -l))); done
	echo "$n"
}
snapshot() { # kind top-pid label: PSS/RSS/threads/ctx switches of each supervisor process
	local p t role=top
	for p in $(procs "$1" "$2"); do
		printf '%s %s %s pid=%s comm=%s role=%s' "$1" "$3" "$(date +%s.%N)" "$p" "$(cat "/proc/$p/comm")" "$role"
		role=child
		awk '/^(Rss|Pss|Pss_Anon|Pss_File|Anonymous):/ { printf " %s=%s", substr($1, 1, length($1) - 1), $2 }' "/proc/$p/smaps_rollup"
		awk '/^Threads:/ { printf " threads=%s", $2 }' "/proc/$p/status"
		printf ' fds=%s' "$(ls "/proc/$p/fd" | wc -l)"
		for t in /proc/"$p"/task/*; do
			awk -v t="${t##*/}" '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { printf " task%s=%s,%s", t, v, n }' "$t/status"
		done
		echo
	done >>"$work/raw/footprint.txt"
}
measure() { # kind top-pid idle-seconds
	local i
	for ((i = 0; i < 600; i++)); do
		(($(services_up "$1" "$2") >= want)) && break
		sleep 0.1
	done
	(($(services_up "$1" "$2") >= want)) || die "$1: only $(services_up "$1" "$2") of $want services up after 60 s"
	sleep 5 # let start-up settle
	note_load "idle-$1"
	snapshot "$1" "$2" before
	if (($3 > 0)); then
		sleep "$3"
		snapshot "$1" "$2" after
	fi
}

idle_app=$work/apps/idle
mkdir -p "$idle_app"
{
	printf 'name: supidle\nversion: "1.0.0"\nservices:\n'
	for ((i = 1; i <= SERVICES; i++)); do printf '  s%03d:\n    command: /bin/sleep 3600\n' "$i"; done
} >"$idle_app/capsule.yml"
one_app=$work/apps/one
mkdir -p "$one_app"
printf 'name: supone\nversion: "1.0.0"\nservices:\n  s001:\n    command: /bin/sleep 3600\n' >"$one_app/capsule.yml"

wait_load
want=$SERVICES
log "footprint + ${IDLE_SECS}s idle: tori-run run, $SERVICES services"
start_bg "$work/raw/idle-tori-run.log" "$tori" run "$idle_app"
p=$bgpid
measure tori-run "$p" "$IDLE_SECS"
tori_stop "$p"

want=1
log "footprint: tori-run run, 1 service (for the cost per service)"
start_bg "$work/raw/idle-tori-1.log" "$tori" run "$one_app"
p=$bgpid
measure tori-1 "$p" 0
tori_stop "$p"

want=$SERVICES
log "footprint + ${IDLE_SECS}s idle: tori-run daemon, one capsule of $SERVICES services"
"$tori" build --from-dir "$idle_app" --manifest "$idle_app/capsule.yml" --output-dir "$work/out" >"$work/raw/build.log" 2>&1 || die "tori-run build failed: $(cat "$work/raw/build.log")"
"$tori" install "$work"/out/capsule-supidle-*.tar.gz >"$work/raw/install.log" 2>&1 || die "tori-run install failed: $(cat "$work/raw/install.log")"
start_bg "$work/raw/idle-daemon.log" "$tori" daemon --socket "$sock"
p=$bgpid
for ((i = 0; i < 100; i++)); do [[ -S $sock ]] && break; sleep 0.1; done
"$tori" enable supidle --socket "$sock" >/dev/null
measure tori-daemon "$p" "$IDLE_SECS"
"$tori" disable supidle --socket "$sock" >/dev/null
tori_stop "$p"

log "footprint + ${IDLE_SECS}s idle: supervisord, $SERVICES programs"
conf=$(mk_supervisord idle 0 many)
start_bg "$work/raw/idle-supervisord.log" supervisord -c "$conf"
p=$bgpid
measure supervisord "$p" "$IDLE_SECS"
stop_anchor supervisord "$p"

mk_sleep_svc() { # dir
	mkdir -p "$1"
	printf '#!/bin/sh\nexec %s 3600\n' "$work/bin/sleep" >"$1/run"
	chmod +x "$1/run"
}
log "footprint + ${IDLE_SECS}s idle: s6-svscan, $SERVICES s6-supervise"
for ((i = 1; i <= SERVICES; i++)); do mk_sleep_svc "$work/s6-idle/s$i"; done
start_bg "$work/raw/idle-s6.log" s6-svscan "$work/s6-idle"
p=$bgpid
measure s6 "$p" "$IDLE_SECS"
stop_anchor s6 "$p"

log "footprint + ${IDLE_SECS}s idle: runsvdir, $SERVICES runsv"
for ((i = 1; i <= SERVICES; i++)); do mk_sleep_svc "$work/runit-idle/s$i"; done
start_bg "$work/raw/idle-runit.log" runsvdir "$work/runit-idle"
p=$bgpid
measure runit "$p" "$IDLE_SECS"
stop_anchor runit "$p"

# --- 4. results -------------------------------------------------------------------
{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "cgroup: $(stat -fc %T /sys/fs/cgroup)"
	echo "tori-run: $("$tori" version 2>/dev/null | head -1) ${tori_note:-}"
	echo "supervisord: $(supervisord --version 2>&1)"
	echo "s6: $(dpkg-query -W -f '${Version}' s6 2>/dev/null)"
	echo "runit: $(dpkg-query -W -f '${Version}' runit 2>/dev/null)"
	echo "go: $(go version)"
	echo "knobs: RESTARTS=$RESTARTS WARM=$WARM SLOW_RESTARTS=$SLOW_RESTARTS SERVICES=$SERVICES IDLE_SECS=$IDLE_SECS"
	echo "load (phase, time, 1/5/15 min):"
	sed 's/^/  /' "$work/raw/load.txt"
} >"$OUT/meta.txt"
rm -rf "$OUT/raw"
cp -r "$work/raw" "$OUT/raw"
mkdir -p "$OUT/raw/stamps"
cp "$work/stamps/forkloop" "$work/stamps/tori-daemon" "$work/stamps/tori-run" "$work"/stamps/*.slow "$OUT/raw/stamps/"
rm -f "$OUT/raw/daemon.log" "$OUT/raw/tori-run.log" # thousands of transition lines; not needed
SERVICES=$SERVICES IDLE_SECS=$IDLE_SECS "$PY" "$here/report.py" "$OUT" "$WARM" | tee "$OUT/summary.md"

left=$(leftovers)
[[ -z $left ]] || die "left behind: $left"
log "done; nothing left running"
