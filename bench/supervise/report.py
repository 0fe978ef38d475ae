#!/usr/bin/env python3
"""Summarise bench/supervise's raw measurements as Markdown tables.

usage: report.py OUT WARM   (reads OUT/raw, prints Markdown, writes OUT/results.json)
"""
import calendar
import json
import os
import re
import sys
import time

out, warm = sys.argv[1], int(sys.argv[2])
raw = os.path.join(out, "raw")


def q(xs, p):
    """The p-quantile (nearest rank) of a sorted list."""
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs) + 0.5)) - 1))]


def stats(xs):
    xs = sorted(xs)
    return {"n": len(xs), "median": q(xs, 0.5), "p90": q(xs, 0.9), "min": xs[0] if xs else None,
            "max": xs[-1] if xs else None}


def ms(ns):
    return ns / 1e6


def stamps(path, skip):
    """Gaps from each run's end to the next run's start (ns), and the run times."""
    runs = [tuple(map(int, line.split())) for line in open(path) if line.strip()]
    gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
    return gaps[skip:], [e - s for s, e in runs]


def rfc3339(s):
    s = s.rstrip("Z")
    whole, _, frac = s.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac.ljust(9, "0")[:9])


def events(path, skip):
    """exited -> next started (ns), and started -> exited (ns)."""
    lat, run, exited, started = [], [], None, None
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        t = rfc3339(e["time"])
        if e["type"] == "exited":
            exited = t
            if started is not None:
                run.append(t - started)
        elif e["type"] == "started":
            started = t
            if exited is not None:
                lat.append(t - exited)
            exited = None
    return lat[skip:], run[skip:]


res = {"restart": {}, "footprint": {}}
rows = [
    ("Go fork/exec/wait loop (anchor)", "forkloop", warm),
    ("tori-run daemon, capsule", "tori-daemon", warm),
    ("tori-run run, capsule", "tori-run", warm),
    ("supervisord", "supervisord-floor.slow", 0),
    ("s6-supervise", "s6-floor.slow", 0),
    ("runsv (runit)", "runit-floor.slow", 0),
    ("supervisord, service lives 1.1 s", "supervisord-long.slow", 0),
    ("s6-supervise, service lives 1.1 s, ready at start", "s6-long.slow", 0),
    ("runsv, service lives 1.1 s", "runit-long.slow", 0),
]
print("### Restart latency\n")
print("From the service's exit to its replacement running, measured the same way for all: the service "
      "(`stamp`, static C) appends its CLOCK_REALTIME at the start of `main` and just before `exit(1)`; "
      "latency = next start − previous end. The supervisor's own view (tori-run: `exited` → `started` event "
      "times; the anchor: `Wait` returned → next `Start` returned) is the cross-check.\n")
print("| supervisor | restarts | median | p90 | min | max | own view: median | p90 |")
print("|---|---|---|---|---|---|---|---|")
for label, name, skip in rows:
    path = os.path.join(raw, "stamps", name)
    if not os.path.exists(path):
        continue
    gaps, runs = stamps(path, skip)
    s = stats(gaps)
    own = None
    if name == "forkloop":
        own = stats([int(x) for x in open(os.path.join(raw, "forkloop.internal"))][skip:])
    elif name == "tori-daemon":
        own = stats(events(os.path.join(raw, "tori-daemon.events.jsonl"), skip)[0])
    res["restart"][name] = {"stamps": s, "own": own, "service_run_median_ns": stats(runs)["median"]}
    ownc = f"{ms(own['median']):.2f} ms | {ms(own['p90']):.2f} ms" if own else "— | —"
    unit = (lambda v: f"{ms(v):.2f} ms") if s["median"] < 1e8 else (lambda v: f"{v / 1e9:.3f} s")
    print(f"| {label} | {s['n']} | {unit(s['median'])} | {unit(s['p90'])} | {unit(s['min'])} | "
          f"{unit(s['max'])} | {ownc} |")

# tori-run's restart, phase by phase: the stamps and the events share CLOCK_REALTIME.
evpath = os.path.join(raw, "tori-daemon.events.jsonl")
spath = os.path.join(raw, "stamps", "tori-daemon")
if os.path.exists(evpath) and os.path.exists(spath):
    import bisect
    evs = {}
    for line in open(evpath):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        evs.setdefault(e["type"], []).append(rfc3339(e["time"]))
    for v in evs.values():
        v.sort()
    runs = [tuple(map(int, line.split())) for line in open(spath) if line.strip()]
    first = lambda typ, t: (evs.get(typ, [])[bisect.bisect_left(evs.get(typ, []), t)]
                            if bisect.bisect_left(evs.get(typ, []), t) < len(evs.get(typ, [])) else None)
    ph = {"exit -> exited event": [], "exited -> starting event": [], "starting event -> replacement's main": [],
          "replacement's main -> started event": []}
    for i in range(warm, len(runs) - 1):
        end, nxt = runs[i][1], runs[i + 1][0]
        ex = first("exited", end)
        st = ex and first("starting", ex)
        sd = st and first("started", st)
        if not sd or not (st <= nxt <= sd) or nxt < end:
            continue
        ph["exit -> exited event"].append(ex - end)
        ph["exited -> starting event"].append(st - ex)
        ph["starting event -> replacement's main"].append(nxt - st)
        ph["replacement's main -> started event"].append(sd - nxt)
    res["restart_phases"] = {k: stats(v) for k, v in ph.items()}
    n = len(ph["exit -> exited event"])
    if n:
        print(f"\ntori-run daemon, one restart phase by phase ({n} restarts whose stamps fall between the events):\n")
        print("| phase | median | p90 |")
        print("|---|---|---|")
        for k, v in res["restart_phases"].items():
            print(f"| {k} | {ms(v['median']):.2f} ms | {ms(v['p90']):.2f} ms |")

# --- footprint and idle ---------------------------------------------------------
snaps = {}  # kind -> label -> pid -> record
for line in open(os.path.join(raw, "footprint.txt")):
    f = line.split()
    kind, label = f[0], f[1]
    rec = {"t": float(f[2]), "tasks": {}}
    for kv in f[3:]:
        k, _, v = kv.partition("=")
        if k.startswith("task"):
            a, b = v.split(",")
            rec["tasks"][k[4:]] = int(a) + int(b)
        elif k in ("comm", "role"):
            rec[k] = v
        else:
            rec[k] = int(v)
    snaps.setdefault(kind, {}).setdefault(label, {})[rec["pid"]] = rec

names = {"tori-run": "tori-run run", "tori-1": "tori-run run, 1 service", "tori-daemon": "tori-run daemon",
         "supervisord": "supervisord", "s6": "s6", "runit": "runit"}
print("\n### Footprint and idle wakeups\n")
print("The supervisor's own processes only (the services excluded). PSS and RSS from "
      "`/proc/PID/smaps_rollup` after the idle window (before it when there is none); wakeups = voluntary + "
      "involuntary context switches summed over every thread (`/proc/PID/task/*/status`) across the window.\n")
print("| supervisor | processes | PSS | RSS (sum) | PSS anon | threads | wakeups in window | window |")
print("|---|---|---|---|---|---|---|---|")
mib = lambda kb: f"{kb / 1024:.1f} MiB"
for kind in ["tori-run", "tori-1", "tori-daemon", "supervisord", "s6", "runit"]:
    if kind not in snaps:
        continue
    before = snaps[kind]["before"]
    after = snaps[kind].get("after")
    last = after or before

    def part(pids, lab):
        recs = [last[p] for p in pids]
        pss = sum(r.get("Pss", 0) for r in recs)
        rss = sum(r.get("Rss", 0) for r in recs)
        anon = sum(r.get("Pss_Anon", 0) for r in recs)
        thr = sum(r.get("threads", 0) for r in recs)
        wk, win = "—", "—"
        if after:
            wk = 0
            for p in pids:
                b = before.get(p, {"tasks": {}})["tasks"]
                for t, v in after[p]["tasks"].items():
                    wk += v - b.get(t, 0)
            win = f"{after[pids[0]]['t'] - before[pids[0]]['t']:.0f} s"
        res["footprint"].setdefault(kind, {})[lab] = {"processes": len(recs), "pss_kb": pss, "rss_kb": rss,
                                                      "pss_anon_kb": anon, "threads": thr, "wakeups": wk,
                                                      "fds": sum(r.get("fds", 0) for r in recs)}
        print(f"| {lab} | {len(recs)} | {mib(pss)} | {mib(rss)} | {mib(anon)} | {thr} | {wk} | {win} |")

    if kind.startswith("tori"):
        host = [p for p in last if last[p]["role"] == "top"]
        init = [p for p in last if p not in host]
        part(host + init, names[kind] + ": total")
        part(host, names[kind] + ": host process")
        part(init, names[kind] + ": capsule init")
    else:
        part(sorted(last), names[kind])

# Per-thread wakeups of tori-run's host process: which threads woke.
for kind in ["tori-run", "tori-daemon"]:
    if kind in snaps and "after" in snaps[kind]:
        b, a = snaps[kind]["before"], snaps[kind]["after"]
        for p, r in a.items():
            d = {t: v - b.get(p, {"tasks": {}})["tasks"].get(t, 0) for t, v in r["tasks"].items()}
            d = {t: v for t, v in d.items() if v}
            res["footprint"][kind].setdefault("threads_woken", {})[("host" if r["role"] == "top" else "init") + f" {p}"] = d

if "tori-run" in res["footprint"] and "tori-1" in res["footprint"]:
    n = int(os.environ.get("SERVICES", "100"))
    a, b = res["footprint"]["tori-run"], res["footprint"]["tori-1"]
    per = {k: (a[names['tori-run'] + ": " + k]["pss_kb"] - b[names['tori-1'] + ": " + k]["pss_kb"]) / (n - 1)
           for k in ["host process", "capsule init"]}
    fds = {k: (a[names['tori-run'] + ": " + k]["fds"] - b[names['tori-1'] + ": " + k]["fds"]) / (n - 1)
           for k in ["host process", "capsule init"]}
    res["per_service"] = {"pss_kb": per, "fds": fds}
    print(f"\nPer service ({n} vs 1 service): host process {per['host process']:.0f} KiB PSS and "
          f"{fds['host process']:.1f} fds, capsule init {per['capsule init']:.0f} KiB PSS and "
          f"{fds['capsule init']:.1f} fds.")
if "threads_woken" in res["footprint"].get("tori-run", {}):
    print("\ntori-run run, wakeups per thread over the window (tid: count): " +
          "; ".join(f"{k} {v}" for k, v in res["footprint"]["tori-run"]["threads_woken"].items()))

json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)

# The footprint goal side by side: tori-run run (host process + init) against s6 in the same run.
fp = res["footprint"]
if "tori-run" in fp and "s6" in fp:
    t, s = fp["tori-run"][names["tori-run"] + ": total"]["pss_kb"], fp["s6"]["s6"]["pss_kb"]
    res["pss_vs_s6"] = t / s if s else None
    print(f"\nPSS, tori-run run (host + init) / s6 (s6-svscan + s6-supervise), same run: "
          f"{t / 1024:.1f} / {s / 1024:.1f} MiB = **{t / s:.2f}×**")
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)

# No polling when idle: tori-run's processes must not wake up while their
# services idle (Go's sysmon may wake once a minute and a forced GC every 2
# min: MAX_IDLE_WAKEUPS, default 4 per minute of window, allows for those).
bad = []
for kind in ["tori-run", "tori-daemon"]:
    for lab, r in fp.get(kind, {}).items():
        if not lab.endswith(": total") or r["wakeups"] == "—":
            continue
        win = max(1.0, float(os.environ.get("IDLE_SECS", "60")))
        limit = float(os.environ.get("MAX_IDLE_WAKEUPS", 4 * max(1.0, win / 60)))
        if r["wakeups"] > limit:
            bad.append(f"{lab}: {r['wakeups']} wakeups in {win:.0f} s (at most {limit:.0f})")
if bad:
    print("\nFAIL: idle wakeups: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
