//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	libseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// What a test harness (package toritest) needs of the runtime, in one
// place: start a capsule under its supervisor and wait until every service
// is ready, tie the capsule's life to the harness's process, read a
// service's logs, exec into it, stop it. The CLI does not use it.

// HarnessOptions are Options plus what a harness changes in the capsule it
// runs.
type HarnessOptions struct {
	Options
	// SourceRoot is where an installed name or digest, and the rootfs
	// layers of an app folder, are looked up ("" = Root). An archive is
	// installed into ArchiveCache, or into Root when that is "".
	SourceRoot string
	// ArchiveCache is a release store shared by starts: an archive is
	// installed there once per process and file (its device, inode, size
	// and modification time), and later starts of the same file run the
	// installed release.
	ArchiveCache string
	// Env is added to the manifest's env (KEY=VALUE; a later one wins).
	Env []string
	// Volumes are added to the manifest's volumes, and allowed (exactly
	// their host paths, in their mode) on top of Options.Host.
	Volumes []HarnessVolume
	// AllowVolumes are host paths the manifest's own volumes may bind, as
	// --allow-volume PATH[:ro] gives them (the host's configuration file is
	// not read: a harness is its own operator).
	AllowVolumes []string
	// Limits are systemd slice directives (MemoryMax=64M, ...) over the
	// manifest's resources, as a --slice file would give them.
	Limits []string
	// DieWithHost ends the capsule when this process ends, however it
	// ends (see TieToProcess).
	DieWithHost bool
	// UnfilteredWithoutSeccomp runs the capsule without its system call
	// filter when this binary was built without seccomp support (a test
	// binary built without -tags seccomp), instead of refusing it; the
	// Harnessed's Warnings say so.
	UnfilteredWithoutSeccomp bool
}

func (o *Options) probeCacheDir() string {
	if o.ProbeCacheDir != "" {
		return o.ProbeCacheDir
	}
	return o.RunDir
}

// HarnessVolume is a host folder bound into the capsule.
type HarnessVolume struct {
	Host, Capsule string
	ReadOnly      bool
}

// Harnessed is a capsule a harness runs: its instance and supervisor.
type Harnessed struct {
	*Instance
	Sup *supervisor.Supervisor

	// Warnings are what the harness weakened, for the harness to show.
	Warnings []string

	tie      *net.UnixConn // the die-with-host connection, held open
	stopOnce sync.Once
	stopErr  error
}

// StartHarnessed resolves ref (an app folder or capsule.yml, an archive, an
// installed name or digest), makes the instance, starts its services under
// the supervisor and returns once every one is ready by its own readiness
// (notify, probes; none: when started), woken by the supervisor's state
// changes. When ctx ends first, or a service fails, everything is removed
// and the error says how each service stands, with its logs.
func StartHarnessed(ctx context.Context, ref string, o HarnessOptions) (_ *Harnessed, err error) {
	t, err := resolveHarnessed(ctx, ref, o)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if m := t.Manifest; o.UnfilteredWithoutSeccomp && !libseccomp.Enabled && m.Seccomp != specs.SeccompUnconfined {
		warnings = append(warnings, fmt.Sprintf("capsule %s runs WITHOUT its system call filter (%s): this binary was built without seccomp support (go test -tags seccomp, with libseccomp-dev, applies it)", m.Name, SeccompMode(m)))
		m.Seccomp = specs.SeccompUnconfined
	}
	if o.Host, err = harnessHost(o); err != nil {
		return nil, err
	}
	inst, err := Create(ctx, t, o.Options)
	if err != nil {
		return nil, err
	}
	h := &Harnessed{Instance: inst, Warnings: warnings}
	defer func() {
		if err != nil {
			if serr := h.Stop(context.WithoutCancel(ctx)); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if o.DieWithHost {
		if h.tie, err = inst.TieToProcess(); err != nil {
			return h, err
		}
	}
	if h.Sup, err = inst.Supervise(); err != nil {
		return h, err
	}
	// The supervisor's context means "leave the services running" when it
	// ends (a daemon's); Stop stops them, so it is never cancelled.
	if err := h.Sup.Start(context.WithoutCancel(ctx)); err != nil {
		return h, err
	}
	if err := h.Sup.WaitReady(ctx); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("not ready in time: %w", err)
		}
		// Stopping flushes the services' logs, which the report shows.
		st := h.Sup.Status()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopDeadline(inst.Manifest))
		_ = h.Sup.Stop(sctx)
		cancel()
		h.Sup.Wait()
		return h, fmt.Errorf("capsule %s: %w\n%s", inst.Manifest.Name, err, h.report(st))
	}
	return h, nil
}

func resolveHarnessed(ctx context.Context, ref string, o HarnessOptions) (*Target, error) {
	src := o.Options
	if o.SourceRoot != "" {
		src.Root = o.SourceRoot
	}
	if fi, err := os.Stat(ref); err == nil && !fi.IsDir() && release.IsArchiveName(ref) {
		root := o.Root
		if o.ArchiveCache != "" {
			root = o.ArchiveCache
		}
		digest, err := installArchive(ctx, root, ref, fi)
		if err != nil {
			return nil, err
		}
		ref, src.Root = "sha256:"+digest, root
	}
	t, err := Resolve(ref, src)
	if err != nil {
		return nil, err
	}
	if t, err = applyLimits(t, o); err != nil {
		return nil, err
	}
	m := t.Manifest
	for _, kv := range o.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("env %q: expected KEY=VALUE", kv)
		}
		m.Env = append(m.Env, specs.EnvVar{Name: k, Value: v})
	}
	for _, v := range o.Volumes {
		if !filepath.IsAbs(v.Host) || !filepath.IsAbs(v.Capsule) {
			return nil, fmt.Errorf("volume %s:%s: both paths must be absolute", v.Host, v.Capsule)
		}
		m.Volumes = append(m.Volumes, specs.Volume{Host: v.Host, Capsule: v.Capsule, ReadOnly: v.ReadOnly})
	}
	return t, nil
}

// installed remembers the archives installed into a cache, by file.
var installed sync.Map // archiveKey -> digest

type archiveKey struct {
	root          string
	dev, ino      uint64
	size, mtimeNS int64
}

// installArchive installs archive into the store at root, or finds it
// installed there by an earlier start of this process.
func installArchive(ctx context.Context, root, archive string, fi os.FileInfo) (string, error) {
	store, err := release.Open(root)
	if err != nil {
		return "", err
	}
	var key archiveKey
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok {
		key = archiveKey{root: root, dev: st.Dev, ino: st.Ino, size: fi.Size(), mtimeNS: fi.ModTime().UnixNano()}
		if d, ok := installed.Load(key); ok {
			if _, err := store.Resolve("sha256:" + d.(string)); err == nil {
				return d.(string), nil
			}
		}
	}
	rel, _, err := store.Install(ctx, archive)
	if err != nil {
		return "", err
	}
	if ok {
		installed.Store(key, rel.Digest)
	}
	return rel.Digest, nil
}

// harnessHost is the operator's configuration a harnessed capsule runs
// under: o.Host (or none), plus exactly the host paths the harness binds.
func harnessHost(o HarnessOptions) (*HostConfig, error) {
	h := &HostConfig{Config: &specs.HostConfig{}}
	if o.Host != nil {
		c := *o.Host
		c.Volumes = slices.Clone(c.Volumes)
		h = &c
	}
	for _, a := range o.AllowVolumes {
		p, mode, _ := strings.Cut(a, ":")
		if !filepath.IsAbs(p) || (mode != "" && mode != "ro" && mode != "rw") {
			return nil, fmt.Errorf("allowed volume %q: expected an absolute host path, optionally followed by :ro or :rw", a)
		}
		h.Volumes = append(h.Volumes, AllowedVolume{Path: filepath.Clean(p), ReadOnly: mode == "ro", From: "the harness's allowed volume " + a})
	}
	for _, v := range o.Volumes {
		h.Volumes = append(h.Volumes, AllowedVolume{Path: v.Host, ReadOnly: v.ReadOnly, From: "the harness's own volume " + v.Host})
	}
	return h, nil
}

func applyLimits(t *Target, o HarnessOptions) (*Target, error) {
	m := t.Manifest
	if len(o.Limits) > 0 {
		text := "[Slice]\n" + strings.Join(o.Limits, "\n") + "\n"
		res, err := specs.ParseSlice(strings.NewReader(text), "limits")
		if err != nil {
			return nil, err
		}
		m.Resources = m.Resources.Override(res)
	}
	return t, nil
}

// TieToProcess ends the capsule when this process ends: it holds a
// connection to the capsule's init open, which the kernel closes when the
// process exits, even by SIGKILL; the init then exits, and the kernel kills
// everything in the capsule's PID namespace. Only the caller's process holds
// the connection (close-on-exec). What the kernel does not tie to a process
// (the overlay's mount, cgroups, files) is left for SweepStale.
func (i *Instance) TieToProcess() (*net.UnixConn, error) {
	conn, err := capinit.DieWithHost(context.Background(), i.paths.InitSocket, initAnswerTimeout)
	if err != nil {
		return nil, fmt.Errorf("tying the capsule to this process: %w", err)
	}
	return conn, nil
}

// Stop stops the services (reverse order, stop signals and timeouts) and
// removes the instance. Safe to call more than once.
func (h *Harnessed) Stop(ctx context.Context) error {
	h.stopOnce.Do(func() {
		var errs []error
		if h.Sup != nil {
			sctx, cancel := context.WithTimeout(ctx, stopDeadline(h.Manifest))
			errs = append(errs, h.Sup.Stop(sctx))
			cancel()
			h.Sup.Wait()
		}
		errs = append(errs, h.Destroy(ctx))
		if h.tie != nil {
			_ = h.tie.Close()
		}
		h.stopErr = errors.Join(errs...)
	})
	return h.stopErr
}

// Logs returns what service has written so far (stdout and stderr, in
// order, a line each).
func (h *Harnessed) Logs(service string) ([]byte, error) {
	if h.Manifest.Service(service) == nil {
		return nil, fmt.Errorf("capsule %s has no service %q", h.Manifest.Name, service)
	}
	var b []byte
	err := supervisor.ReadLogs(context.Background(), LogDir(h.opts.Root, h.Manifest.Name), service, supervisor.ReadOptions{},
		func(l supervisor.Line) error {
			b = append(b, l.Text...)
			if !l.Partial {
				b = append(b, '\n')
			}
			return nil
		})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing written yet
	}
	return b, err
}

// Pid is the host pid of the service's current process.
func (h *Harnessed) Pid(service string) (int, error) {
	for _, s := range h.Sup.Status() {
		if s.Name == service {
			if s.Pid == 0 {
				return 0, fmt.Errorf("service %s has no process (%s: %s)", service, s.State, s.Reason)
			}
			return s.Pid, nil
		}
	}
	return 0, fmt.Errorf("capsule %s has no service %q", h.Manifest.Name, service)
}

// StateSocket is the host's own socket of the capsule's state proxy (the
// admin one): any key, no rate limit.
func (h *Harnessed) StateSocket() string { return h.paths.AdminSocket }

// report says how each service stood, and the last lines of its log.
func (h *Harnessed) report(st []supervisor.ServiceStatus) string {
	var b strings.Builder
	b.WriteString((&RunResult{Services: st}).Summary())
	for _, s := range h.Manifest.Services {
		out, _ := h.Logs(s.Name)
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(lines) > 50 {
			lines = lines[len(lines)-50:]
		}
		fmt.Fprintf(&b, "--- logs of %s ---\n%s\n", s.Name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// ExecError is a command run by ExecOutput that did not exit 0.
type ExecError struct {
	Argv   []string
	Exit   supervisor.Exit
	Output []byte
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("%s: %s: %s", strings.Join(e.Argv, " "), e.Exit.String(), strings.TrimSpace(string(e.Output)))
}

// ExecOutput runs argv inside the capsule, in service's cgroup and with its
// environment (as an exec probe runs), and returns its output (stdout and
// stderr together). A status other than 0 is an *ExecError. When ctx ends
// first the process is killed.
func (i *Instance) ExecOutput(ctx context.Context, service string, argv ...string) ([]byte, error) {
	s, g := i.Manifest.Service(service), i.madeGroup(service)
	if s == nil || (g == nil && i.group != nil) { // no group at all: rootless_run.go
		return nil, fmt.Errorf("exec in %s: no such running service", service)
	}
	if len(argv) == 0 {
		return nil, errors.New("exec: no command")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := i.startProcess(ctx, service+" (exec)", argv, serviceEnv(i.Manifest, s, i.Release, i.BuildSHA), g, w, w, nil)
	w.Close()
	if err != nil {
		return nil, err
	}
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r) // ends when every writer (the tree) is gone
		out <- b
	}()
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Signal(9)
		<-p.Done()
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), ctx.Err())
	}
	var b []byte
	select {
	case b = <-out:
	case <-time.After(time.Second): // a child it left behind still holds the pipe
		_ = r.SetReadDeadline(time.Now())
		b = <-out
	}
	if e := p.Exit(); e.Code != 0 || e.Signal != 0 {
		return b, &ExecError{Argv: argv, Exit: e, Output: b}
	}
	return b, nil
}

// RemoveTree unmounts whatever is mounted under dir, deepest first, and
// removes it; it refuses to remove a tree that still holds a mount.
func RemoveTree(dir string) error {
	return errors.Join(overlay.UnmountAll(dir), overlay.RemoveUnmounted(dir))
}

// appOverlayMount is the app's overlay as a mount of the capsule's spec:
// made inside the capsule's mount namespace, it ends with it — with no
// unmount, even when nothing of tori-run is left to do one. userns: in a
// user namespace (trusted.* xattrs are root's; user.* are used instead).
func appOverlayMount(appDir, upper, work string, userns bool) rspec.Mount {
	opts := []string{"lowerdir=" + appDir, "upperdir=" + upper, "workdir=" + work, "nosuid", "nodev"}
	if userns {
		opts = append(opts, "userxattr")
	}
	return rspec.Mount{Destination: capsuleApp, Type: "overlay", Source: "overlay", Options: opts}
}

// appInCapsule replaces the bind of the host-mounted app by the overlay
// itself (Options.AppInCapsule).
func appInCapsule(s *rspec.Spec, readOnly bool, appDir, upper, work string) {
	for n, mt := range s.Mounts {
		if mt.Destination != capsuleApp {
			continue
		}
		if readOnly {
			s.Mounts[n].Source = appDir // the app itself, bound read-only
		} else {
			s.Mounts[n] = appOverlayMount(appDir, upper, work, false)
		}
	}
}
