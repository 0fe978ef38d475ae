//go:build linux

package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/runtime/cgprobe"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/runtime/rootless"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/state/proxy"
)

// An instance lives in <root>/instances/<id>/ (layout.Instance names its
// files); libcontainer's state lives in <rundir>/containers/<id>, on tmpfs.

// instanceRecord is written before anything is created, so that a tori-run
// killed at any moment leaves enough behind for the next one to clean up.
type instanceRecord struct {
	ID         string `json:"id"`
	Capsule    string `json:"capsule"`
	Release    string `json:"release"`
	BuildSHA   string `json:"build_sha,omitempty"`
	CgroupPath string `json:"cgroup_path"`
	// ContainerRoot is libcontainer's root the container's state is in
	// (<rundir>/containers). Records written before it had this name say
	// state_root (readRecord reads both).
	ContainerRoot string    `json:"container_root"`
	OldStateRoot  string    `json:"state_root,omitempty"`
	Created       time.Time `json:"created"`
	// Owner is OwnerRun (a foreground tori-run run: swept when it is gone)
	// or OwnerDaemon (re-adopted by the next daemon, never swept by a run).
	Owner string `json:"owner"`
}

// Instance owners.
const (
	OwnerRun    = "run"
	OwnerDaemon = "daemon"
)

// Options configure where instances live and how they are made.
type Options struct {
	Root         string // TORI_ROOT: releases/, instances/
	RunDir       string // /run/tori: libcontainer state
	CgroupParent string // "" = under tori-run's own cgroup
	// Binary is tori-run's binary, bound at /.tori/tori-run: the capsule's
	// init when there is no InitBinary, else bound only when given (tests
	// run their workloads from it). "" = os.Executable() when it is the init.
	Binary string
	// InitBinary is the small capsule init (cmd/tori-init) bound at
	// /.tori/init as PID 1; "" = the one this tori-run embeds (make build),
	// if any (resolveInit, runtime/initbin).
	InitBinary string
	Slice      string // a systemd .slice file overriding resources:
	Log        zerolog.Logger
	// Owner marks the instances made: OwnerRun (default) or OwnerDaemon.
	Owner string
	// StateRoot holds each capsule's state (TORI_STATE_ROOT).
	StateRoot string
	// Metrics records the state proxies' requests (nil: none).
	Metrics *proxy.Metrics
	// Host is the operator's host configuration (LoadHost): the volumes
	// capsules may bind (with --allow-volume's), the state's bounds.
	Host *HostConfig
	// AppInCapsule mounts the app's overlay inside the capsule's mount
	// namespace instead of on the host, so that it ends with the capsule
	// even when no tori-run is left to unmount it (toritest).
	AppInCapsule bool
	// ProbeCacheDir is where the cgroup probes' answers are kept between
	// starts ("" = RunDir); a harness whose every start has a run dir of
	// its own shares one (runtime/harness).
	ProbeCacheDir string
	// WithoutLimits runs, as a user who is not root, a capsule whose limits
	// that user cannot get, without them, and says so at every start.
	WithoutLimits bool

	rootless bool // set by Create for a user whose delegated subtree holds the limits
	// Shared is what the instances of one capsule share: its listening
	// sockets and its state store (nil: the instance opens its own).
	Shared *Shared
	// The operator's limits on each capsule's state (host.yml's state:
	// section; see runtime/state.go for the defaults).
	StateQuota          int64         // bytes; 0: DefaultStateQuota, <0: none
	EventRetentionCount int           // newest events kept; 0: all
	EventRetentionAge   time.Duration // older events dropped; 0: none
	MaxTokensCeiling    int           // ceiling on MAX_TOKENS_PER_MIN; 0: proxy.DefaultMaxRatePerMin
	// MetricsAddr, when set, makes Run serve /metrics there (metrics.go).
	MetricsAddr string
}

func (o *Options) containerRoot() string { return o.layout().ContainerRoot() }

func (o *Options) probeCacheDir() string {
	if o.ProbeCacheDir != "" {
		return o.ProbeCacheDir
	}
	return o.RunDir
}

// Instance is one running capsule: its container, cgroups and mounts.
type Instance struct {
	ID       string
	Manifest *specs.Manifest
	Release  string
	BuildSHA string
	Log      zerolog.Logger

	// plan is the instance compiled from its manifest (runtime/plan): what
	// is made, and how each service starts. Nothing reads the manifest for
	// that after Create.
	plan      *plan.Plan
	paths     layout.Instance
	opts      Options
	lock      *flock.Flock
	host      *cgroups.Host
	group     *cgroups.Group // the capsule's cgroup
	initGroup *cgroups.Group
	container *libcontainer.Container
	initProc  *libcontainer.Process
	listener  *net.UnixListener
	// svcMu guards services, every service's cgroup (cgroup.go): made in
	// Create, loaded again at adopt.
	svcMu    sync.Mutex
	services map[string]*cgroups.Group
	state    *capsuleState
	appLower string // Options.AppInCapsule: the app's folder, overlaid inside the capsule
	// sockets are the capsule's listening sockets (sockets.go); ownSockets
	// when this instance opened them (no Options.Shared).
	sockets    *Listeners
	ownSockets bool
	// rootLayers: without root, the rootfs layers the capsule mounts itself.
	rootLayers []string
	// heldFiles, heldNames: the sockets the init handed back at adopt.
	heldFiles []*os.File
	heldNames []string
}

// Target is a resolved capsule: its manifest and app layers.
type Target struct {
	Manifest *specs.Manifest
	AppDir   string
	// Layers are the rootfs layers' folders, top first; nil on the host
	// layer.
	Layers   []string
	Release  string
	BuildSHA string
}

func newID(name string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "-" + hex.EncodeToString(b)
}

// Create sets up a capsule instance and starts its init: it compiles the
// instance's plan, then makes what the plan says: cgroups with the
// capsule's limits, the app's overlay, the container, each service's
// cgroup. On any error everything created so far is removed.
func Create(ctx context.Context, t *Target, o Options) (_ *Instance, err error) {
	if err := resolveInit(&o, o.Log, true); err != nil {
		return nil, err
	}
	m := t.Manifest
	if os.Geteuid() != 0 { // runtime/rootless: a limit is refused, never dropped
		limited, err := rootless.CheckLimits(m, o.Slice)
		if err != nil && !o.WithoutLimits {
			return nil, err
		}
		if err != nil || !limited {
			if err != nil {
				o.Log.Warn().Str(FieldCapsule, m.Name).Err(err).Msg("running WITHOUT the limits it asks for (--without-limits)")
			}
			if err := rootless.Refusal(m, t.Layers, kernelRelease()); err != nil {
				return nil, err
			}
			return create(ctx, t, o, false)
		}
		// Limits in the user's delegated cgroup v2 subtree: the path below,
		// in a user namespace.
		if len(t.Layers) > 0 {
			if err := rootless.Overlay(kernelRelease()); err != nil {
				return nil, fmt.Errorf("%s: layers %v: %w", m.Source, m.Layers, err)
			}
		}
		if err := rootless.UserMapped(m, t.Layers); err != nil {
			return nil, err
		}
		o.AppInCapsule, o.rootless = true, true
	}
	return create(ctx, t, o, true)
}

// create is Create once the init is resolved and the rootless checks are
// done: the plan, then what it says, with cgroups (root, or a user's
// delegated subtree) or without (startWithoutCgroups). Everything else is the
// same for both, and on any error everything created so far is removed.
func create(ctx context.Context, t *Target, o Options, withCgroups bool) (_ *Instance, err error) {
	m := t.Manifest
	id := newID(m.Name)
	i := &Instance{ID: id, Manifest: m, Release: t.Release, BuildSHA: t.BuildSHA, paths: o.layout().Instance(id), opts: o,
		services: map[string]*cgroups.Group{}}
	lc := CapsuleLogger(o.Log, m.Name, t.Release, t.BuildSHA).With().Str("instance", id)
	if !withCgroups {
		lc = lc.Bool("rootless", true)
	}
	i.Log = lc.Logger()
	c, err := confineFor(t, o)
	if err != nil {
		return nil, err
	}
	if err := overlayReady(); err != nil {
		return nil, err
	}
	app := "" // with cgroups the app's overlay is the host's (or appoverlay.go's)
	if withCgroups {
		if i.host, err = cgprobe.Detect(o.probeCacheDir()); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		if err := cgroups.EnsureDelegation(i.host); err != nil {
			return nil, err
		}
	} else {
		app = t.AppDir
	}
	facts, err := hostFacts(i.host, o.Binary, o.InitBinary) // i.host is nil without cgroups
	if err != nil {
		return nil, err
	}
	if i.plan, err = compilePlan(t, o, id, facts, c, app); err != nil {
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
	if withCgroups {
		err = i.startWithCgroups(t)
	} else {
		err = i.startWithoutCgroups(t)
	}
	if err != nil {
		return i, err
	}
	if err := i.holdSockets(); err != nil {
		return i, err
	}
	i.Log.Info().Int(FieldPID, i.initPID()).Msg("capsule started")
	return i, nil
}

// startWithCgroups makes the capsule's cgroups and root, starts the
// container beside the capsule's store, then the services' cgroups.
func (i *Instance) startWithCgroups(t *Target) error {
	if err := i.createCgroups(); err != nil {
		return err
	}
	if i.opts.rootless { // the root's overlay is mounted inside the capsule (rootless.Spec)
		i.rootLayers = t.Layers
	} else if err := i.mountRoot(t.Layers); err != nil {
		return err
	}
	if i.opts.AppInCapsule { // appoverlay.go: the overlay ends with the capsule
		i.appLower = t.AppDir
	} else if err := i.mountApp(t.AppDir); err != nil {
		return err
	}
	// The capsule's store opens (it recovers its log and syncs its folder)
	// while the container starts: only the services, started after Create,
	// reach its socket. Both are done before Create returns, or cleans up.
	// (A state served by a blue-green group, Options.Shared, starts first.)
	stateDone := make(chan error, 1)
	if i.opts.Shared != nil {
		stateDone <- i.startState()
	} else {
		go func() { stateDone <- i.startState() }()
	}
	cerr := i.startContainer()
	if err := errors.Join(cerr, <-stateDone); err != nil {
		return err
	}
	return i.createServiceCgroups()
}

func (i *Instance) createDirs() error {
	p := i.paths
	for _, d := range p.Dirs() {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("instance %s: %w", i.ID, err)
		}
	}
	// What becomes the capsule's /, /app (the scratch layer's top gives the
	// overlay's root its mode) and the socket folders bound in read-only
	// (/run/tori, /.tori/notify) must be searchable by a service that is
	// not root (user:); who may speak on a socket is decided per connection
	// (cgroup), not by the mode. The instance's own folder stays 0700, so
	// nothing of it is reachable from the host.
	for _, d := range []string{p.Rootfs, p.Upper, p.RootUpper, p.State, p.Notify} {
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("instance %s: %w", i.ID, err)
		}
	}
	i.lock = flock.New(p.Lock)
	if ok, err := i.lock.TryLock(); err != nil || !ok {
		return fmt.Errorf("instance %s: cannot lock %s: %v", i.ID, p.Lock, err)
	}
	owner := i.opts.Owner
	if owner == "" {
		owner = OwnerRun
	}
	rec := instanceRecord{ID: i.ID, Capsule: i.Manifest.Name, Release: i.Release, BuildSHA: i.BuildSHA,
		CgroupPath: i.plan.Cgroup, ContainerRoot: i.opts.containerRoot(), Created: time.Now().UTC(), Owner: owner}
	// Written, not synced: the record serves a later tori-run after this one
	// died, which the page cache survives; a reboot takes the instance's
	// processes, cgroups and mounts with it, and the sweep removes a folder
	// without a record all the same.
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(p.Record, b, 0o600); err != nil {
		return err
	}
	// The release store reads this to know the release is in use (gc keeps it).
	if i.Release != "" && i.Release != "unreleased" {
		if err := os.WriteFile(p.Release, []byte(i.Release+"\n"), 0o600); err != nil {
			return err
		}
	}
	return prepareRootfs(i.plan)
}

// mountRoot makes the capsule's / from rootfs layers: their overlay under a
// scratch layer (libcontainer makes mount points in it; the root is made
// read-only once the container is set up). With the host layer, / stays an
// empty folder with the host's system folders bound in.
func (i *Instance) mountRoot(layers []string) error {
	if len(layers) == 0 {
		return nil
	}
	l := overlay.Layers{Lower: layers, Upper: i.paths.RootUpper, Work: i.paths.RootWork, Volatile: true}
	if err := overlay.Mount(l, i.paths.Rootfs); err != nil {
		return fmt.Errorf("mounting the rootfs layers: %w", err)
	}
	return nil
}

func (i *Instance) mountApp(appDir string) error {
	l := overlay.Layers{Lower: []string{appDir}}
	if !i.Manifest.ReadOnly {
		// The scratch layer is thrown away at stop: volatile spares the
		// sync of the whole upper filesystem that unmounting would do.
		l.Upper, l.Work, l.Volatile = i.paths.Upper, i.paths.Work, true
	}
	if err := overlay.Mount(l, i.paths.App); err != nil {
		return fmt.Errorf("mounting the app: %w", err)
	}
	return nil
}

// containerSpec is the plan's OCI spec with what only the host knows once
// it is made: the capsule cgroup's path as libcontainer takes it (absolute
// on v2) and the host paths of the listening sockets held (a socket shared
// with the previous release keeps its file).
func (i *Instance) containerSpec() (*rspec.Spec, error) {
	b, err := json.Marshal(i.plan.Spec)
	if err != nil {
		return nil, err
	}
	var spec rspec.Spec // a copy: the plan stays as compiled
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, err
	}
	if i.group != nil {
		spec.Linux.CgroupsPath = i.group.Path()
	}
	for _, sm := range i.sockets.Mounts() {
		for k := range spec.Mounts {
			if spec.Mounts[k].Destination == sm[1] && spec.Mounts[k].Type == "bind" {
				spec.Mounts[k].Source = sm[0]
			}
		}
	}
	return &spec, nil
}

func (i *Instance) startContainer() error {
	spec, err := i.containerSpec()
	if err != nil {
		return err
	}
	if i.appLower != "" {
		appInCapsule(spec, i.Manifest.ReadOnly, i.appLower, i.paths.Upper, i.paths.Work)
	}
	if i.opts.rootless { // rootless.go; the cgroups stay: they hold the limits
		if err := rootless.Spec(spec, i.rootlessMounts(i.appLower, i.rootLayers), true); err != nil {
			return err
		}
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: i.ID, Spec: spec, NoPivotRoot: os.Getenv("TORI_NO_PIVOT_ROOT") == "1",
		RootlessEUID: i.opts.rootless, RootlessCgroups: i.opts.rootless})
	if err != nil {
		return fmt.Errorf("container config: %w", err)
	}
	if err := i.runInit(spec, cfg); err != nil {
		return err
	}
	return i.createInitCgroup()
}

func (i *Instance) initPID() int {
	if i.initProc == nil {
		return 0
	}
	pid, _ := i.initProc.Pid()
	return pid
}

// Destroy ends the instance and removes everything it made: processes,
// container state, cgroups, mounts and its folder. It is safe to call on a
// half-made instance and more than once.
func (i *Instance) Destroy(ctx context.Context) error {
	var errs []error
	if i.listener != nil {
		_ = i.listener.Close()
	}
	// The store closes (its final flush into Parquet) while the container
	// and cgroups go: what it acknowledged is in its log already, so
	// nothing waits for the flush but the folder's removal.
	// A state served by a blue-green group (Options.Shared) stops in order.
	stateDone := make(chan error, 1)
	if i.opts.Shared != nil {
		stateDone <- i.stopState(ctx)
	} else {
		go func() { stateDone <- i.stopState(ctx) }()
	}
	if i.container != nil {
		errs = append(errs, destroyContainer(i.container, i.initProc))
	}
	i.closeSockets()
	if i.group != nil {
		errs = append(errs, i.removeGroup(i.group))
	}
	errs = append(errs, overlay.UnmountAll(i.paths.Dir))
	errs = append(errs, <-stateDone)
	if err := overlay.RemoveUnmounted(i.paths.Dir); err != nil {
		errs = append(errs, err)
	}
	if i.lock != nil {
		_ = i.lock.Unlock()
	}
	return errors.Join(errs...)
}

// destroyContainer kills the init (the kernel then kills everything in its
// PID namespace), waits for it and removes libcontainer's state. With the
// init's Process (we started it) the wait is on the process itself;
// without (an instance left by another tori-run) the status is polled.
func destroyContainer(c *libcontainer.Container, p *libcontainer.Process) error {
	if st, err := c.Status(); err == nil && st != libcontainer.Stopped {
		_ = c.Signal(unix.SIGKILL)
		if p != nil {
			done := make(chan struct{})
			go func() { _, _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
		} else {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("destroying container %s: %w", c.ID(), err)
	}
	return nil
}

// SweepStale removes instances whose tori-run is gone (their lock is free):
// it kills what is left of them and removes their cgroups, mounts and files.
// Instances a daemon made are left for the next daemon to re-adopt, unless
// owners includes OwnerDaemon.
func SweepStale(ctx context.Context, o Options, owners ...string) error {
	if len(owners) == 0 {
		owners = []string{OwnerRun}
	}
	_, err := SweepStaleInstances(ctx, o, owners, false) // lifecycle.go
	return err
}

func readRecord(dir string) (*instanceRecord, error) {
	file := layout.InstanceAt(dir).Record
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var rec instanceRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if rec.Owner == "" {
		rec.Owner = OwnerRun
	}
	if rec.ContainerRoot == "" {
		rec.ContainerRoot = rec.OldStateRoot
	}
	return &rec, nil
}

func sweepOne(dir string, o Options) error {
	var errs []error
	if rec, err := readRecord(dir); err == nil {
		if c, err := libcontainer.Load(rec.ContainerRoot, rec.ID); err == nil {
			errs = append(errs, destroyContainer(c, nil))
		}
		if h, err := cgroups.Detect(); err == nil {
			if g, err := cgroups.Load(h, rec.CgroupPath); err == nil {
				errs = append(errs, killAndRemove(g, filepath.Dir(rec.CgroupPath) == "tori"))
			} else if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, overlay.UnmountAll(dir))
	if err := overlay.RemoveUnmounted(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func overlayReady() error {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "\toverlay\n") {
		return fmt.Errorf("this kernel has no OverlayFS (not in /proc/filesystems): load it with modprobe overlay; tori-run validate --host checks the host")
	}
	return nil
}

// runInit creates the container from cfg and starts its process, tori-run's
// init, with the listening end of the init's socket as its fd 3 (initFD).
// Both the root and the rootless start go through here.
func (i *Instance) runInit(spec *rspec.Spec, cfg *configs.Config) error {
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: i.paths.InitSocket, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("init socket: %w", err)
	}
	i.listener = l
	lf, err := l.File()
	if err != nil {
		return err
	}
	defer lf.Close()
	// The init outlives this tori-run when it dies (that is the point), so
	// it must not hold tori-run's own stderr, which may be a pipe someone
	// waits on: its few lines go to a file of the instance.
	initLog, err := os.OpenFile(i.paths.InitLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer initLog.Close()
	c, err := libcontainer.Create(i.opts.containerRoot(), i.ID, cfg)
	if err != nil {
		return fmt.Errorf("creating container %s: %w", i.ID, err)
	}
	i.container = c
	p := &libcontainer.Process{
		Args: spec.Process.Args, Env: spec.Process.Env, Cwd: spec.Process.Cwd, Init: true,
		NoNewPrivileges: &spec.Process.NoNewPrivileges,
		Capabilities: &configs.Capabilities{Bounding: spec.Process.Capabilities.Bounding, Effective: spec.Process.Capabilities.Effective,
			Permitted: spec.Process.Capabilities.Permitted},
		ExtraFiles: []*os.File{lf},
		Stdout:     initLog, Stderr: initLog,
	}
	if err := c.Run(p); err != nil {
		b, _ := os.ReadFile(i.paths.InitLog)
		return fmt.Errorf("starting the capsule's init: %w %s", err, strings.TrimSpace(string(b)))
	}
	i.initProc = p
	return nil
}
