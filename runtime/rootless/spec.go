//go:build linux

package rootless

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	lcgroups "github.com/opencontainers/cgroups"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/runtime/plan"
)

// Mounts is what a capsule run without root mounts itself, in its own
// mount namespace inside its user namespace: the app's overlay and, with
// rootfs layers, the root's.
type Mounts struct {
	// App is the app's overlay, made inside the capsule (runtime's
	// appOverlayMount with userxattr); nil for a read-only capsule, whose
	// app stays bound read-only.
	App *rspec.Mount
	// Layers are the rootfs layers, top first; none: the host layer.
	Layers []string
	// Rootfs is the capsule's root folder (host side).
	Rootfs string
	// RecursiveRO is the recursive read-only bind option on this kernel
	// (plan.RecursiveRO).
	RecursiveRO string
}

// Spec turns a capsule's spec into one a user can run: a user namespace
// mapping the user to root (and its subuid/subgid ranges, when it has
// them, to the ids after it), /sys bound from the host (sysfs cannot be
// mounted without a network namespace of one's own), no uid=/gid= mount
// options, and /app as an overlay mounted inside the capsule rather than
// bound from the host. Rootfs layers are mounted inside the capsule too
// (rootLayerMounts), first: the kernel allows OverlayFS in a user namespace
// since 5.11, checked before (Overlay).
// Without cgroups (no limits), no cgroup namespace or filesystem and no
// cgroup path either; with them (a delegated v2 subtree) those stay.
func Spec(s *rspec.Spec, rm Mounts, withCgroups bool) error {
	s.Linux.Namespaces = append(slices.DeleteFunc(s.Linux.Namespaces, func(n rspec.LinuxNamespace) bool {
		return n.Type == rspec.UserNamespace || (n.Type == rspec.CgroupNamespace && !withCgroups)
	}), rspec.LinuxNamespace{Type: rspec.UserNamespace})
	ids := detectIDMaps() // idmap.go: the user as root, and its subordinate ranges
	s.Linux.UIDMappings, s.Linux.GIDMappings = ids.uids, ids.gids
	s.Linux.Resources = nil // tori-run's cgroups package writes the limits, never libcontainer
	if !withCgroups {
		s.Linux.CgroupsPath = ""
	}
	netns := slices.ContainsFunc(s.Linux.Namespaces, func(n rspec.LinuxNamespace) bool { return n.Type == rspec.NetworkNamespace })
	var mounts []rspec.Mount
	if len(rm.Layers) > 0 {
		lm, err := rootLayerMounts(rm.Layers, rm.Rootfs, rm.RecursiveRO)
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
		case mt.Destination == plan.CapsuleApp && rm.App != nil:
			mt = *rm.App
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
// layers' folders of that name (a read-only bind, with option roBind, when
// one layer has it), and what the layers have at the top that is not a
// folder (symlinks such as bin -> usr/bin, files) is made in the root
// folder. The capsule's root is read-only either way (docs/RUNTIME.md), as
// with root, where the layers are one overlay; writes go to /app, /tmp,
// /run and volumes. /proc, /dev and /sys are the capsule's own mounts.
func rootLayerMounts(layers []string, rootfs, roBind string) ([]rspec.Mount, error) {
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
				Options: []string{"rbind", roBind, "nosuid", "nodev"}})
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

// HasLimits reports whether libcontainer was given any resource limit:
// with RootlessCgroups it would drop one silently, so a rootless start
// that sees one refuses.
func HasLimits(r *lcgroups.Resources) bool {
	return r.Memory != 0 || r.MemoryReservation != 0 || r.MemorySwap != 0 || r.CpuQuota != 0 || r.CpuShares != 0 ||
		r.CpuWeight != 0 || r.PidsLimit != nil || r.CpusetCpus != "" || r.BlkioWeight != 0 || len(r.Unified) > 0
}
