#!/usr/bin/env python3
"""Summarize bench/start results (hyperfine.json, startstop.json, phases.json,
meta.txt in OUT) as Markdown. Usage: report.py OUT"""
import json
import os
import statistics
import sys


def q(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x):
    return f"{x * 1000:.1f}"


def main():
    out = sys.argv[1]
    print("## Capsule start and stop: results\n")
    with open(os.path.join(out, "meta.txt")) as f:
        for line in f:
            print(f"- {line.strip()}")
    hfp = os.path.join(out, "hyperfine.json")
    if os.path.exists(hfp):
        hyperfine(hfp)
    startstop(out)
    phases(out)


def hyperfine(hfp):
    with open(hfp) as f:
        hfr = json.load(f)["results"]
    hf = {r["command"]: r["times"] for r in hfr}
    hf_fail = {r["command"]: sum(1 for c in r.get("exit_codes", []) if c) for r in hfr}
    med = {k: statistics.median(v) for k, v in hf.items()}
    p90 = {k: q(v, 0.9) for k, v in hf.items()}
    # crun ran inside unshare -m + a mount script; ns-only is that wrapper alone.
    print(f"\n### Whole process, /bin/true (hyperfine, {len(hf['tori-run'])} runs each, ms)\n")
    print("| command | median | p90 | min | tori-run / this (median) | failed runs |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [(k, hf[k]) for k in ("tori-run", "runc", "crun+ns", "ns-only", "tori-run-version") if k in hf]
    if "crun+ns" in hf:
        rows.insert(3, ("crun (crun+ns − ns-only median)", [t - med["ns-only"] for t in hf["crun+ns"]]))
    for name, ts in rows:
        m = statistics.median(ts)
        ratio = f"{med['tori-run'] / m:.2f}×" if m > 0 else ""
        print(f"| {name} | {ms(m)} | {ms(q(ts, 0.9))} | {ms(min(ts))} | {ratio} | {hf_fail.get(name, '')} |")



def whole_table(title, ss, fails):
    """Rows of "mode": "whole" runs (interleaved, fork/exec to exit)."""
    print(f"\n### {title}\n")
    print("| command | median | p90 | max | failed |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in ss.items():
        t = [r["total"] for r in runs]
        if t:
            print(f"| {name} | {ms(statistics.median(t))} | {ms(q(t, 0.9))} | {ms(max(t))} | {len(fails.get(name, []))} |")
    med = {k: statistics.median([r["total"] for r in v]) for k, v in ss.items() if v}
    tori = [k for k in med if k.startswith("tori-run")]
    runc = [k for k in med if k.startswith("runc")]
    if tori and runc:
        worst = max(r["total"] for r in ss[tori[0]])
        print(f"\nwhole process tori-run/runc **{med[tori[0]] / med[runc[0]]:.2f}×** (medians, interleaved); "
              f"slowest tori-run run {ms(worst)} ms" + (" — **over 1 s**" if worst > 1 else ""))


def startstop(out):
    with open(os.path.join(out, "startstop.json")) as f:
        ssj = json.load(f)
    ss, ss_fail = ssj["results"], ssj["failures"]
    whole = {k: v for k, v in ss.items() if v and "total" in v[0]}
    ss = {k: v for k, v in ss.items() if k not in whole}
    if whole:
        whole_table(f"Whole process, /bin/true, interleaved ({len(next(iter(whole.values())))} rounds, ms)", whole, ss_fail)
    bp = os.path.join(out, "beside.json")
    if os.path.exists(bp):
        with open(bp) as f:
            bj = json.load(f)
        whole_table("The same while another capsule runs (ms)", bj["results"], bj["failures"])
    print(f"\n### Start to ready and stop, long-running process ({len(next(iter(ss.values())))} rounds, ms)\n")
    print("| command | start median | start p90 | stop median | stop p90 | failed |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in ss.items():
        st = [r["start"] for r in runs]
        sp = [r["stop"] for r in runs]
        print(f"| {name} | {ms(statistics.median(st))} | {ms(q(st, 0.9))} | {ms(statistics.median(sp))} | {ms(q(sp, 0.9))} | {len(ss_fail.get(name, []))} |")
    ready = {k: statistics.median([r["start"] for r in v]) for k, v in ss.items()}
    stop = {k: statistics.median([r["stop"] for r in v]) for k, v in ss.items()}
    if "tori-run" in ready and "runc" in ready:
        line = (f"\nstart ratio tori-run/runc **{ready['tori-run'] / ready['runc']:.2f}×**; "
                f"stop ratio tori-run/runc **{stop['tori-run'] / stop['runc']:.2f}×**")
        if "crun+ns" in ready:
            line += (f"; tori-run/crun+ns start {ready['tori-run'] / ready['crun+ns']:.2f}×, "
                     f"stop {stop['tori-run'] / stop['crun+ns']:.2f}×")
        print(line)
    # tori-run's own log lines, by arrival (ms after exec)
    tr = ss.get("tori-run", [])
    if tr:
        keys = sorted({k for r in tr for k in r["events"]}, key=lambda k: statistics.median([r["events"][k] for r in tr if k in r["events"]]))
        print("\ntori-run's log lines, arrival after exec (median ms): " + "; ".join(
            f"{k} {ms(statistics.median([r['events'][k] for r in tr if k in r['events']]))}" for k in keys))



def phases(out):
    pp = os.path.join(out, "phases.json")
    if os.path.exists(pp):
        with open(pp) as f:
            ph = json.load(f)
        tot = ph["totals"]["total (traced)"]
        print(f"\n### Where tori-run's time goes (strace, median of {ph['runs']} traced runs; traced total {tot:.0f} ms)\n")
        print("| phase | ms (traced) | share |")
        print("|---|---:|---:|")
        for k, v in ph["phases_ms"].items():
            print(f"| {k} | {v:.1f} | {100 * v / tot:.0f}% |")
        print()
        for k, v in ph["totals"].items():
            print(f"- {k}: {v:g}")


if __name__ == "__main__":
    main()
