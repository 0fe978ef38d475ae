#!/usr/bin/env bash
# Capsule start and stop: tori-run side by side with runc and crun running an
# equivalent bundle, in the same run. See docs/PERFORMANCE.md for what it
# measures and the last results.
#
# Usage (as root, from anywhere): bench/start/bench.sh
#   RUNS=40 WARMUP=3      hyperfine runs of each command (at least 30)
#   SS_RUNS=30            rounds of the start-to-ready / stop harness
#   STRACE_RUNS=10        traced tori-run runs for the phase breakdown (0: skip)
#   MAX_LOAD=1.5          wait (up to LOAD_WAIT=180 s) for the 1-min load to fall below this
#   OUT=bench/start/results
#   TORI_BIN=path         use this tori-run instead of running make build
#   SHORT=1               a few runs of everything (seconds; what make test runs): RUNS=3 WARMUP=1
#                         SS_RUNS=2 STRACE_RUNS=1, no wait for the load, no hyperfine, results in the
#                         work folder unless OUT is set. An anchor that cannot run here (crun) is
#                         reported and skipped, with the reason, never faked.
#
# It installs hyperfine, runc and crun (and strace) with apt-get when missing,
# builds bin/tori-run, works in a temporary folder, never touches /opt/tori or
# /run/tori, and fails if any container, cgroup, mount, process or temporary
# folder of its own is left behind.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SHORT=${SHORT:-0}
if ((SHORT)); then
	RUNS=${RUNS:-3} WARMUP=${WARMUP:-1} SS_RUNS=${SS_RUNS:-2} STRACE_RUNS=${STRACE_RUNS:-1} LOAD_WAIT=${LOAD_WAIT:-0}
fi
RUNS=${RUNS:-40}
WARMUP=${WARMUP:-3}
SS_RUNS=${SS_RUNS:-30}
STRACE_RUNS=${STRACE_RUNS:-10}
MAX_LOAD=${MAX_LOAD:-1.5}
LOAD_WAIT=${LOAD_WAIT:-180}
OUT=${OUT:-}
PY=/usr/bin/python3 # not a pyenv shim: its start-up would not matter, but its environment might
[[ -x $PY ]] || PY=python3

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (containers, mounts and cgroups)"
((SHORT || RUNS >= 30)) || die "RUNS=$RUNS: at least 30 (SHORT=1 for a quick check)"

# --- 1. tools ---------------------------------------------------------------
missing=()
for t in hyperfine:hyperfine runc:runc crun:crun strace:strace unshare:util-linux jq:jq; do
	command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. tori-run --------------------------------------------------------------
tori_src=${TORI_BIN:-}
if [[ -z $tori_src ]]; then
	log "make build"
	make -C "$repo" build >/dev/null
	tori_src=$repo/bin/tori-run
fi

# --- the work folder, and what must be gone at the end ------------------------
work=$(mktemp -d /tmp/tori-bench-start.XXXXXX)
tag=toribench-$$ # the runc/crun cgroup parent
capsule=startbench # tori-run's instances are startbench-<hex>
memcg=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
cg_roots() { # every mounted cgroup hierarchy, v1 and v2
	awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}
# Our leftovers: cgroups named after this run, mounts and processes under the
# work folder, containers in our state roots. The runc/crun cgroup parent
# ($tag) stays between runs (they remove only their container's own cgroup);
# `leftovers ""` counts it too.
leftovers() {
	local r
	for r in $(cg_roots); do
		find "$r" -maxdepth 7 -type d \( -path "*/$tag${1:-/*}" -o -name "$capsule-*" \) 2>/dev/null | sed 's/^/cgroup: /'
	done
	grep -F " $work" /proc/self/mountinfo | awk '{ print "mount: " $5 }'
	local p
	for p in /proc/[0-9]*; do
		[[ $p == /proc/$$ || $p == /proc/$BASHPID ]] && continue
		if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$work"; then
			echo "process: ${p#/proc/} $(tr '\0' ' ' 2>/dev/null <"$p/cmdline")"
		fi
	done
	ls -A "$work/tori-root/instances" 2>/dev/null | sed 's/^/tori instance: /'
	ls -A "$work/tori-run/containers" 2>/dev/null | sed 's/^/libcontainer state: /'
	ls -A "$work/runc-state" 2>/dev/null | sed 's/^/runc container: /'
	ls -A "$work/crun-state" 2>/dev/null | grep -v '^\.' | sed 's/^/crun container: /'
	true
}
# The "tori" cgroup parent tori-run makes is removed by the last instance
# that leaves it; one left here that was not here before is ours.
tori_parents() { for r in $(cg_roots); do [[ -d $r/tori ]] && echo "$r/tori"; done; [[ -z $memcg || ! -d /sys/fs/cgroup/memory$memcg/tori ]] || echo "/sys/fs/cgroup/memory$memcg/tori"; true; }
tori_before=$(tori_parents | sort -u)

# runc's and crun's leaf cgroups go with their containers; the parent is ours.
remove_tag_cgroups() {
	local r d
	for r in $(cg_roots); do
		find "$r" -maxdepth 6 -depth -type d -name "$tag" 2>/dev/null | while read -r d; do
			find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
		done
	done
	true
}

cleanup() {
	local rc=$?
	set +e
	if [[ -n ${neighbour:-} ]] && kill -TERM "$neighbour" 2>/dev/null; then wait "$neighbour"; fi
	# Containers the runs may have left (only on failure): delete by id, from our own state roots.
	for id in $(ls -A "$work/runc-state" 2>/dev/null); do runc --root "$work/runc-state" delete -f "$id"; done
	for id in $(ls -A "$work/crun-state" 2>/dev/null | grep -v '^\.'); do
		unshare -m "$work/crun-ns.sh" crun --root "$work/crun-state" delete -f "$id"
	done
	remove_tag_cgroups
	# Mounts under the work folder, deepest first, never a recursive delete while one remains.
	grep -F " $work" /proc/self/mountinfo | awk '{ print $5 }' | sort -r | while read -r m; do umount "$m"; done
	if grep -qF " $work" /proc/self/mountinfo; then
		echo "bench: mounts remain under $work; not removing it" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z $OUT ]]; then if ((SHORT)); then OUT=$work/results; else OUT=$here/results; fi; fi
mkdir -p "$work/bin" "$work/tori-root" "$work/tori-run" "$work/runc-state" "$work/crun-state" "$OUT"
# A private copy: other builds may replace bin/tori-run while this runs. Its
# folder is not an ancestor of libcontainer's state root (that would make
# libcontainer copy the binary on every start).
cp "$tori_src" "$work/bin/tori-run"
tori=$work/bin/tori-run
export TORI_ROOT=$work/tori-root TORI_RUN_DIR=$work/tori-run TORI_STATE_ROOT=$work/tori-state

# --- 3. the capsules and the equivalent bundles -------------------------------
# READY: prints "ready", then runs until SIGTERM. As a container's PID 1 (runc,
# crun) a process gets no default action for SIGTERM, so it traps it; the same
# command runs in all three. SLEEP: the brief's service, sleep 60 (under
# tori-run a service is not PID 1: the default action applies).
ready_cmd="trap 'exit 0' TERM; echo ready; sleep 60 & wait"
mkapp() { # name command (shell words, as in a manifest)
	mkdir -p "$work/apps/$1"
	printf 'name: %s\nversion: "1.0.0"\nservices:\n  t:\n    command: %s\n' "$capsule" "$(jq -n --arg c "$2" '$c')" >"$work/apps/$1/capsule.yml"
}
mkapp true /bin/true
mkapp ready "/bin/sh -c \"$ready_cmd\""
mkapp sleep '/bin/sh -c "echo ready; exec sleep 60"'
mkapp neighbour '/bin/sleep 3600'
sed -i "s/^name: .*/name: ${capsule}-neighbour/" "$work/apps/neighbour/capsule.yml"
"$tori" spec "$work/apps/true" >"$work/tori-spec.json"

mkbundle() { # name args...
	local b=$work/bundle-$1
	shift
	mkdir -p "$b"
	runc spec --bundle "$b"
	"$PY" "$here/mkbundle.py" "$b" "$work/tori-spec.json" "$tag/c" "$@"
}
mkbundle true /bin/true
mkbundle ready /bin/sh -c "$ready_cmd"

# crun refuses hybrid hosts: it runs in a mount namespace of its own where the
# cgroup2 mount is hidden. Its relative cgroupsPath is taken from the root of
# each hierarchy rather than from its caller's cgroup, so in that namespace
# our own memory cgroup is bound over the memory hierarchy's root: crun's
# cgroups then nest where runc's and tori-run's do. Nothing is unmounted in
# the host's own namespace (unshare -m makes the new one private).
{
	echo '#!/bin/sh'
	echo '# in a private mount namespace (unshare -m): hide what crun refuses, then run it'
	echo 'set -e'
	if grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/self/mounts; then echo 'umount /sys/fs/cgroup/unified'; fi
	if [[ -n $memcg && $memcg != / && -d /sys/fs/cgroup/memory$memcg ]]; then
		echo "mount --bind /sys/fs/cgroup/memory$memcg /sys/fs/cgroup/memory"
	fi
	echo 'exec "$@"'
} >"$work/crun-ns.sh"
chmod +x "$work/crun-ns.sh"

# --- sanity: each runs once, as expected --------------------------------------
log "sanity runs"
"$tori" run "$work/apps/true" --log-level error 2>/dev/null || die "tori-run run failed"
runc --root "$work/runc-state" run -b "$work/bundle-true" sanity-runc || die "runc run failed"
# crun is an anchor, not a requirement: if it cannot run here, say why and go on without it.
crun_note=
if ! command -v crun >/dev/null; then
	crun_note="crun is not installed"
elif ! crun_err=$(unshare -m "$work/crun-ns.sh" crun --root "$work/crun-state" run -b "$work/bundle-true" sanity-crun 2>&1); then
	crun_note="crun cannot run here: ${crun_err//$'\n'/ }"
	unshare -m "$work/crun-ns.sh" crun --root "$work/crun-state" delete -f sanity-crun >/dev/null 2>&1 || true
fi
[[ -z $crun_note ]] || log "SKIPPED crun: $crun_note"
left=$(leftovers)
[[ -z $left ]] || die "left behind after one run each:"$'\n'"$left"

# --- load ---------------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }' && ((waited < LOAD_WAIT)); do
	((waited == 0)) && log "load $(load1) > $MAX_LOAD: waiting up to ${LOAD_WAIT}s"
	sleep 10
	waited=$((waited + 10))
done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "load before: $load_before ($(nproc) cores)"
top_before=$(ps -eo pcpu=,comm= --sort=-pcpu | head -5 | awk '{ printf "%s %s%%; ", $2, $1 }')

# --- 4a-c. whole process, side by side ----------------------------------------
# hyperfine runs each command through bash (and subtracts bash's own start-up);
# $$ (that bash's pid) and $RANDOM make container ids that never collide.
# runc run and crun run remove their container when its process exits.
crun_hf=()
[[ -n $crun_note ]] || crun_hf=(-n crun+ns "unshare -m $work/crun-ns.sh crun --root $work/crun-state run -b $work/bundle-true c\$\$-\$RANDOM")
if ((SHORT)); then
	log "hyperfine: skipped in short mode (the interleaved whole-process rounds below cover it)"
else
log "hyperfine: $WARMUP warmup + $RUNS runs each"
# -i: a failed run (tori-run's service-start race, see docs/PERFORMANCE.md)
# is kept and counted (report.py reads exit_codes) rather than ending the run.
hyperfine --shell=bash -i --warmup "$WARMUP" --runs "$RUNS" --style basic \
	--export-json "$OUT/hyperfine.json" \
	-n tori-run "$tori run $work/apps/true --log-level error" \
	-n runc "runc --root $work/runc-state run -b $work/bundle-true r\$\$-\$RANDOM" \
	"${crun_hf[@]}" \
	-n ns-only "unshare -m $work/crun-ns.sh /bin/true" \
	-n tori-run-version "$tori version" \
	>"$OUT/hyperfine.txt"
fi
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4d. start to ready, and stop ---------------------------------------------
log "start/stop and whole process, interleaved: $SS_RUNS rounds"
crun_ss=
[[ -n $crun_note ]] || crun_ss=',
 "crun+ns": {"cmd": ["unshare", "-m", "'$work/crun-ns.sh'", "crun", "--root", "'$work/crun-state'", "run", "-b", "'$work/bundle-ready'", "ss-crun-'$$'"]},
 "crun+ns whole": {"mode": "whole", "cmd": ["unshare", "-m", "'$work/crun-ns.sh'", "crun", "--root", "'$work/crun-state'", "run", "-b", "'$work/bundle-true'", "w-crun-'$$'"]}'
cat >"$work/startstop.json" <<EOF
{
 "tori-run": {"cmd": ["$tori", "run", "$work/apps/ready", "--log-format", "json"]},
 "tori-run (sleep 60)": {"cmd": ["$tori", "run", "$work/apps/sleep", "--log-format", "json"]},
 "runc": {"cmd": ["runc", "--root", "$work/runc-state", "run", "-b", "$work/bundle-ready", "ss-runc-$$"]},
 "tori-run whole": {"mode": "whole", "cmd": ["$tori", "run", "$work/apps/true", "--log-level", "error"]},
 "runc whole": {"mode": "whole", "cmd": ["runc", "--root", "$work/runc-state", "run", "-b", "$work/bundle-true", "w-runc-$$"]}$crun_ss
}
EOF
"$PY" "$here/startstop.py" "$work/startstop.json" "$SS_RUNS" "$((SHORT ? 1 : 3))" "$OUT/startstop.json"

# The same whole-process rounds while another capsule runs on the host: its
# cgroups share the tori/ parent with each run's (that once cost 10 s a run).
log "whole process beside a running capsule: $SS_RUNS rounds"
"$tori" run "$work/apps/neighbour" --log-level error >"$work/neighbour.log" 2>&1 &
neighbour=$!
for ((i = 0; i < 100; i++)); do [[ -n $(ls -A "$work/tori-root/instances" 2>/dev/null) ]] && break; sleep 0.1; done
sleep 0.5
cat >"$work/beside.json" <<EOF
{
 "tori-run whole, beside a capsule": {"mode": "whole", "cmd": ["$tori", "run", "$work/apps/true", "--log-level", "error"]},
 "runc whole, beside a capsule": {"mode": "whole", "cmd": ["runc", "--root", "$work/runc-state", "run", "-b", "$work/bundle-true", "b-runc-$$"]}
}
EOF
"$PY" "$here/startstop.py" "$work/beside.json" "$SS_RUNS" 1 "$OUT/beside.json"
kill -TERM "$neighbour"
wait "$neighbour" || die "the neighbour capsule's run failed: $(cat "$work/neighbour.log")"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
log "load after: $load_after"

# --- 5. where tori-run's time goes --------------------------------------------
if ((STRACE_RUNS > 0)); then
	log "strace: $STRACE_RUNS traced runs of tori-run"
	mkdir -p "$work/strace"
	# Under strace a /bin/true service sometimes "did not start": its exit
	# message can reach tori-run before the init's start reply (a race in the
	# init, see docs/PERFORMANCE.md). Such runs are counted and retried.
	ok=0 failed=0
	for ((i = 0; ok < STRACE_RUNS && i < 3 * STRACE_RUNS; i++)); do
		if strace -f -ttt -T -qq --seccomp-bpf -o "$work/strace/$i.a.txt" \
			-e trace=execve,mount,umount2,mkdirat,unlinkat,connect,clone,exit_group,pidfd_send_signal,kill \
			"$tori" run "$work/apps/true" --log-level error 2>/dev/null &&
			strace -f -ttt -T -y -qq --seccomp-bpf -o "$work/strace/$i.b.txt" -e trace=write,mkdirat \
				"$tori" run "$work/apps/true" --log-level error 2>/dev/null; then
			ok=$((ok + 1))
		else
			failed=$((failed + 1))
			rm -f "$work/strace/$i".*.txt
		fi
	done
	echo "traced runs: $ok kept, $failed failed (service start race) and retried" >"$work/strace-note.txt"
	log "$(cat "$work/strace-note.txt")"
	"$PY" "$here/phases.py" "$work"/strace/*.a.txt -- "$work"/strace/*.b.txt >"$OUT/phases.json"
fi

# --- report -------------------------------------------------------------------
{
	echo "date: $(date -u +%FT%TZ)"
	echo "host: $(nproc) cores, $(uname -r), $(runc --version | head -1), $(crun --version 2>/dev/null | head -1), $(hyperfine --version)"
	echo "tori-run: $("$tori" version | head -1)"
	echo "load (1/5/15 min): before $load_before; after hyperfine $load_mid; after start/stop $load_after"
	echo "busiest processes before: $top_before"
	[[ ! -f $work/strace-note.txt ]] || cat "$work/strace-note.txt"
	[[ -z $crun_note ]] || echo "SKIPPED crun: $crun_note"
	((!SHORT)) || echo "short mode: $SS_RUNS rounds, no hyperfine; not for comparing"
} >"$OUT/meta.txt"
"$PY" "$here/report.py" "$OUT" | tee "$OUT/summary.md"

# --- 6. nothing left behind ---------------------------------------------------
remove_tag_cgroups # the empty parent; a container's cgroup left in it stays and is reported
left=$(leftovers "")
tori_after=$(tori_parents | sort -u)
new_tori=$(comm -13 <(echo "$tori_before") <(echo "$tori_after") | sed '/^$/d')
if [[ -n $new_tori ]]; then
	# Ours only if empty of other instances; another engineer's tori-run may be running.
	for d in $new_tori; do
		[[ -z $(find "$d" -mindepth 1 -maxdepth 1 -type d) ]] && left+=$'\n'"cgroup: $d (tori-run's parent, not removed)"
	done
fi
if [[ -n ${left//$'\n'/} ]]; then
	printf 'bench: LEFT BEHIND:\n%s\n' "$left" >&2
	exit 1
fi
log "nothing left behind (containers, cgroups, mounts, processes); results in $OUT"
