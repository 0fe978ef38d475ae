#!/usr/bin/env bash
# make doc-test: run every runnable shell block of README.md and docs/*.md,
# so that no command in the docs can drift from what tori-run does.
#
# A block fenced as ```sh is run; ```sh skip: REASON is shown but not run
# (the reason is printed: it needs a daemon, runs in the foreground, ...);
# other fences (console, yaml, ini, sql) are examples, not commands. The
# blocks of one file run in order in one bash (set -euo pipefail), in a temp
# folder holding a copy of examples/, specs/testdata/ and clients/, with
# TORI_ROOT, TORI_RUN_DIR and TORI_STATE_ROOT in it, and tori-run,
# capsbuild and capsdeploy (this tree's build) first on PATH. `sudo` runs
# the command as is (the doc test runs as root). A capsule or daemon a
# block leaves running fails the test.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "$(id -u)" != 0 ]; then
	echo "doc-test: the docs' commands install and run capsules, which needs root: run make doc-test as root" >&2
	exit 1
fi
repo=$PWD
work=$(mktemp -d)
cleanup() {
	# A block that left a capsule running is a failure; stop what is left.
	if [ -n "${dpid:-}" ]; then kill "$dpid" 2>/dev/null || true; fi
	grep -q " $work/" /proc/self/mountinfo && echo "doc-test: mounts left under $work" >&2
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/bin"
# The tags of every build (the Makefile's GOTAGS): seccomp needs libseccomp.
$GO build -tags "${GOTAGS:-seccomp}" -o "$work/bin/tori-run" ./cmd/tori-run
ln -s tori-run "$work/bin/capsbuild"
ln -s tori-run "$work/bin/capsdeploy"
# The doc test runs as root: `sudo CMD` runs CMD as it is, in the same
# process (so that `sudo tori-run run ... &` leaves $! pointing at tori-run).
printf '#!/bin/sh\nexec "$@"\n' >"$work/bin/sudo" && chmod +x "$work/bin/sudo"

files=("$@")
[ ${#files[@]} -eq 0 ] && files=(README.md docs/*.md)
ran=0
for doc in "${files[@]}"; do
	dir=$work/run-$(basename "$doc" .md)
	mkdir -p "$dir/specs" "$dir/root" "$dir/run" "$dir/state"
	cp -r "$repo/examples" "$repo/clients" "$dir/"
	cp -r "$repo/specs/testdata" "$dir/specs/"
	script=$dir/doc.sh
	# Extract: runnable blocks into the script, each echoed before it runs.
	python3 - "$repo/$doc" "$script" <<'PY'
import re, sys
src, out = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8").read().split("\n")
body, skips, runs, i = [], [], 0, 0
while i < len(lines):
    m = re.match(r"^```(\S*)\s*(.*)$", lines[i])
    if not m or m.group(1) == "":
        i += 1
        continue
    lang, rest = m.group(1), m.group(2).strip()
    j = i + 1
    while j < len(lines) and not lines[j].startswith("```"):
        j += 1
    block = lines[i + 1:j]
    if lang == "sh":
        if rest.startswith("skip"):
            reason = rest[4:].lstrip(": ").strip() or "no reason given"
            if reason == "no reason given":
                sys.exit("%s:%d: a skipped block must say why (```sh skip: REASON)" % (src, i + 1))
            skips.append("%s:%d: skipped: %s" % (src, i + 1, reason))
        else:
            runs += 1
            body.append("echo '--- %s:%d' >&2" % (src, i + 1))
            body.extend(block)
    i = j + 1
with open(out, "w", encoding="utf-8") as f:
    f.write("set -euo pipefail\n" + "\n".join(body) + "\n")
for s in skips:
    print(s)
print("RUNS=%d SKIPS=%d" % (runs, len(skips)))
PY
	if ! (cd "$dir" && PATH="$work/bin:$PATH" TORI_ROOT="$dir/root" TORI_RUN_DIR="$dir/run" TORI_STATE_ROOT="$dir/state" \
		bash "$script" >"$dir/out.log" 2>&1); then
		echo "doc-test: $doc: a command failed; its output:" >&2
		tail -40 "$dir/out.log" >&2
		exit 1
	fi
	if grep -q " $dir/" /proc/self/mountinfo; then
		echo "doc-test: $doc: its commands left mounts under $dir (a capsule still running?)" >&2
		exit 1
	fi
	n=$(grep -c "^--- $repo/$doc:" "$dir/out.log" || true)
	ran=$((ran + n))
	echo "doc-test: $doc: $n blocks ran"
	[ -n "${DOCTEST_VERBOSE:-}" ] && cat "$dir/out.log"
done
echo "doc-test: $ran blocks ran"
