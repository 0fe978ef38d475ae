#!/usr/bin/env bash
# The demo: what tori-run does with the reference capsule in examples/metacog.
# Each step prints the command it runs and what it shows.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$PWD/bin/tori-run
APP=examples/metacog
DEMO=${DEMO_ROOT:-$PWD/.demo}
export TORI_ROOT=$DEMO/root TORI_RUN_DIR=$DEMO/run TORI_STATE_ROOT=$DEMO/state
SOCK=$DEMO/run/tori.sock

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; }

step "tori-run's version and build SHA" "tori-run version"
$T version

step "Validate the reference capsule: manifest, pinned requirements, entrypoint" "tori-run validate $APP"
$T validate "$APP"

step "A broken manifest: every problem, with file, line and field (exit 1 expected)" "tori-run validate specs/testdata/bad/bad-service.yml"
if $T validate specs/testdata/bad/bad-service.yml; then echo "unexpected: accepted" >&2; exit 1; fi

step "What this host offers capsules: kernel, OverlayFS, cgroup mode, enforceable limits" "tori-run validate --host $APP --slice $APP/tori-metacog.slice"
$T validate --host "$APP" --slice "$APP/tori-metacog.slice" || echo "(some host checks failed; see the hints above)"

rm -rf "$DEMO" && mkdir -p "$DEMO/a" "$DEMO/b"
step "Build the capsule twice, from two copies with different file times: the same digest" \
	"capsbuild --from-dir COPY --manifest COPY/capsule.yml --output-dir $DEMO/{a,b}"
cp -a "$APP" "$DEMO/copy1" && cp -r "$APP" "$DEMO/copy2" && touch -d '2001-01-01' "$DEMO/copy2/capsule.yml"
"$PWD/bin/capsbuild" --from-dir "$DEMO/copy1" --manifest "$DEMO/copy1/capsule.yml" --output-dir "$DEMO/a" --build-sha 0123456789abcdef0123456789abcdef01234567
"$PWD/bin/capsbuild" --from-dir "$DEMO/copy2" --manifest "$DEMO/copy2/capsule.yml" --output-dir "$DEMO/b" --build-sha 0123456789abcdef0123456789abcdef01234567
sha256sum "$DEMO"/a/*.tar.gz "$DEMO"/b/*.tar.gz
ARCHIVE=$(ls "$DEMO"/a/*.tar.gz)

step "The seed's own command on an app zipped on Windows (no Unix modes: the .py entrypoint runs with the capsule's Python)" \
	"capsbuild --from-zip tori_nodb_complete_v2.zip --manifest capsule.yml --output capsule-metacog-XYZ.tar.gz"
python3 - "$DEMO/tori_nodb_complete_v2.zip" "$APP" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name in ["python/core/start_true_metacognition.py", "python/core/tori_state.py", "requirements_nodb.txt"]:
        zi = zipfile.ZipInfo(name, (2025, 3, 1, 12, 0, 0)); zi.create_system = 0; zi.external_attr = 0x20  # FAT: no modes
        zi.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(zi, open(sys.argv[2] + "/" + name, "rb").read())
PY
(cd "$DEMO" && cp "$OLDPWD/$APP/capsule.yml" . && "$OLDPWD/bin/capsbuild" --from-zip tori_nodb_complete_v2.zip --manifest capsule.yml --output capsule-metacog-XYZ.tar.gz)
$T validate --manifest "$APP/capsule.yml" "$DEMO/tori_nodb_complete_v2.zip" | tail -2
echo "-- a zip has no git: the build SHA is recorded as absent, and shown as 'none' in logs, metrics and status"

if [ "$(id -u)" != 0 ]; then
	printf '\nThe rest (install, run under the slice, the daemon, metrics, state) needs root: OverlayFS mounts,\n'
	printf 'namespaces and cgroups. Run it as root: sudo make demo (nothing was installed or started so far).\n'
	exit 0
fi

# The seed's manifest asks for the host's /opt/tori/state (volumes:
# /opt/tori/state:/data:rw). A capsule binds a host path only if the operator
# allows it, and never tori-run's own folders: with the default state root
# (/opt/tori/state) that volume would show the capsule every capsule's state.
# So, as a careful operator would, the demo keeps the state root elsewhere
# (TORI_STATE_ROOT=$DEMO/state, above) and allows /opt/tori/state as a plain
# data folder of the capsule: --allow-volume for run, the host configuration
# for the daemon (docs/SECURITY.md). tori-run refuses a missing volume source
# rather than invent one, so the demo makes it.
mkdir -p /opt/tori/state
export TORI_HOST_CONFIG=$DEMO/host.yml
printf 'volumes:\n  - path: /opt/tori/state\n' >"$TORI_HOST_CONFIG"

step "A volume the operator has not allowed is refused, with the way to allow it" \
	"tori-run validate --host $APP   (no host configuration, no --allow-volume)"
if env -u TORI_HOST_CONFIG $T validate --host "$APP" 2>&1 | grep -A3 "volume "; then :; fi
echo "-- with --allow-volume /opt/tori/state:"
env -u TORI_HOST_CONFIG $T validate --host "$APP" --allow-volume /opt/tori/state | grep "volume " || true

step "Install it (read-only, atomic), again (idempotent), list and verify it" "capsdeploy install ARCHIVE; tori-run list; tori-run verify tori-metacognitive"
"$PWD/bin/capsdeploy" install "$ARCHIVE"
"$PWD/bin/capsdeploy" install "$ARCHIVE"
$T list
$T verify tori-metacognitive

step "Run the installed capsule under its slice for a few seconds" "tori-run run tori-metacognitive --slice $APP/tori-metacog.slice --allow-volume /opt/tori/state"
env -u TORI_HOST_CONFIG $T run tori-metacognitive --slice "$APP/tori-metacog.slice" --allow-volume /opt/tori/state --log-format console &
RUN=$!
sleep 3
echo "-- limits in force, read from the capsule's cgroups on the host:"
id=$(ls "$DEMO/root/instances" | head -1)
find /sys/fs/cgroup -maxdepth 8 -path "*/tori/$id/*" \( -name cpu.cfs_quota_us -o -name memory.limit_in_bytes \
	-o -name cpu.max -o -name memory.max -o -name pids.max \) -not -path "*/svc-*" -not -path "*/init/*" |
	while read -r f; do echo "   $f = $(cat "$f")"; done
echo "-- each service in its own cgroup:"
find /sys/fs/cgroup/pids -maxdepth 6 -path "*/tori/$id/svc-*" -name cgroup.procs | while read -r f; do echo "   $f: pids $(tr '\n' ' ' < "$f")"; done
echo "-- tori-run list shows the release in use:"
$T list
kill -INT $RUN
wait $RUN || true

step "The daemon: enable the capsule, supervise it, kill a service, watch it come back" \
	"tori-run enable tori-metacognitive; tori-run daemon &; tori-run status   (host.yml allows /opt/tori/state)"
cat "$TORI_HOST_CONFIG"
$T enable tori-metacognitive --socket "$SOCK"
METRICS=127.0.0.1:${DEMO_METRICS_PORT:-19465}
$T daemon --socket "$SOCK" --log-format json --metrics-addr "$METRICS" >"$DEMO/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 50); do $T status --socket "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 2
$T status --socket "$SOCK"
$T events --socket "$SOCK" >"$DEMO/events.txt" 2>&1 &
EVENTS=$!
sleep 0.3
victim=$($T status --socket "$SOCK" --json | python3 -c 'import json,sys; print([s["pid"] for s in json.load(sys.stdin)[0]["services"] if s["name"]=="tori-observer"][0])')
echo "-- kill -9 $victim (tori-observer)"
kill -9 "$victim"
sleep 1.5
$T status --socket "$SOCK"
echo "-- the events it caused:"
kill "$EVENTS" 2>/dev/null; wait "$EVENTS" 2>/dev/null || true
cat "$DEMO/events.txt"
echo "-- its last log lines:"
$T logs tori-metacognitive/tori-observer --tail 3
echo "-- /metrics (Prometheus text; the killed service's restarts counter moved):"
python3 - "http://$METRICS/metrics" <<'PY'
import re, sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines():
    if re.match(r"tori_(build_info|capsule_info|capsule_memory_working_set_bytes|capsule_cpu_usage_seconds_total|service_up|service_restarts_total)\{", line):
        print("  " + re.sub(r'release="([0-9a-f]{12})[0-9a-f]*"', r'release="\1..."', line))
PY

step "Blue-green upgrade to a 2.1.1 build: started beside 2.1.0, switched once healthy, state carried over" \
	"tori-run upgrade tori-metacognitive ARCHIVE-2.1.1; tori-run status; tori-run rollback ..."
cp -a "$APP" "$DEMO/v211"
sed -i 's/^version: "2.1.0"/version: "2.1.1"/' "$DEMO/v211/capsule.yml"
printf 'update: { min_healthy_time: 3s, healthy_deadline: 1m }\n' >>"$DEMO/v211/capsule.yml"
mkdir -p "$DEMO/c"
"$PWD/bin/capsbuild" --from-dir "$DEMO/v211" --manifest "$DEMO/v211/capsule.yml" --output-dir "$DEMO/c" >/dev/null
before=$($T state ls tori-metacognitive | wc -l)
echo "-- $before observations in the state before the upgrade"
$T upgrade tori-metacognitive "$(ls "$DEMO"/c/*.tar.gz)" --socket "$SOCK"
$T status --socket "$SOCK"
$T status --socket "$SOCK" --json | python3 -c 'import json,sys; c=json.load(sys.stdin)[0]; print("-- current", c["release"][:12], "previous stable", c.get("previous","")[:12])'
sleep 2
echo "-- $($T state ls tori-metacognitive | wc -l) observations now: 2.1.1 writes on where 2.1.0 stopped, in the same store"
echo "-- a release whose services crash rolls back by itself (exit 1 expected):"
cp -a "$DEMO/v211" "$DEMO/v212"
sed -i 's/^version: "2.1.1"/version: "2.1.2"/; s#^entrypoint: .*#entrypoint: python/core/broken.py#' "$DEMO/v212/capsule.yml"
printf '#!/usr/bin/env python3\nimport sys\nsys.exit("2.1.2 is broken on purpose")\n' >"$DEMO/v212/python/core/broken.py"
chmod +x "$DEMO/v212/python/core/broken.py"
mkdir -p "$DEMO/d"
"$PWD/bin/capsbuild" --from-dir "$DEMO/v212" --manifest "$DEMO/v212/capsule.yml" --output-dir "$DEMO/d" >/dev/null
$T upgrade tori-metacognitive "$(ls "$DEMO"/d/*.tar.gz)" --socket "$SOCK" || echo "(exit $?: 2.1.1 still serves)"
echo "-- and rollback returns to 2.1.0 (healthy for 2.1.0's default min_healthy_time, 10s, first):"
$T rollback tori-metacognitive --socket "$SOCK"

step "Stop the daemon (SIGTERM): services stop in order, the daemon exits 0" "kill -TERM DAEMON"
kill -TERM "$DAEMON"
wait "$DAEMON" && echo "daemon exited 0"

step "The capsule's state: written through the state proxy, durable in Parquet" "tori-run state ls tori-metacognitive"
echo "$($T state ls tori-metacognitive | wc -l) observations; the first and the last:"
$T state ls tori-metacognitive | sed -n '1p;$p'
$T state get tori-metacognitive "$($T state ls tori-metacognitive | tail -1)"; echo
ls "$DEMO/state/tori-metacognitive/data"
if [ -d bench/state/node_modules/@duckdb ]; then
	echo "-- read back by DuckDB, independently of tori-run (newest seq wins, tombstones hide):"
	node bench/state/duckdb_read.mjs "$DEMO/state/tori-metacognitive" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["kv"]), "keys,", len(d["events"]), "events")'
else
	echo "(npm ci --prefix bench/state installs DuckDB to read the files independently)"
fi

step "Nothing left behind: instances, mounts, cgroups" "ls instances; grep mountinfo; ls cgroups"
echo "instances: $(ls "$DEMO/root/instances" | wc -l)"
echo "mounts under the demo root: $(grep -c "$DEMO" /proc/self/mountinfo || true)"
echo "tori/ parent cgroups (shared by every capsule on this host): $(ls -d /sys/fs/cgroup/*/tori /sys/fs/cgroup/tori 2>/dev/null | wc -l)"
left=$(find /sys/fs/cgroup -maxdepth 8 -type d -path '*/tori/tori-metacognitive-*' 2>/dev/null | while read -r d; do
	grep -qs . "$d/cgroup.procs" && echo "$d"; done | head -3)
echo "processes in the demo's capsule cgroups: ${left:-none}"
if kill -0 "$DAEMON" 2>/dev/null || grep -q "$DEMO" /proc/self/mountinfo; then echo "demo: something is still running or mounted" >&2; exit 1; fi
echo "nothing running, nothing mounted"
