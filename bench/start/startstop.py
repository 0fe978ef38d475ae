#!/usr/bin/env python3
"""Start-to-ready and stop latency of long-running containers, side by side.

Usage: startstop.py CONFIG.json RUNS WARMUP OUT.json

CONFIG maps a name to {"cmd": [...]}: a command that runs a container whose
process prints a line containing "ready" on stdout and then runs until it is
sent SIGTERM. For each run, in round-robin order so that all commands see the
same load:

  start = from just before the fork/exec of cmd to the arrival of "ready"
          on its stdout (the process inside is running);
  stop  = from SIGTERM to the command's exit (the container stopped and torn
          down).

An entry with "mode": "whole" is instead run to its exit (a /bin/true
container): total = from the fork/exec to the exit, measured in the same
round-robin, so that tori-run and runc see the same load run by run.

The arrival times of JSON log lines on the command's stderr ("capsule
started", "service started", "stopping service"...) are kept too, relative to
the fork/exec: with tori-run's --log-format json they split its start in
phases without touching its code.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

TIMEOUT = 20.0  # seconds for either step; a run that takes longer fails the benchmark


def one(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    fds = {p.stdout.fileno(): b"", p.stderr.fileno(): b""}
    events = {}
    ready = None
    stop_sent = None
    open_fds = set(fds)
    while open_fds:
        budget = TIMEOUT - (time.monotonic() - (stop_sent or t0))
        if budget <= 0:
            p.kill()
            p.wait()
            raise RuntimeError(f"{cmd[0]}: no {'exit' if stop_sent else 'ready line'} within {TIMEOUT}s")
        r, _, _ = select.select(list(open_fds), [], [], budget)
        now = time.monotonic()
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            buf = fds[fd] + chunk
            *lines, fds[fd] = buf.split(b"\n")
            for line in lines:
                if fd == p.stdout.fileno():
                    if ready is None and b"ready" in line:
                        ready = now
                        # Let it settle, as a real service would run a while.
                        time.sleep(0.05)
                        stop_sent = time.monotonic()
                        p.send_signal(signal.SIGTERM)
                else:
                    try:
                        msg = json.loads(line).get("message")
                    except (ValueError, AttributeError):
                        continue
                    if msg and msg not in events:
                        events[msg] = now - t0
    p.wait()
    end = time.monotonic()
    if ready is None:
        raise RuntimeError(f"{cmd}: exited with {p.returncode} before printing a ready line")
    if p.returncode not in (0, 143, -15):
        raise RuntimeError(f"{cmd}: stopped with status {p.returncode}")
    return {"start": ready - t0, "stop": end - stop_sent, "events": events, "status": p.returncode,
            "stop_events": {k: v - (stop_sent - t0) for k, v in events.items() if v > stop_sent - t0}}


def whole(cmd):
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT)
    total = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]}: exit status {p.returncode}: {p.stderr.decode(errors='replace').strip()[-300:]}")
    return {"total": total}


def main():
    cfg_path, runs, warmup, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with open(cfg_path) as f:
        cfg = json.load(f)
    res = {name: [] for name in cfg}
    failures = {name: [] for name in cfg}
    for i in range(warmup + runs):
        for name, c in cfg.items():
            try:
                r = whole(c["cmd"]) if c.get("mode") == "whole" else one(c["cmd"])
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                # Counted, not timed; more than a few fail the benchmark.
                failures[name].append(str(e))
                print(f"  start/stop: {name}: {e}", file=sys.stderr)
                if len(failures[name]) > max(3, runs // 10):
                    raise
                continue
            if i >= warmup:
                res[name].append(r)
        if (i + 1) % 10 == 0:
            print(f"  start/stop: {i + 1}/{warmup + runs} rounds", file=sys.stderr)
    with open(out, "w") as f:
        json.dump({"results": res, "failures": failures}, f, indent=1)


if __name__ == "__main__":
    main()
