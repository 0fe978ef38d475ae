#!/usr/bin/env python3
"""Make an OCI bundle equivalent to a tori-run capsule on the host layer.

Usage: mkbundle.py BUNDLE TORI_SPEC.json CGROUPS_PATH ARG...

BUNDLE must hold the config.json `runc spec` wrote. The result runs ARG... in
the same shape as a tori-run capsule: a read-only root folder holding only
mount points and the host's merged-/usr symlinks, the host's /usr and /etc
(whatever tori-run binds) bound read-only, tmpfs /tmp and /run, namespaces
pid, mount, ipc and uts (network shared with the host), and tori-run's
capabilities, no_new_privs, masked and read-only paths, taken from
`tori-run spec` (TORI_SPEC.json) so that the two cannot drift apart.
What tori-run adds and a plain bundle has no use for (every mount from its
instance folder: the /app overlay, the init's and the state proxy's sockets;
and its own binary) is left out; its cost is part of what the
benchmark measures.
"""
import json
import os
import sys


def main():
    bundle, tori_spec, cgroups_path, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    if not args:
        sys.exit("mkbundle.py: no process arguments")
    cfg_path = os.path.join(bundle, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    with open(tori_spec) as f:
        tori = json.load(f)

    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs, exist_ok=True)
    for d in ("proc", "dev", "sys", "tmp", "run"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)

    mounts = list(cfg["mounts"])  # runc's defaults: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, /sys/fs/cgroup
    have = {m["destination"] for m in mounts}
    # tori-run's own mounts come from its instance folder (the app's overlay,
    # the init's socket folder, the state socket's...), whatever they are
    # called today: that folder is the parent of the spec's root.
    instance = os.path.dirname(os.path.normpath(tori["root"]["path"])) + "/"
    for m in tori["mounts"]:
        # The host layer's binds (tori-run: /usr, /etc and any real /bin,
        # /lib64... folder) and the tmpfs mounts, not tori-run's own.
        if m["destination"] in have or m["destination"].startswith("/.tori/"):
            continue
        if m.get("source", "").startswith(instance):
            continue
        mounts.append(m)
        dest = os.path.join(rootfs, m["destination"].lstrip("/"))
        if os.path.isfile(m.get("source", "")) and not os.path.isdir(m.get("source", "")):
            # A file bound on its own (tori-run binds /etc's files one by one):
            # its mount point is an empty file.
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            open(dest, "a").close()
        else:
            os.makedirs(dest, exist_ok=True)
    # Merged-/usr hosts: /bin -> usr/bin and so on, as tori-run's rootfs has.
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + d
        link = os.path.join(rootfs, d)
        if os.path.islink(host) and not os.path.lexists(link):
            os.symlink(os.readlink(host), link)

    cfg["root"] = {"path": "rootfs", "readonly": True}
    cfg["hostname"] = tori.get("hostname", "bench")
    cfg["mounts"] = mounts
    p = cfg["process"]
    p["terminal"] = False
    p["args"] = args
    p["cwd"] = "/"
    p["env"] = tori["process"]["env"]
    p["noNewPrivileges"] = tori["process"].get("noNewPrivileges", True)
    p["capabilities"] = tori["process"]["capabilities"]
    if "rlimits" in tori["process"]:
        p["rlimits"] = tori["process"]["rlimits"]
    else:
        p.pop("rlimits", None)
    lx = cfg["linux"]
    lx["namespaces"] = tori["linux"]["namespaces"]
    lx["maskedPaths"] = tori["linux"]["maskedPaths"]
    lx["readonlyPaths"] = tori["linux"]["readonlyPaths"]
    lx["cgroupsPath"] = cgroups_path
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)


if __name__ == "__main__":
    main()
