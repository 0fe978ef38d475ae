//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	lcgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/specconv"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// A capsule without limits, run by a user who is not root: the same
// container but in a user namespace that maps the user (only) to root, the
// app's overlay mounted inside the capsule's own mount namespace (the
// kernel allows that in a user namespace since 5.11, and the mount ends with
// the capsule), and no cgroups at all: checkRootlessLimits has refused
// every capsule that asks for a limit, so no limit can be dropped, and
// libcontainer is given no resources (its RootlessCgroups ignores errors).
//
// Without cgroups a service's stop signals its main process and a kill
// ends that process only; what it started is killed with the capsule (the
// end of its PID namespace). Services cannot use the state proxy (it knows
// callers by their cgroup); the host's admin socket works.
//
// Listening sockets (sockets:) work as with root: tori-run opens them on
// the host as the user (a tcp port below net.ipv4.ip_unprivileged_port_start
// is refused by the kernel, named in the error), hands them to the init
// over its socket (SCM_RIGHTS: no cgroup involved), and a unix socket's
// file is bound into the capsule.

// createRootless is Create for a user who is not root.
func createRootless(ctx context.Context, t *Target, o Options) (_ *Instance, err error) {
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	m := t.Manifest
	if err := rootlessRefusal(t); err != nil {
		return nil, err
	}
	id := newID(m.Name)
	i := &Instance{ID: id, Manifest: m, Release: t.Release, BuildSHA: t.BuildSHA, paths: newInstancePaths(o.Root, id), opts: o}
	i.Log = CapsuleLogger(o.Log, m.Name, t.Release, t.BuildSHA).With().Str("instance", id).Bool("rootless", true).Logger()
	if i.confine, err = confineFor(t, o); err != nil {
		return nil, err
	}
	if err := overlayReady(); err != nil {
		return nil, err
	}
	if err := SweepStale(ctx, o); err != nil {
		i.Log.Warn().Err(err).Msg("cleaning up after an earlier instance")
	}
	defer func() {
		if err != nil {
			if cerr := i.Destroy(context.WithoutCancel(ctx)); cerr != nil {
				i.Log.Error().Err(cerr).Msg("cleaning up the failed start")
			}
		}
	}()
	if err := i.createDirs(); err != nil {
		return i, err
	}
	if err := i.openSockets(); err != nil {
		return i, err
	}
	if err := i.startState(); err != nil {
		return i, err
	}
	if err := i.startRootlessContainer(t.AppDir); err != nil {
		return i, err
	}
	if err := i.holdSockets(); err != nil {
		return i, err
	}
	i.Log.Info().Int(FieldPID, i.initPID()).Msg("capsule started")
	return i, nil
}

func (i *Instance) startRootlessContainer(appDir string) error {
	spec, err := buildSpec(specInput{
		Manifest: i.Manifest, ID: i.ID, Rootfs: i.paths.Rootfs, App: appDir, NotifyDir: i.paths.Notify,
		StateDir: i.paths.State, Binary: i.opts.Binary, Env: []string{"PATH=" + capsulePath},
		AppSource: i.confine.appSource, Volumes: i.confine.volumes, SocketMounts: i.sockets.mounts(),
	})
	if err != nil {
		return err
	}
	if err := rootlessSpec(spec, i.Manifest.ReadOnly, appDir, i.paths.Upper, i.paths.Work, false); err != nil {
		return err
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: i.ID, Spec: spec,
		RootlessEUID: true, RootlessCgroups: true, NoPivotRoot: os.Getenv("TORI_NO_PIVOT_ROOT") == "1"})
	if err != nil {
		return fmt.Errorf("container config: %w", err)
	}
	if cfg.Cgroups != nil && cfg.Cgroups.Resources != nil && hasLimits(cfg.Cgroups.Resources) {
		// RootlessCgroups would drop it silently: refuse.
		return fmt.Errorf("rootless container %s: a cgroup limit reached libcontainer, which would ignore it", i.ID)
	}
	return i.runInit(spec, cfg)
}

// hasLimits reports whether libcontainer was given any resource limit.
func hasLimits(r *lcgroups.Resources) bool {
	return r.Memory != 0 || r.MemoryReservation != 0 || r.MemorySwap != 0 || r.CpuQuota != 0 || r.CpuShares != 0 ||
		r.CpuWeight != 0 || r.PidsLimit != nil || r.CpusetCpus != "" || r.BlkioWeight != 0 || len(r.Unified) > 0
}

// rootlessSpec turns a capsule's spec into one a user can run: a user
// namespace mapping the user to root (and its subuid/subgid ranges, when it
// has them, to the ids after it), /sys bound from the host (sysfs
// cannot be mounted without a network namespace of one's own), no uid=/gid=
// mount options, and /app as an overlay mounted inside the capsule rather
// than bound from the host. Without cgroups (no limits), no cgroup
// namespace or filesystem and no cgroup path either; with them (a delegated
// v2 subtree) those stay.
func rootlessSpec(s *rspec.Spec, readOnly bool, appDir, upper, work string, withCgroups bool) error {
	s.Linux.Namespaces = append(slices.DeleteFunc(s.Linux.Namespaces, func(n rspec.LinuxNamespace) bool {
		return n.Type == rspec.UserNamespace || (n.Type == rspec.CgroupNamespace && !withCgroups)
	}), rspec.LinuxNamespace{Type: rspec.UserNamespace})
	ids := rootlessIDMaps() // rootless.go: the user as root, and its subordinate ranges
	s.Linux.UIDMappings, s.Linux.GIDMappings = ids.uids, ids.gids
	s.Linux.Resources = nil // tori-run's cgroups package writes the limits, never libcontainer
	if !withCgroups {
		s.Linux.CgroupsPath = ""
	}
	netns := slices.ContainsFunc(s.Linux.Namespaces, func(n rspec.LinuxNamespace) bool { return n.Type == rspec.NetworkNamespace })
	var mounts []rspec.Mount
	for _, mt := range s.Mounts {
		switch {
		case mt.Destination == "/sys/fs/cgroup" && !withCgroups:
			continue
		case mt.Destination == "/sys" && !netns:
			mt = rspec.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
		case mt.Destination == capsuleApp && !readOnly:
			mt = appOverlayMount(appDir, upper, work, true)
		}
		mt.Options = slices.DeleteFunc(slices.Clone(mt.Options), func(o string) bool {
			return strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=")
		})
		mounts = append(mounts, mt)
	}
	s.Mounts = mounts
	return nil
}

var errNoCgroup = errors.New("no cgroup: a capsule run without root has none")

// rootlessRefusal names what a capsule asks for that a run without root and
// without cgroups does not give, before anything is made: never run it
// without that silently.
func rootlessRefusal(t *Target) error {
	m := t.Manifest
	if err := rootlessUserMapped(t); err != nil {
		return err
	}
	if len(t.Layers) > 0 {
		return fmt.Errorf("%s: layers %v: rootfs layers need root for now (their overlay is mounted on the host); use layers: [host]", m.Source, m.Layers)
	}
	return nil
}

// rootlessUserMapped refuses a capsule whose user: has no id in the user
// namespace a capsule run without root gets (rootlessIDMaps).
func rootlessUserMapped(t *Target) error {
	m := t.Manifest
	if m.User == "" {
		return nil
	}
	uid, gid, err := resolveUser(m, t.Layers)
	if err != nil {
		return err
	}
	if ids := rootlessIDMaps(); !ids.maps(uid, gid) {
		return fmt.Errorf("%s: user: %s (uid %d, gid %d) is not mapped in the capsule's user namespace: %s; give your user subordinate ids (%s), or run the capsule as root inside (no user:)",
			m.Source, m.User, uid, gid, ids.describe(), ids.hint)
	}
	return nil
}
