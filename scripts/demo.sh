#!/usr/bin/env bash
# The demo: what tori-run does today with the reference capsule in
# examples/metacog. Each step says what it shows.
set -euo pipefail
cd "$(dirname "$0")/.."
T=./bin/tori-run
APP=examples/metacog

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; }

step "tori-run's version and build SHA" "$T version"
$T version

step "Validate the reference capsule: manifest, pinned requirements, entrypoint" "$T validate $APP"
$T validate "$APP"

step "Its systemd slice overrides the manifest's resources" "$T validate $APP --slice $APP/tori-metacog.slice"
$T validate "$APP" --slice "$APP/tori-metacog.slice"

step "A broken manifest: every problem, with file, line and field (exit 1 expected)" "$T validate specs/testdata/bad/bad-service.yml"
if $T validate specs/testdata/bad/bad-service.yml; then echo "unexpected: accepted" >&2; exit 1; fi

step "What this host offers capsules: kernel, OverlayFS, cgroup mode, enforceable limits" "$T validate --host $APP --slice $APP/tori-metacog.slice"
$T validate --host "$APP" --slice "$APP/tori-metacog.slice" || echo "(some host checks failed; see the hints above)"

printf '\nThe runtime (tori-run run) arrives with the isolation work; see README.md.\n'
