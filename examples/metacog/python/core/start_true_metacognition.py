#!/usr/bin/env python3
"""Reference services of the tori-metacognitive capsule (stdlib only).

One program, two roles chosen by TORI_SERVICE (or --role):

  tori-metacog   scores a stream of observations for novelty, reports the
                 ones above TORI_NOVELTY_THRESHOLD, and records each in the
                 capsule's state (key observations/NNNNNN, and an event for
                 novel ones) through the state proxy;
  tori-observer  watches the capsule: its own resource use, the limits it
                 runs under, and the observations recorded so far.

Outside a capsule (no TORI_STATE_SOCKET) nothing is recorded.

Both log one line per event to stdout, and stop cleanly on SIGTERM or SIGINT
(finish the current step, say so, exit 0).
"""

import argparse
import json
import math
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tori_state  # noqa: E402  (vendored from clients/python: stdlib only)

stopping = False


def on_signal(signum, _frame):
    global stopping
    stopping = True
    log("received %s, stopping after this step" % signal.Signals(signum).name)


def log(msg):
    role = os.environ.get("TORI_SERVICE", "?")
    print("%s %s: %s" % (time.strftime("%H:%M:%S"), role, msg), flush=True)


def env_float(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit("%s=%r: expected a number" % (name, raw))
    if not math.isfinite(value) or value < 0:
        sys.exit("%s=%r: expected a finite number >= 0" % (name, raw))
    return value


def sleep(seconds):
    end = time.monotonic() + seconds
    while not stopping and time.monotonic() < end:
        time.sleep(min(0.05, end - time.monotonic()))


def state_client():
    if not os.environ.get(tori_state.SOCKET_ENV):
        return None
    return tori_state.Client()


def metacog(interval, ticks):
    threshold = env_float("TORI_NOVELTY_THRESHOLD", 0.01)
    rng = random.Random(os.getpid())
    mean, n, novel = 0.0, 0, 0
    state = state_client()
    if state is not None:
        n = len(state.list("observations/"))  # carry on from the state a previous run left
        log("found %d observations in the capsule's state" % n)
    while not stopping and (ticks == 0 or n < ticks):
        x = rng.gauss(0.0, 1.0)
        n += 1
        novelty = abs(x - mean) / (n + 1)
        mean += (x - mean) / n
        if novelty > threshold:
            novel += 1
            log("observation %d novelty=%.4f above threshold %.4f (%d novel so far)" % (n, novelty, threshold, novel))
        else:
            log("observation %d novelty=%.4f below threshold" % (n, novelty))
        if state is not None:
            record = {"n": n, "x": round(x, 6), "novelty": round(novelty, 6), "novel": novelty > threshold}
            state.put("observations/%06d" % n, json.dumps(record, sort_keys=True))  # returns once durable; waits out 429s
            if novelty > threshold:
                state.append_event({"type": "novel", "n": n, "novelty": round(novelty, 6)})
        sleep(interval)
    log("stopped cleanly after %d observations, %d novel" % (n, novel))


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def observer(interval, ticks):
    n = 0
    state = state_client()
    while not stopping and (ticks == 0 or n < ticks):
        n += 1
        rss = "?"
        status = read("/proc/self/status") or ""
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss = line.split(":", 1)[1].strip()
        limit = read("/sys/fs/cgroup/memory.max") or read("/sys/fs/cgroup/memory/memory.limit_in_bytes") or "?"
        seen = ""
        if state is not None:
            keys = state.list("observations/")
            if keys:
                last = json.loads(state.get(keys[-1]))
                seen = " observations=%d last novelty=%.4f" % (len(keys), last["novelty"])
        log("heartbeat %d: pid=%d rss=%s memory limit=%s capsule=%s release=%s%s" % (
            n, os.getpid(), rss, limit, os.environ.get("TORI_CAPSULE", "-"), os.environ.get("TORI_RELEASE", "-")[:12], seen))
        sleep(interval)
    log("stopped cleanly after %d heartbeats" % n)


ROLES = {"tori-metacog": metacog, "tori-observer": observer}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", default=os.environ.get("TORI_SERVICE"), help="tori-metacog or tori-observer (default: $TORI_SERVICE)")
    p.add_argument("--interval", type=float, default=env_float("TORI_INTERVAL", 1.0), help="seconds between steps")
    p.add_argument("--ticks", type=int, default=0, help="stop after this many steps (0: run until signalled)")
    args = p.parse_args()
    if args.role not in ROLES:
        sys.exit("unknown role %r: set TORI_SERVICE or --role to one of %s" % (args.role, ", ".join(sorted(ROLES))))
    os.environ["TORI_SERVICE"] = args.role
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("started (pid %d, python %s)" % (os.getpid(), sys.version.split()[0]))
    ROLES[args.role](args.interval, args.ticks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
