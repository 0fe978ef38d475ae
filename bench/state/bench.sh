#!/usr/bin/env bash
# Runs the state store benchmark with one command: the store (Go API), the
# proxy (socket) and SQLite (FULL and NORMAL) on the same workload, then the
# rate limiter for a real minute. Arguments go to the program, e.g.
#   bench/state/bench.sh -n 20000 -rate-time 10s
# Results are printed and saved in bench/state/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p bench/state/results
out="bench/state/results/$(date -u +%Y%m%dT%H%M%SZ).md"
{
	echo "# uptime: $(uptime)"
	echo "# go: $(go version)"
	go run ./bench/state "$@"
} | tee "$out"
echo "saved $out"
