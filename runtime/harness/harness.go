//go:build linux

// Package harness is what a test harness (package toritest) needs of the
// runtime, in one place: start a capsule under its supervisor and wait until
// every service is ready, tie the capsule's life to the harness's process,
// read a service's logs, exec into it, stop it; and the sweep of what ended
// test processes (and ended tori-runs) left behind, which toritest's Start
// and `tori-run gc` run (sweep.go). The rest of the CLI does not use it.
//
// It sits on runtime's exported API (Resolve, Create, Supervise, Destroy,
// TieToProcess, ExecOutput, SweepStaleInstances): nothing of an instance's
// insides.
package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// Options are runtime.Options plus what a harness changes in the capsule it
// runs.
type Options struct {
	runtime.Options
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
	Volumes []Volume
	// AllowVolumes are host paths the manifest's own volumes may bind, as
	// --allow-volume PATH[:ro] gives them (the host's configuration file is
	// not read: a harness is its own operator).
	AllowVolumes []string
	// Limits are systemd slice directives (MemoryMax=64M, ...) over the
	// manifest's resources, as a --slice file would give them.
	Limits []string
	// DieWithHost ends the capsule when this process ends, however it
	// ends (see runtime.Instance.TieToProcess).
	DieWithHost bool
	// UnfilteredWithoutSeccomp runs the capsule without its system call
	// filter when this binary was built without seccomp support (a test
	// binary built without -tags seccomp), instead of refusing it; the
	// Capsule's Warnings say so.
	UnfilteredWithoutSeccomp bool
}

// Volume is a host folder bound into the capsule.
type Volume struct {
	Host, Capsule string
	ReadOnly      bool
}

// Capsule is a capsule a harness runs: its instance and supervisor.
type Capsule struct {
	*runtime.Instance
	Sup *supervisor.Supervisor

	// Warnings are what the harness weakened, for the harness to show.
	Warnings []string

	root     string        // Options.Root: where the services' logs are
	tie      *net.UnixConn // the die-with-host connection, held open
	stopOnce sync.Once
	stopErr  error
}

// Start resolves ref (an app folder or capsule.yml, an archive, an
// installed name or digest), makes the instance, starts its services under
// the supervisor and returns once every one is ready by its own readiness
// (notify, probes; none: when started), woken by the supervisor's state
// changes. When ctx ends first, or a service fails, everything is removed
// and the error says how each service stands, with its logs.
func Start(ctx context.Context, ref string, o Options) (_ *Capsule, err error) {
	t, err := resolve(ctx, ref, o)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if m := t.Manifest; o.UnfilteredWithoutSeccomp && !runtime.SeccompBuiltIn() && m.Seccomp != specs.SeccompUnconfined {
		warnings = append(warnings, fmt.Sprintf("capsule %s runs WITHOUT its system call filter (%s): this binary was built without seccomp support (go test -tags seccomp, with libseccomp-dev, applies it)", m.Name, runtime.SeccompMode(m)))
		m.Seccomp = specs.SeccompUnconfined
	}
	if o.Host, err = hostFor(o); err != nil {
		return nil, err
	}
	inst, err := runtime.Create(ctx, t, o.Options)
	if err != nil {
		return nil, err
	}
	h := &Capsule{Instance: inst, Warnings: warnings, root: o.Root}
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
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtime.StopDeadline(inst.Manifest))
		_ = h.Sup.Stop(sctx)
		cancel()
		h.Sup.Wait()
		return h, fmt.Errorf("capsule %s: %w\n%s", inst.Manifest.Name, err, h.report(st))
	}
	return h, nil
}

func resolve(ctx context.Context, ref string, o Options) (*runtime.Target, error) {
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
	t, err := runtime.Resolve(ref, src)
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

// hostFor is the operator's configuration a harnessed capsule runs under:
// o.Host (or none), plus exactly the host paths the harness binds.
func hostFor(o Options) (*runtime.HostConfig, error) {
	h := &runtime.HostConfig{Config: &specs.HostConfig{}}
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
		h.Volumes = append(h.Volumes, runtime.AllowedVolume{Path: filepath.Clean(p), ReadOnly: mode == "ro", From: "the harness's allowed volume " + a})
	}
	for _, v := range o.Volumes {
		h.Volumes = append(h.Volumes, runtime.AllowedVolume{Path: v.Host, ReadOnly: v.ReadOnly, From: "the harness's own volume " + v.Host})
	}
	return h, nil
}

func applyLimits(t *runtime.Target, o Options) (*runtime.Target, error) {
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

// Stop stops the services (reverse order, stop signals and timeouts) and
// removes the instance. Safe to call more than once.
func (h *Capsule) Stop(ctx context.Context) error {
	h.stopOnce.Do(func() {
		var errs []error
		if h.Sup != nil {
			sctx, cancel := context.WithTimeout(ctx, runtime.StopDeadline(h.Manifest))
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
func (h *Capsule) Logs(service string) ([]byte, error) {
	if h.Manifest.Service(service) == nil {
		return nil, fmt.Errorf("capsule %s has no service %q", h.Manifest.Name, service)
	}
	var b []byte
	err := supervisor.ReadLogs(context.Background(), runtime.LogDir(h.root, h.Manifest.Name), service, supervisor.ReadOptions{},
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
func (h *Capsule) Pid(service string) (int, error) {
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
func (h *Capsule) StateSocket() string { return h.AdminSocket() }

// report says how each service stood, and the last lines of its log.
func (h *Capsule) report(st []supervisor.ServiceStatus) string {
	var b strings.Builder
	b.WriteString((&runtime.RunResult{Services: st}).Summary())
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
