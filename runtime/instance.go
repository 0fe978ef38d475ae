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
	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/state/proxy"
)

// An instance lives in <root>/instances/<id>/:
//
//	instance.json  the record: what was created, for cleanup after a crash
//	lock           flock held by the tori-run that owns the instance
//	rootfs/        the capsule's / (host layer: empty but for symlinks and
//	               mount points; libcontainer mounts inside its namespace)
//	app/           the overlay of the release's app under the scratch layer
//	scratch/       upper and work of that overlay, discarded at stop
//	run/           host side only, never bound into the capsule: the init's
//	               socket, its log, the supervisor's state files
//	notify/        only the services' sd_notify sockets, bound read-only at
//	               /.tori/notify
//	state/         only the state proxy's socket, bound read-only at /run/tori
//
// libcontainer's state lives in <rundir>/containers/<id>, on tmpfs.
type instancePaths struct {
	Dir, Record, Lock, Rootfs, App, Upper, Work, Run, Socket string
	Notify                                                   string
	State, StateSocket, Admin, AdminSocket                   string
	RootUpper, RootWork                                      string
}

func newInstancePaths(root, id string) instancePaths {
	dir := filepath.Join(root, "instances", id)
	return instancePaths{
		Dir: dir, Record: filepath.Join(dir, "instance.json"), Lock: filepath.Join(dir, "lock"),
		Rootfs: filepath.Join(dir, "rootfs"), App: filepath.Join(dir, "app"),
		Upper: filepath.Join(dir, "scratch", "upper"), Work: filepath.Join(dir, "scratch", "work"),
		Run: filepath.Join(dir, "run"), Socket: filepath.Join(dir, "run", "init.sock"),
		Notify: filepath.Join(dir, "notify"),
		State:  filepath.Join(dir, "state"), StateSocket: filepath.Join(dir, "state", "state.sock"),
		Admin: filepath.Join(dir, "admin"), AdminSocket: filepath.Join(dir, "admin", "state.sock"),
		RootUpper: filepath.Join(dir, "scratch", "root-upper"), RootWork: filepath.Join(dir, "scratch", "root-work"),
	}
}

// instanceRecord is written before anything is created, so that a tori-run
// killed at any moment leaves enough behind for the next one to clean up.
type instanceRecord struct {
	ID         string    `json:"id"`
	Capsule    string    `json:"capsule"`
	Release    string    `json:"release"`
	BuildSHA   string    `json:"build_sha,omitempty"`
	CgroupPath string    `json:"cgroup_path"`
	StateRoot  string    `json:"state_root"`
	Created    time.Time `json:"created"`
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
	// its own shares one (harness.go).
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

func (o *Options) containerRoot() string { return filepath.Join(o.RunDir, "containers") }

// Instance is one running capsule: its container, cgroups and mounts.
type Instance struct {
	ID       string
	Manifest *specs.Manifest
	Release  string
	BuildSHA string
	Log      zerolog.Logger

	paths     instancePaths
	opts      Options
	lock      *flock.Flock
	host      *cgroups.Host
	group     *cgroups.Group // the capsule's cgroup
	initGroup *cgroups.Group
	container *libcontainer.Container
	initProc  *libcontainer.Process
	listener  *net.UnixListener
	// svcMu guards services: the supervisor starts services concurrently.
	svcMu    sync.Mutex
	services map[string]*cgroups.Group
	state    *capsuleState
	confine  confinement
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

// Create sets up a capsule instance and starts its init: cgroups with the
// capsule's limits, the app's overlay, the container. On any error
// everything created so far is removed.
func Create(ctx context.Context, t *Target, o Options) (_ *Instance, err error) {
	if err := resolveInit(&o, o.Log, true); err != nil {
		return nil, err
	}
	m := t.Manifest
	if os.Geteuid() != 0 { // rootless.go: a limit is refused, never dropped
		limited, err := checkRootlessLimits(m, o.Slice)
		if err != nil && !o.WithoutLimits {
			return nil, err
		}
		if err != nil || !limited {
			if err != nil {
				o.Log.Warn().Str(FieldCapsule, m.Name).Err(err).Msg("running WITHOUT the limits it asks for (--without-limits)")
			}
			return createRootless(ctx, t, o)
		}
		// Limits in the user's delegated cgroup v2 subtree: the path below,
		// in a user namespace.
		if len(t.Layers) > 0 {
			if err := rootlessOverlay(kernelRelease()); err != nil { // rootless_run.go
				return nil, fmt.Errorf("%s: layers %v: %w", m.Source, m.Layers, err)
			}
		}
		if err := rootlessUserMapped(t); err != nil {
			return nil, err
		}
		o.AppInCapsule, o.rootless = true, true
	}
	id := newID(m.Name)
	i := &Instance{ID: id, Manifest: m, Release: t.Release, BuildSHA: t.BuildSHA, paths: newInstancePaths(o.Root, id), opts: o,
		services: map[string]*cgroups.Group{}}
	i.Log = CapsuleLogger(o.Log, m.Name, t.Release, t.BuildSHA).With().Str("instance", id).Logger()
	if i.confine, err = confineFor(t, o); err != nil {
		return nil, err
	}
	if err := overlayReady(); err != nil {
		return nil, err
	}
	if i.host, err = detectCgroups(o.probeCacheDir()); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if err := cgroups.EnsureDelegation(i.host); err != nil {
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
	if err := i.createCgroups(); err != nil {
		return i, err
	}
	if o.rootless { // the root's overlay is mounted inside the capsule (rootless_run.go)
		i.rootLayers = t.Layers
	} else if err := i.mountRoot(t.Layers); err != nil {
		return i, err
	}
	if o.AppInCapsule { // harness.go: the overlay ends with the capsule
		i.appLower = t.AppDir
	} else if err := i.mountApp(t.AppDir); err != nil {
		return i, err
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
		return i, err
	}
	if err := i.holdSockets(); err != nil {
		return i, err
	}
	i.Log.Info().Int(FieldPID, i.initPID()).Msg("capsule started")
	return i, nil
}

func (i *Instance) createDirs() error {
	p := i.paths
	for _, d := range []string{p.Dir, p.Rootfs, p.App, p.Upper, p.Work, p.Run, p.State, p.Notify, p.Admin, p.RootUpper, p.RootWork} {
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
		CgroupPath: i.cgroupName(), StateRoot: i.opts.containerRoot(), Created: time.Now().UTC(), Owner: owner}
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
		if err := os.WriteFile(filepath.Join(p.Dir, "release"), []byte(i.Release+"\n"), 0o600); err != nil {
			return err
		}
	}
	return prepareRootfs(p.Rootfs, i.Manifest)
}

func (i *Instance) cgroupName() string {
	if i.opts.CgroupParent != "" {
		return filepath.Join(i.opts.CgroupParent, i.ID)
	}
	return filepath.Join("tori", i.ID)
}

func (i *Instance) createCgroups() error {
	res := i.Manifest.Resources
	if i.opts.Slice != "" {
		over, err := specs.LoadSlice(i.opts.Slice)
		if err != nil {
			return err
		}
		res = res.Override(over)
	}
	// Another instance's teardown removes the shared tori/ parent when it
	// looks empty; if that happens between our making it and making our
	// group in it, the parent is gone (ENOENT): make both again. Once our
	// group exists, the parent cannot be removed.
	var g *cgroups.Group
	var unenforced []string
	var err error
	for try := 0; ; try++ {
		g, unenforced, err = cgroups.Create(i.host, "", i.cgroupName(), toCgroupResources(res))
		if err == nil || try == 4 || !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("capsule cgroup: %w", err)
	}
	i.group = g
	for _, u := range unenforced {
		i.Log.Warn().Str("limit", u).Msg("limit not enforced on this host")
	}
	return nil
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

func (i *Instance) startContainer() error {
	spec, err := buildSpec(specInput{
		Manifest: i.Manifest, ID: i.ID, Rootfs: i.paths.Rootfs, App: i.paths.App, NotifyDir: i.paths.Notify,
		StateDir: i.paths.State,
		Binary:   i.opts.Binary, Init: i.opts.InitBinary, CgroupsPath: i.group.Path(), CgroupNS: i.host.Mode == cgroups.Unified,
		// No GOMEMLIMIT for the init: its Go start-up alone (the whole
		// tori-run binary's package init) passes 4 MiB, and under such a
		// limit the collector ran without pause: +300 ms to every start.
		Env: []string{"PATH=" + capsulePath}, AppSource: i.confine.appSource, Volumes: i.confine.volumes,
		SocketMounts: i.sockets.mounts(),
	})
	if err != nil {
		return err
	}
	if i.appLower != "" {
		appInCapsule(spec, i.Manifest.ReadOnly, i.appLower, i.paths.Upper, i.paths.Work)
	}
	if i.opts.rootless { // rootless_run.go; the cgroups stay: they hold the limits
		if err := rootlessSpec(spec, i.rootlessMounts(i.appLower, i.rootLayers), true); err != nil {
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
	if i.host.Mode != cgroups.Unified {
		// v1 has no "no internal processes" rule: the init stays in the
		// capsule's cgroup, and a move (which costs an RCU grace period on
		// v1) is saved.
		return nil
	}
	// On v2 the init leaves the capsule's cgroup for a leaf of its own, so
	// that the capsule's cgroup holds no processes and can enable controllers
	// for the services' cgroups. The cgroup namespace stays rooted at the
	// capsule's cgroup, so the init may start services in their leaves.
	ig, _, err := i.group.Child("init", cgroups.Resources{})
	if err != nil {
		return fmt.Errorf("init cgroup: %w", err)
	}
	i.initGroup = ig
	pid, err := i.initProc.Pid()
	if err != nil {
		return err
	}
	if err := ig.MoveProcess(pid); err != nil {
		return fmt.Errorf("moving the init into its cgroup: %w", err)
	}
	return nil
}

// madeGroup returns the cgroup of a service made earlier, or nil.
func (i *Instance) madeGroup(name string) *cgroups.Group {
	i.svcMu.Lock()
	defer i.svcMu.Unlock()
	return i.services[name]
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

// removeGroup kills and removes a capsule's cgroup, then the default
// "tori" parent when no other instance uses it (rmdir refuses while it has
// children, which is exactly the test). A --cgroup-parent is the operator's
// and stays.
func (i *Instance) removeGroup(g *cgroups.Group) error {
	return killAndRemove(g, i.opts.CgroupParent == "")
}

func killAndRemove(g *cgroups.Group, removeParent bool) error {
	dirs := g.Dirs()
	if err := g.Kill(); err != nil {
		return err
	}
	if err := g.Destroy(); err != nil {
		return err
	}
	if removeParent {
		for _, d := range dirs {
			removeIfEmpty(filepath.Dir(d))
		}
	}
	return nil
}

// removeIfEmpty removes an empty cgroup folder. A folder that still holds
// another instance's cgroup is not empty, and is left at once: cgroup v1
// answers rmdir of such a parent with EBUSY, not ENOTEMPTY, so waiting for it
// cost every run beside another capsule 10 s (50 tries in each hierarchy).
// Only when no child is left is EBUSY retried a few times, since on v1 a
// removed child is torn down asynchronously.
func removeIfEmpty(dir string) {
	delay := time.Millisecond
	for deadline := time.Now().Add(time.Second); ; { // under load v1 takes its time
		if hasSubdir(dir) {
			return
		}
		err := unix.Rmdir(dir)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return
		}
		time.Sleep(delay) // the release is usually done within a millisecond or two
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// hasSubdir tells whether a cgroup folder has a child cgroup.
func hasSubdir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() {
			return true
		}
	}
	return false
}

// SweepStale removes instances whose tori-run is gone (their lock is free):
// it kills what is left of them and removes their cgroups, mounts and files.
// Instances a daemon made are left for the next daemon to re-adopt, unless
// owners includes OwnerDaemon.
func SweepStale(ctx context.Context, o Options, owners ...string) error {
	if len(owners) == 0 {
		owners = []string{OwnerRun}
	}
	_, err := sweepStale(ctx, o, owners, false) // sweep.go
	return err
}

func readRecord(dir string) (*instanceRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, "instance.json"))
	if err != nil {
		return nil, err
	}
	var rec instanceRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "instance.json"), err)
	}
	if rec.Owner == "" {
		rec.Owner = OwnerRun
	}
	return &rec, nil
}

func sweepOne(dir string, o Options) error {
	var errs []error
	if rec, err := readRecord(dir); err == nil {
		if c, err := libcontainer.Load(rec.StateRoot, rec.ID); err == nil {
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

func toCgroupResources(r specs.Resources) cgroups.Resources {
	var out cgroups.Resources
	if r.CPUQuota != nil {
		v := float64(*r.CPUQuota)
		out.CPUQuotaPercent = &v
	}
	out.CPUWeight = r.CPUWeight
	out.IOWeight = r.IOWeight
	size := func(s *specs.Size) *int64 {
		if s == nil {
			return nil
		}
		v := int64(-1)
		if !s.Infinity {
			v = int64(s.Bytes)
		}
		return &v
	}
	out.MemoryMax, out.MemoryHigh = size(r.MemoryMax), size(r.MemoryHigh)
	if r.TasksMax != nil {
		v := int64(-1)
		if !r.TasksMax.Infinity {
			v = int64(r.TasksMax.N)
		}
		out.TasksMax = &v
	}
	if r.AllowedCPUs != nil {
		out.AllowedCPUs = r.AllowedCPUs.String()
	}
	return out
}

// runInit creates the container from cfg and starts its process, tori-run's
// init, with the listening end of the init's socket as its fd 3 (initFD).
// Both the root and the rootless start go through here.
func (i *Instance) runInit(spec *rspec.Spec, cfg *configs.Config) error {
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: i.paths.Socket, Net: "unixpacket"})
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
	initLog, err := os.OpenFile(filepath.Join(i.paths.Run, "init.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
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
		b, _ := os.ReadFile(filepath.Join(i.paths.Run, "init.log"))
		return fmt.Errorf("starting the capsule's init: %w %s", err, strings.TrimSpace(string(b)))
	}
	i.initProc = p
	return nil
}
