#!/usr/bin/env python3
"""Split traced `tori-run run` runs into phases.

Usage: phases.py A.txt... -- B.txt...   prints JSON

A: `strace -f -ttt -T` of `tori-run run` (a /bin/true service), tracing only
the milestone syscalls below; B: `strace -f -T -y -e trace=write,mkdirat` of
the same, for the cost of moving processes between cgroups (-y resolves every
fd's path, too slow for A).

Milestones are syscalls whose meaning is unambiguous (the cgroup probe's
mkdirs, the overlay mount, libcontainer's re-exec as "init", nsexec's clone,
the exec of the capsule's init, the connect to its socket, the service's exec,
the SIGKILL of the init, the overlay's umount, the exit). strace slows every
traced syscall, so absolute numbers run high; the shares are what to read.
"""
import json
import re
import statistics
import sys

LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
DUR = re.compile(r"<(\d+\.\d+)>\s*$")


def events(path):
    """Yield (pid, start, name, text, duration) per finished syscall."""
    pending = {}
    with open(path, errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, ts, rest = int(m.group(1)), float(m.group(2)), m.group(3)
            if rest.startswith("---") or rest.startswith("+++"):
                continue
            r = RESUMED.match(rest)
            if r:
                if pid in pending:
                    name, start, text = pending.pop(pid)
                    d = DUR.search(rest)
                    yield pid, start, name, text + r.group(2), float(d.group(1)) if d else ts - start
                continue
            c = CALL.match(rest)
            if not c:
                continue
            if rest.endswith("<unfinished ...>"):
                pending[pid] = (c.group(1), ts, rest)
                continue
            d = DUR.search(rest)
            yield pid, ts, c.group(1), rest, float(d.group(1)) if d else 0.0


def moves(path):
    ev = list(events(path))
    mv = [e for e in ev if e[2] == "write" and re.search(r"/sys/fs/cgroup/[^>]*/(cgroup\.procs|tasks)>", e[3])]
    return {
        "cgroup mkdirs": len([e for e in ev if e[2] == "mkdirat" and "/sys/fs/cgroup" in e[3]]),
        "cgroup file writes": len([e for e in ev if e[2] == "write" and "</sys/fs/cgroup/" in e[3]]),
        "process moves (cgroup.procs/tasks writes)": len(mv),
        "process moves, ms in the syscall (traced)": sum(e[4] for e in mv) * 1000,
    }


def one(path):
    ev = list(events(path))
    ev.sort(key=lambda e: e[1])
    main = ev[0][0]
    t0 = ev[0][1]
    ms = lambda t: (t - t0) * 1000.0

    def first(pred, after=0.0):
        for e in ev:
            if e[1] >= after and pred(e):
                return e
        return None

    def last(pred, before=float("inf")):
        out = None
        for e in ev:
            if e[1] > before:
                break
            if pred(e):
                out = e
        return out

    # Go runs syscalls on any of its threads: a milestone of the host
    # process is matched by what it does, not by the thread that did it.
    cg_first = first(lambda e: e[2] == "mkdirat" and "/sys/fs/cgroup" in e[3] and "tori-probe" not in e[3])
    probe_first = first(lambda e: e[2] == "mkdirat" and "tori-probe" in e[3])
    probe_last = last(lambda e: e[2] == "unlinkat" and "tori-probe" in e[3])
    if probe_first is None:  # no probe on every run any more: a zero-length phase
        probe_first = probe_last = (main, cg_first[1], "", "", 0.0)
    overlay = first(lambda e: e[2] == "mount" and '"overlay"' in e[3])
    lc_exec = first(lambda e: e[2] == "execve" and '"init"]' in e[3])
    nsexec_clone = first(lambda e: e[2] == "clone" and e[0] == lc_exec[0], lc_exec[1])
    c_mount_first = first(lambda e: e[2] == "mount" and e[0] != main, lc_exec[1])
    init_exec = first(lambda e: e[2] == "execve" and "capsule-init" in e[3])
    c_mount_last = last(lambda e: e[2] in ("mount", "umount2") and e[0] != main, init_exec[1])
    # The host dials the init's socket (its own listener) as soon as the
    # container runs, before or after the init's exec: not a milestone.
    svc_exec = first(lambda e: e[2] == "execve" and '"/bin/true"' in e[3], init_exec[1])
    svc_exit = first(lambda e: e[2] == "exit_group" and e[0] == svc_exec[0], svc_exec[1])
    kill = first(lambda e: e[2] == "pidfd_send_signal" and "SIGKILL" in e[3], svc_exit[1]) or \
        first(lambda e: e[2] == "kill" and "SIGKILL" in e[3], svc_exit[1])
    cg_rm_last = last(lambda e: e[2] == "unlinkat" and "/sys/fs/cgroup" in e[3])
    umount = first(lambda e: e[2] == "umount2" and "/instances/" in e[3], kill[1])
    end = last(lambda e: e[2] == "exit_group" and e[0] == main) or ev[-1]

    p = {}
    p["go start, CLI, manifest (exec -> cgroup probe)"] = ms(probe_first[1])
    p["cgroup probe: mkdir+rmdir in every hierarchy (cgroups.Detect; 0: none)"] = ms(probe_last[1] + probe_last[4]) - ms(probe_first[1])
    p["instance dirs, lock, record, sweep"] = ms(cg_after(ev, probe_last)) - ms(probe_last[1] + probe_last[4])
    p["capsule cgroups (mkdir x hierarchies, limits)"] = ms(overlay[1]) - ms(cg_after(ev, probe_last))
    p["overlay mount (syscall)"] = overlay[4] * 1000
    p["libcontainer: config, state, spawn of `tori-run init`"] = ms(lc_exec[1]) - ms(overlay[1] + overlay[4])
    p["nsexec stage 0 (parent applies cgroups, sends bootstrap)"] = ms(nsexec_clone[1]) - ms(lc_exec[1])
    p["nsexec stages 1-2 + Go start of libcontainer init"] = ms(c_mount_first[1]) - ms(nsexec_clone[1])
    p["container mounts (rootfs, /proc, /dev, binds, pivot)"] = ms(c_mount_last[1]) - ms(c_mount_first[1])
    p["caps, no_new_privs, exec of capsule-init"] = ms(init_exec[1]) - ms(c_mount_last[1])
    p["capsule-init Go start, service start via init (request, fork into cgroup, exec)"] = ms(svc_exec[1]) - ms(init_exec[1])
    p["service runs (/bin/true)"] = ms(svc_exit[1]) - ms(svc_exec[1])
    p["exit noticed -> teardown begins"] = ms(kill[1]) - ms(svc_exit[1])
    p["teardown: kill init, destroy container, cgroups"] = ms(cg_rm_last[1]) - ms(kill[1])
    p["teardown: overlay umount (syscall)"] = umount[4] * 1000 if umount else 0.0
    p["teardown: the rest (folder removal, exit)"] = ms(end[1]) - ms(cg_rm_last[1]) - (umount[4] * 1000 if umount else 0.0)
    totals = {
        "total (traced)": ms(end[1]),
        "exec -> service exec (traced)": ms(svc_exec[1]),
    }
    return p, totals


def cg_after(ev, probe_last):
    """Start of the capsule's cgroup creation: first mkdir in /sys/fs/cgroup after the probe."""
    for e in ev:
        if e[1] >= probe_last[1] and e[2] == "mkdirat" and "/sys/fs/cgroup" in e[3]:
            return e[1]
    raise ValueError("no cgroup mkdir after the probe")


def main():
    args = sys.argv[1:]
    sep = args.index("--") if "--" in args else len(args)
    runs = [one(p) for p in args[:sep]]
    mv = [moves(p) for p in args[sep + 1:]]
    med = lambda xs: round(statistics.median(xs), 2)
    out = {"runs": len(runs), "phases_ms": {}, "totals": {}}
    for k in runs[0][0]:
        out["phases_ms"][k] = med([r[0][k] for r in runs])
    for k in runs[0][1]:
        out["totals"][k] = med([r[1][k] for r in runs])
    for k in (mv[0] if mv else {}):
        out["totals"][k] = med([r[k] for r in mv])
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
