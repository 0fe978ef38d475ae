//go:build linux

// Package incontainer is container mode (tori-run run --in-container):
// tori-run as PID 1 of a container someone else made. It sits on runtime
// (the capsule logger, the supervisor configs of a manifest, the state
// store and its proxy) and makes no namespace, mount or cgroup itself.
package incontainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/capslog"
	"github.com/tori-run/tori-run/runtime/hostconf"
	"github.com/tori-run/tori-run/runtime/image"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/proxy"
	"github.com/tori-run/tori-run/supervisor"
)

// Container mode (tori-run run --in-container): tori-run as PID 1 of a
// container someone else made (containerd, podman, Kubernetes). It makes no
// namespace, mount or cgroup and needs no privilege beyond the container's:
// the isolation and the limits are the engine's. What it keeps of run: the
// supervisor (restart, readiness, ordering, logs) over the manifest's
// services, the state proxy with its rate limit on TORI_STATE_SOCKET and
// the store under TORI_STATE_ROOT (a mounted volume), the stop in reverse
// order on SIGTERM. As PID 1 it reaps every orphan and forwards SIGHUP,
// SIGUSR1 and SIGUSR2 to the services. See docs/CLUSTER.md.

// Options tune Run.
type Options struct {
	Root      string // TORI_ROOT: logs/, the admin socket (in the container's own filesystem)
	StateRoot string // TORI_STATE_ROOT: mount a volume here
	// StateSocket is where the state proxy listens (TORI_STATE_SOCKET).
	StateSocket string
	// StatusFile receives the services' status on every change (for
	// tori-run container-ready, an exec readiness probe).
	StatusFile string
	// StopDeadline bounds the stop after SIGTERM; 0 is the sum of the
	// services' stop timeouts and 10 s (give the engine's grace period at
	// least that).
	StopDeadline time.Duration
	Log          zerolog.Logger
	Metrics      *proxy.Metrics

	stateOnVolume bool
}

// stateRoots are where container mode looks for the state volume when
// TORI_STATE_ROOT is not set: the image's folder, then SPEC's default.
var stateRoots = []string{image.StateRoot, layout.DefaultStateRoot}

// pickStateRoot is the first of stateRoots that is a mount point (the
// engine mounted a volume there), else the first: then the state lives and
// dies with the container, which is said in a warning.
func pickStateRoot() (string, bool) {
	for _, d := range stateRoots {
		if ok, err := mountinfo.Mounted(d); err == nil && ok {
			return d, true
		}
	}
	return stateRoots[0], false
}

// DefaultStatusFile is where container mode writes the services' status
// (TORI_STATUS_FILE), where the exported image's readiness probe reads it.
const DefaultStatusFile = "/run/tori/status.json"

func (o *Options) defaults() {
	if o.Root == "" {
		o.Root = layout.DefaultRoot
	}
	if o.StateRoot == "" {
		o.StateRoot, o.stateOnVolume = pickStateRoot()
	} else {
		o.stateOnVolume = true // the engine's configuration said where
	}
	if o.StateSocket == "" {
		o.StateSocket = image.StateSocket
	}
	if o.StatusFile == "" {
		o.StatusFile = DefaultStatusFile
	}
}

// containerRun is one run of a capsule in container mode.
type containerRun struct {
	m        *specs.Manifest
	app      string
	release  string
	buildSHA string
	socket   string
	cred     *syscall.Credential
	reaper   *reaper
	log      zerolog.Logger
}

// resolveInContainer finds what to run: with no ref, the capsule of the
// exported image (/.tori/capsule.yml, the app at /app, /.tori/release.json);
// else a capsule.yml, an app folder, or an installed release under root.
func resolveInContainer(ref, root string) (*specs.Manifest, string, image.ReleaseInfo, error) {
	var info image.ReleaseInfo
	if ref == "" {
		m, err := specs.Load(image.ManifestPath)
		if err != nil {
			return nil, "", info, fmt.Errorf("container mode without an argument runs the image's capsule: %w", err)
		}
		b, err := os.ReadFile(image.ReleasePath)
		if err != nil {
			return nil, "", info, fmt.Errorf("container mode: %w", err)
		}
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, "", info, fmt.Errorf("%s: %w", image.ReleasePath, err)
		}
		return m, image.AppDir, info, nil
	}
	if fi, err := os.Stat(ref); err == nil {
		mf := ref
		if fi.IsDir() {
			mf = filepath.Join(ref, "capsule.yml")
		}
		m, err := specs.Load(mf)
		if err != nil {
			return nil, "", info, err
		}
		app, err := filepath.Abs(filepath.Dir(mf))
		if err != nil {
			return nil, "", info, err
		}
		return m, app, image.ReleaseInfo{Name: m.Name, Version: m.Version, Digest: "unreleased"}, nil
	}
	store, err := release.Open(root)
	if err != nil {
		return nil, "", info, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, "", info, fmt.Errorf("%q is not a capsule.yml, an app folder or an installed release: %w", ref, err)
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, "", info, err
	}
	return m, filepath.Join(rel.Path, "app"), image.ReleaseInfo{Name: m.Name, Version: m.Version, Digest: rel.Digest, BuildSHA: rel.BuildSHA}, nil
}

// Run runs a capsule in container mode until every service is done or
// ctx ends (SIGTERM, SIGINT), then stops the services in reverse
// order and closes the state store. Service output is logged under
// <root>/logs and echoed to out, as under run.
func Run(ctx context.Context, ref string, o Options, out io.Writer) (*runtime.RunResult, error) {
	o.defaults()
	m, app, info, err := resolveInContainer(ref, o.Root)
	if err != nil {
		return nil, err
	}
	log := runtime.CapsuleLogger(o.Log, m.Name, info.Digest, info.BuildSHA)
	c := &containerRun{m: m, app: app, release: info.Digest, buildSHA: info.BuildSHA, socket: o.StateSocket, log: log}
	if c.cred, err = containerCredential(m); err != nil {
		return nil, err
	}
	engineOwned(m, log)
	if !o.stateOnVolume {
		log.Warn().Str("state_root", o.StateRoot).Strs("looked_at", stateRoots).
			Msg("no volume is mounted for the state: it is lost with the container (mount one at " + image.StateRoot + " or set TORI_STATE_ROOT)")
	}
	if os.Getpid() != 1 {
		// Not PID 1 (docker --init, tini, a test): orphans of the services
		// still come to tori-run, not to whoever is PID 1.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("becoming a child subreaper: %w", err)
		}
	}
	c.reaper = newReaper(log)
	defer c.reaper.close()
	defer c.reaper.killOrphans()

	st, err := c.serveState(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := errors.Join(st.srv.Shutdown(sctx), st.store.Close()); err != nil {
			log.Error().Err(err).Msg("closing the state store")
		}
	}()

	logs := layout.Layout{Root: o.Root}.Logs(m.Name)
	notify := filepath.Join(filepath.Dir(o.StatusFile), "notify")
	if err := os.MkdirAll(notify, 0o700); err != nil {
		return nil, err
	}
	sup, err := supervisor.New(runtime.ManifestSupervision(m), containerRunner{c}, supervisor.Options{
		Prober:    containerProber{c},
		LogDir:    logs,
		NotifyDir: notify,
		Log:       log,
	})
	if err != nil {
		return nil, err
	}
	// An engine owns the container's output: a write error there does not stop it.
	echo := capslog.Echo(ctx, logs, serviceNames(m), out, nil)
	sub := sup.Events()
	defer sub.Close()
	fwd := make(chan os.Signal, 4)
	signal.Notify(fwd, unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2)
	defer signal.Stop(fwd)

	log.Info().Int(runtime.FieldPID, os.Getpid()).Str("state_socket", o.StateSocket).Str("state_root", o.StateRoot).Msg("container mode: starting the services")
	res := &runtime.RunResult{}
	if err := sup.Start(context.WithoutCancel(ctx)); err != nil {
		log.Error().Err(err).Msg("starting the services")
	}
	writeStatus(o.StatusFile, m.Name, sup.Status(), log)
loop:
	for !runtime.AllTerminal(sup.States()) {
		select {
		case <-sub.C():
			writeStatus(o.StatusFile, m.Name, sup.Status(), log)
		case sig := <-fwd:
			log.Info().Str("signal", unix.SignalName(sig.(syscall.Signal))).Msg("forwarding to the services")
			c.reaper.signalAll(sig.(syscall.Signal))
		case <-ctx.Done():
			res.Signaled = true
			log.Info().Msg("stopping the services in reverse order")
			break loop
		}
	}
	deadline := o.StopDeadline
	if deadline == 0 {
		deadline = runtime.StopDeadline(m)
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadline)
	defer cancel()
	// Once every service has ended, what is left was started by a service
	// and left its process group (setsid): nothing else stops it, and it
	// may hold a log pipe open, which Stop would wait for.
	stopped := make(chan struct{})
	go func() {
		for !runtime.AllTerminal(sup.States()) {
			select {
			case <-stopped:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		c.reaper.killOrphans()
	}()
	if err := sup.Stop(stopCtx); err != nil {
		log.Error().Err(err).Msg("stopping the services")
	}
	close(stopped)
	sup.Wait()
	echo()
	res.Services = sup.Status()
	writeStatus(o.StatusFile, m.Name, res.Services, log)
	return res, nil
}

// engineOwned logs what the manifest asks that, in a container, the engine
// provides (or not): limits, volumes, network, a read-only root.
func engineOwned(m *specs.Manifest, log zerolog.Logger) {
	if d := m.Resources.Directives(); len(d) > 0 {
		log.Info().Strs("resources", d).Msg("resources: the container's limits are the engine's (the image's labels carry the manifest's)")
	}
	for _, v := range m.Volumes {
		if _, err := os.Stat(v.Capsule); err != nil {
			log.Warn().Str("volume", v.Capsule).Msg("the manifest's volume is not in the container: mount it with the engine")
		}
	}
	if m.Network == specs.NetworkNone {
		log.Info().Msg("network: none is the engine's to give (a pod or container without a network)")
	}
}

// containerCredential is the manifest's user, or nil to run as tori-run.
func containerCredential(m *specs.Manifest) (*syscall.Credential, error) {
	if m.User == "" {
		return nil, nil
	}
	// The container's own /etc/passwd, as run reads the capsule's.
	uid, gid, err := hostconf.ResolveUser(m, nil)
	if err != nil {
		return nil, fmt.Errorf("%w (the image's /etc/passwd must name the user)", err)
	}
	if int(uid) == os.Geteuid() && int(gid) == os.Getegid() {
		return nil, nil
	}
	// No supplementary groups: those of root are not the service's.
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}, nil
}

// serveState opens the capsule's store on the state root and serves it on
// the state socket (services, identified by their process ancestry) and on
// <root>/instances/<name>-container/admin/state.sock (tori-run state, from
// kubectl exec or ctr task exec).
func (c *containerRun) serveState(o Options) (*capsuleState, error) {
	m := c.m
	st, srv, err := runtime.OpenState(m, o.StateRoot, c.identify, o.Metrics, c.log, runtime.DefaultStateLimits())
	if err != nil {
		return nil, fmt.Errorf("capsule state under %s (TORI_STATE_ROOT; mount a volume there): %w", o.StateRoot, err)
	}
	cs := &capsuleState{store: st, srv: srv}
	if err := os.MkdirAll(filepath.Dir(o.StateSocket), 0o755); err != nil {
		_ = st.Close()
		return nil, err
	}
	l, err := proxy.Listen(o.StateSocket)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("state socket TORI_STATE_SOCKET=%s: %w", o.StateSocket, err)
	}
	if c.cred != nil {
		// Services run as the manifest's user: let them connect.
		_ = os.Chmod(o.StateSocket, 0o666)
	}
	go func() { _ = srv.Serve(l) }()
	admin := layout.Layout{Root: o.Root}.Instance(m.Name + "-container").AdminSocket
	if err := os.MkdirAll(filepath.Dir(admin), 0o700); err != nil {
		c.log.Warn().Err(err).Msg("no admin state socket: tori-run state will open the store itself")
	} else if al, err := proxy.Listen(admin); err != nil {
		c.log.Warn().Err(err).Msg("no admin state socket")
	} else {
		_ = os.Chmod(admin, 0o600)
		go func() { _ = srv.ServeAdmin(al) }()
	}
	return cs, nil
}

// identify maps a peer's pid to the service it descends from. In a
// container every service shares one trust domain (the engine isolates
// the capsule as a whole), so this names the writer; it is not a wall
// between services as a cgroup is under run.
func (c *containerRun) identify(pid int32) (string, error) {
	if s, ok := c.reaper.serviceOf(int(pid)); ok {
		// A probe's process is labelled "NAME (probe)".
		if name, _, _ := strings.Cut(s, " "); c.m.Service(name) != nil {
			return name, nil
		}
	}
	return "", fmt.Errorf("pid %d is not a service of capsule %s", pid, c.m.Name)
}

// capsuleState is the capsule's store and the proxy serving it.
type capsuleState struct {
	store *state.Store
	srv   *proxy.Server
}

// serviceNames are m's services, in the manifest's order.
func serviceNames(m *specs.Manifest) []string {
	names := make([]string, len(m.Services))
	for k, s := range m.Services {
		names[k] = s.Name
	}
	return names
}

// Status is what StatusFile holds.
type Status struct {
	Capsule  string                     `json:"capsule"`
	Ready    bool                       `json:"ready"`
	Services []supervisor.ServiceStatus `json:"services"`
}

func writeStatus(file, capsule string, st []supervisor.ServiceStatus, log zerolog.Logger) {
	cs := Status{Capsule: capsule, Ready: allReady(st), Services: st}
	b, err := json.MarshalIndent(cs, "", "  ")
	if err == nil {
		err = atomicfile.WriteFile(file, append(b, '\n'), 0o644)
	}
	if err != nil {
		log.Warn().Err(err).Str("file", file).Msg("writing the status file")
	}
}

// allReady: every service is ready, or a one-shot that exited 0.
func allReady(st []supervisor.ServiceStatus) bool {
	for _, s := range st {
		if s.State != supervisor.StateReady && s.State != supervisor.StateExited {
			return false
		}
	}
	return len(st) > 0
}

// Ready reads the status file of a capsule in container mode and says
// whether it is ready: nil, or an error naming what is not.
func Ready(file string) error {
	if file == "" {
		file = DefaultStatusFile
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("no status yet: %w", err)
	}
	var cs Status
	if err := json.Unmarshal(b, &cs); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if cs.Ready {
		return nil
	}
	for _, s := range cs.Services {
		if s.State != supervisor.StateReady && s.State != supervisor.StateExited {
			return fmt.Errorf("capsule %s: service %s is %s (%s)", cs.Capsule, s.Name, s.State, s.Reason)
		}
	}
	return fmt.Errorf("capsule %s: not ready", cs.Capsule)
}
