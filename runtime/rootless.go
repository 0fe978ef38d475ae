//go:build linux

package runtime

import (
	"context"
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

// createRootless is Create for a user who is not root.
func createRootless(ctx context.Context, t *Target, o Options) (_ *Instance, err error) {
	if err := resolveInit(&o, o.Log, true); err != nil {
		return nil, err
	}
	m := t.Manifest
	if err := rootless.Refusal(m, t.Layers, kernelRelease()); err != nil {
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
