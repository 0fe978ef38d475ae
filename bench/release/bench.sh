#!/usr/bin/env bash
# Builds and installs a 10,000-file, ~100 MB app (a third random bytes, the
# rest text) with tori-run's release package, and the same with tar and
# sha256sum, side by side in the same run; prints the best of REPEAT runs
# (default 3) of each step, in seconds and MB/s of app content.
# Usage: bench/release/bench.sh   (from anywhere; needs go, tar, gzip, awk)
#   SHORT=1: one run of a 200-file, 2 MB app (seconds; what make test runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHORT=${SHORT:-0}
repeat=${REPEAT:-$((SHORT ? 1 : 3))}
gen_size=()
((!SHORT)) || gen_size=(200 2000000)
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

go build -o "$work/bench" ./bench/release
"$work/bench" gen "$work/app" "${gen_size[@]}"
bytes=$(find "$work/app" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
files=$(find "$work/app" -type f | wc -l)

now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.3f", e - s }'; }
declare -A best
keep() { # step seconds: remember the fastest
	echo "  $1 $2 s" >&2
	if [[ -z ${best[$1]:-} ]] || awk -v a="$2" -v b="${best[$1]}" 'BEGIN { exit !(a < b) }'; then best[$1]=$2; fi
}

for ((i = 0; i < repeat; i++)); do
	rm -rf "$work/ref.tar.gz" "$work/out" "$work/x" && chmod -R u+w "$work/root" 2>/dev/null && rm -rf "$work/root"
	sync
	s=$(now)
	tar -C "$work/app" -czf "$work/ref.tar.gz" .
	sha256sum "$work/ref.tar.gz" >/dev/null
	keep tar-build "$(since "$s")"

	mkdir "$work/out"
	read -r _ secs _ archive < <("$work/bench" build "$work/app" "$work/capsule.yml" "$work/out" 2> >(sed 's/^/  /' >&2))
	keep build "$secs"

	sync
	s=$(now)
	sha256sum "$work/ref.tar.gz" >/dev/null
	mkdir "$work/x"
	tar -C "$work/x" -xzf "$work/ref.tar.gz"
	keep tar-install "$(since "$s")"
	sync
	keep tar-install-sync "$(since "$s")"

	sync
	read -r _ secs _ < <("$work/bench" install "$archive" "$work/root" 2> >(sed 's/^/  /' >&2))
	keep install "$secs"
done

row() { awk -v n="$1" -v t="${best[$2]}" -v b="$bytes" 'BEGIN { printf "| %-31s | %6.2f s | %6.1f MB/s |\n", n, t, b / 1e6 / t }'; }
echo
echo "app: $files files, $((bytes / 1000000)) MB; tar.gz $(($(stat -c %s "$work/ref.tar.gz") / 1000000)) MB," \
	"capsule $(($(stat -c %s "$archive") / 1000000)) MB; $(nproc) cores; best of $repeat"
echo "| step                            |     time |       speed |"
echo "|---------------------------------|----------|-------------|"
row "tar -czf + sha256sum" tar-build
row "tori-run build (gzip)" build
row "sha256sum + tar -xzf" tar-install
row "sha256sum + tar -xzf + sync" tar-install-sync
row "tori-run install (with syncfs)" install
