//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/runtime/rootless"
)

// A capsule run by a user who is not root: what is decided before anything
// is made (the delegated subtree and its limits, the id maps, what is
// refused, the spec's changes, the rootfs layers' mounts) is
// runtime/rootless's; the instance's side of it is here.

// ErrRootlessLimits is a capsule whose limits a non-root user cannot get
// (rootless.ErrLimits).
var ErrRootlessLimits = rootless.ErrLimits

// RootlessFindings are validate --host's findings for a non-root user
// (runtime/hostcheck), in the findings' vocabulary (rootless.Findings).
func RootlessFindings(kernel hostfacts.KernelVersion, kernelErr error, wanted []string) []Finding {
	var fs []Finding
	for _, f := range rootless.Findings(kernel, kernelErr, wanted) {
		fs = append(fs, Finding{Check: f.Check, Status: Status(f.Status), Message: f.Message, Hint: f.Hint})
	}
	return fs
}

// A capsule without limits, run by a user who is not root: the same
// container but in a user namespace that maps the user (only) to root, the
// app's overlay mounted inside the capsule's own mount namespace (the
// kernel allows that in a user namespace since 5.11, and the mount ends with
// the capsule), and no cgroups at all: rootless.CheckLimits has refused
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

// startWithoutCgroups is create's start for a user who is not root and a
// capsule without limits (Create has run rootless.Refusal): the store, then
// the container in its user namespace.
func (i *Instance) startWithoutCgroups(t *Target) error {
	if err := i.startState(); err != nil {
		return err
	}
	return i.startRootlessContainer(t.AppDir, t.Layers)
}

func (i *Instance) startRootlessContainer(appDir string, layers []string) error {
	spec, err := i.containerSpec()
	if err != nil {
		return err
	}
	if err := rootless.Spec(spec, i.rootlessMounts(appDir, layers), false); err != nil {
		return err
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: i.ID, Spec: spec,
		RootlessEUID: true, RootlessCgroups: true, NoPivotRoot: os.Getenv("TORI_NO_PIVOT_ROOT") == "1"})
	if err != nil {
		return fmt.Errorf("container config: %w", err)
	}
	if cfg.Cgroups != nil && cfg.Cgroups.Resources != nil && rootless.HasLimits(cfg.Cgroups.Resources) {
		// RootlessCgroups would drop it silently: refuse.
		return fmt.Errorf("rootless container %s: a cgroup limit reached libcontainer, which would ignore it", i.ID)
	}
	return i.runInit(spec, cfg)
}

// rootlessMounts is what the capsule mounts itself without root
// (rootless.Mounts): the app's overlay, with user xattrs, unless it is
// read-only, and the rootfs layers on its root folder.
func (i *Instance) rootlessMounts(appDir string, layers []string) rootless.Mounts {
	rm := rootless.Mounts{Layers: layers, Rootfs: i.paths.Rootfs, RecursiveRO: roRecursive()}
	if !i.Manifest.ReadOnly {
		app := appOverlayMount(appDir, i.paths.Upper, i.paths.Work, true)
		rm.App = &app
	}
	return rm
}

var errNoCgroup = errors.New("no cgroup: a capsule run without root has none")
