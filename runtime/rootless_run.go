//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	lcgroups "github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/specconv"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime/hostfacts"
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
	if err := resolveInit(&o, o.Log, true); err != nil {
		return nil, err
	}
	m := t.Manifest
	if err := rootlessRefusal(t); err != nil {
		return nil, err
	}
	id := newID(m.Name)
	i := &Instance{ID: id, Manifest: m, Release: t.Release, BuildSHA: t.BuildSHA, paths: o.layout().Instance(id), opts: o}
	i.Log = CapsuleLogger(o.Log, m.Name, t.Release, t.BuildSHA).With().Str("instance", id).Bool("rootless", true).Logger()
	c, err := confineFor(t, o)
	if err != nil {
		return nil, err
	}
	facts, err := hostFacts(nil, o.Binary, o.InitBinary) // no cgroups
	if err != nil {
		return nil, err
	}
	if i.plan, err = compilePlan(t, o, id, facts, c, t.AppDir); err != nil {
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
	if err := i.startRootlessContainer(t.AppDir, t.Layers); err != nil {
		return i, err
	}
	if err := i.holdSockets(); err != nil {
		return i, err
	}
	i.Log.Info().Int(FieldPID, i.initPID()).Msg("capsule started")
	return i, nil
}

func (i *Instance) startRootlessContainer(appDir string, layers []string) error {
	spec, err := i.containerSpec()
	if err != nil {
		return err
	}
	if err := rootlessSpec(spec, i.rootlessMounts(appDir, layers), false); err != nil {
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

// rootlessMounts is what a capsule run without root mounts itself, in its
// own mount namespace inside its user namespace: the app's overlay and,
// with rootfs layers, the root's.
type rootlessMounts struct {
	readOnly         bool
	app, upper, work string
	layers           []string // rootfs layers, top first; none: the host layer
	rootfs           string   // the capsule's root folder (host side)
}

func (i *Instance) rootlessMounts(appDir string, layers []string) rootlessMounts {
	return rootlessMounts{readOnly: i.Manifest.ReadOnly, app: appDir, upper: i.paths.Upper, work: i.paths.Work,
		layers: layers, rootfs: i.paths.Rootfs}
}

// rootlessSpec turns a capsule's spec into one a user can run: a user
// namespace mapping the user to root (and its subuid/subgid ranges, when it
// has them, to the ids after it), /sys bound from the host (sysfs
// cannot be mounted without a network namespace of one's own), no uid=/gid=
// mount options, and /app as an overlay mounted inside the capsule rather
// than bound from the host. Rootfs layers are mounted inside the capsule
// too (rootLayerMounts), first: the kernel allows OverlayFS in a user
// namespace since 5.11, checked before.
// Without cgroups (no limits), no cgroup namespace or filesystem and no
// cgroup path either; with them (a delegated v2 subtree) those stay.
func rootlessSpec(s *rspec.Spec, rm rootlessMounts, withCgroups bool) error {
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
	if len(rm.layers) > 0 {
		lm, err := rootLayerMounts(rm.layers, rm.rootfs)
		if err != nil {
			return err
		}
		mounts = append(mounts, lm...)
	}
	for _, mt := range s.Mounts {
		switch {
		case mt.Destination == "/sys/fs/cgroup" && !withCgroups:
			continue
		case mt.Destination == "/sys" && !netns:
			mt = rspec.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
		case mt.Destination == capsuleApp && !rm.readOnly:
			mt = appOverlayMount(rm.app, rm.upper, rm.work, true)
		}
		mt.Options = slices.DeleteFunc(slices.Clone(mt.Options), func(o string) bool {
			return strings.HasPrefix(o, "uid=") || strings.HasPrefix(o, "gid=")
		})
		mounts = append(mounts, mt)
	}
	s.Mounts = mounts
	return nil
}

// rootLayerMounts makes a capsule's / from rootfs layers (top first)
// without root. libcontainer mounts nothing on the root folder itself (it
// refuses a mount whose destination is /), and an overlay mounted on the
// host would need root; so each top-level folder of the layers is mounted
// on its own inside the capsule's mount namespace: the overlay of the
// layers' folders of that name (a read-only bind when one layer has it),
// and what the layers have at the top that is not a folder (symlinks such
// as bin -> usr/bin, files) is made in the root folder. The capsule's root
// is read-only either way (docs/RUNTIME.md), as with root, where the
// layers are one overlay; writes go to /app, /tmp, /run and volumes. /proc,
// /dev and /sys are the capsule's own mounts.
func rootLayerMounts(layers []string, rootfs string) ([]rspec.Mount, error) {
	type top struct {
		name  string
		lower []string // folders, top first; nil: not a folder
	}
	var tops []*top
	seen := map[string]*top{}
	hidden := map[string]bool{} // a non-folder above hides the folders below
	for _, l := range layers {
		entries, err := os.ReadDir(l)
		if err != nil {
			return nil, fmt.Errorf("rootfs layer %s: %w", l, err)
		}
		for _, e := range entries {
			n := e.Name()
			if n == "proc" || n == "dev" || n == "sys" || hidden[n] {
				continue
			}
			t := seen[n]
			if t == nil {
				t = &top{name: n}
				seen[n] = t
				tops = append(tops, t)
				if !e.IsDir() { // the topmost is not a folder: it is what / shows
					hidden[n] = true
					if err := copyTopEntry(filepath.Join(l, n), filepath.Join(rootfs, n)); err != nil {
						return nil, err
					}
					continue
				}
			}
			if !e.IsDir() {
				hidden[n] = true // below a folder: hidden, as an overlay's whiteout-free merge does
				continue
			}
			t.lower = append(t.lower, filepath.Join(l, n))
		}
	}
	var out []rspec.Mount
	for _, t := range tops {
		switch {
		case t.lower == nil:
		case len(t.lower) == 1: // an overlay needs two lower folders without an upper one
			out = append(out, rspec.Mount{Destination: "/" + t.name, Type: "bind", Source: t.lower[0],
				Options: []string{"rbind", roRecursive(), "nosuid", "nodev"}})
		default:
			out = append(out, rspec.Mount{Destination: "/" + t.name, Type: "overlay", Source: "overlay",
				Options: []string{"lowerdir=" + strings.Join(t.lower, ":"), "ro", "nosuid", "nodev", "userxattr"}})
		}
	}
	return out, nil
}

// copyTopEntry makes a top-level symlink or file of a rootfs layer in the
// capsule's root folder.
func copyTopEntry(from, to string) error {
	fi, err := os.Lstat(from)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, to); err != nil && !os.IsExist(err) {
			return fmt.Errorf("rootfs layers: %w", err)
		}
		return nil
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(from)
		if err != nil {
			return fmt.Errorf("rootfs layers: %w", err)
		}
		if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
			return fmt.Errorf("rootfs layers: %w", err)
		}
		return nil
	}
	return nil // a device or fifo at the top of a layer: not made without root
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
		if err := rootlessOverlay(kernelRelease()); err != nil {
			return fmt.Errorf("%s: layers %v: %w", m.Source, m.Layers, err)
		}
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

// rootlessOverlay says whether the kernel release mounts OverlayFS inside a
// user namespace (5.11+), which a capsule's rootfs layers need without root.
func rootlessOverlay(release string) error {
	v, err := hostfacts.ParseKernel(release)
	if err != nil || v.Less(hostfacts.UserNSOverlay) {
		return fmt.Errorf("rootfs layers without root need OverlayFS inside a user namespace, which needs Linux %s or newer; this kernel is %s: run the capsule as root, or upgrade the kernel", hostfacts.UserNSOverlay, release)
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown (uname: " + err.Error() + ")"
	}
	return unix.ByteSliceToString(u.Release[:])
}
