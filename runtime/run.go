//go:build linux

package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime/capslog"
	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// Resolve finds what to run: a capsule.yml (its folder is the app), an app
// folder holding one, or an installed release by name or digest.
func Resolve(ref string, o Options) (*Target, error) {
	manifest := ""
	if fi, err := os.Stat(ref); err == nil {
		if fi.IsDir() {
			manifest = filepath.Join(ref, "capsule.yml")
		} else {
			manifest = ref
		}
	}
	if manifest != "" {
		m, err := specs.Load(manifest)
		if err != nil {
			return nil, err
		}
		app, err := filepath.Abs(filepath.Dir(manifest))
		if err != nil {
			return nil, err
		}
		if err := specs.CheckApp(m, os.DirFS(app)); err != nil {
			return nil, err
		}
		layers, err := resolveLayers(m, o)
		if err != nil {
			return nil, err
		}
		if err := hostfacts.PreparePython(m, layers, CapsuleLogger(o.Log, m.Name, "unreleased", "")); err != nil {
			return nil, err
		}
		return &Target{Manifest: m, AppDir: app, Layers: layers, Release: "unreleased"}, nil
	}
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, fmt.Errorf("%q is not a capsule.yml, an app folder or an installed release (tori-run list shows them): %w", ref, err)
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, err
	}
	layers, err := resolveLayers(m, o)
	if err != nil {
		return nil, err
	}
	if err := hostfacts.PreparePython(m, layers, CapsuleLogger(o.Log, m.Name, rel.Digest, rel.BuildSHA)); err != nil {
		return nil, err
	}
	return &Target{Manifest: m, AppDir: filepath.Join(rel.Path, "app"), Layers: layers, Release: rel.Digest, BuildSHA: rel.BuildSHA}, nil
}

// resolveLayers finds the folders of the layers under the app, before
// anything is created: nil for the host layer; otherwise, top first, the
// app/ tree of each installed release a digest names (a rootfs layer).
func resolveLayers(m *specs.Manifest, o Options) ([]string, error) {
	if len(m.Layers) == 1 && m.Layers[0] == specs.LayerHost {
		return nil, nil
	}
	if slices.Contains(m.Layers, specs.LayerHost) {
		return nil, fmt.Errorf("%s: layers %v: the host layer cannot be stacked with rootfs layers; use either [host] or rootfs digests", m.Source, m.Layers)
	}
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, d := range m.Layers {
		rel, err := store.Resolve("sha256:" + d)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %s is not an installed release (install the rootfs layer's archive first): %w", m.Source, d, err)
		}
		dirs = append(dirs, filepath.Join(rel.Path, "app"))
	}
	return dirs, nil
}

// RunResult is what a foreground run did: how each service stands at the
// end, as the supervisor saw it.
type RunResult struct {
	Services []supervisor.ServiceStatus
	Signaled bool // the run was asked to stop
}

// OK says whether the run ended as asked: no service failed, none was
// OOM-killed, and unless the run was stopped on request every service
// exited cleanly.
func (r *RunResult) OK() bool {
	for _, s := range r.Services {
		if s.State == supervisor.StateFailed || (s.LastExit != nil && s.LastExit.OOMKilled) {
			return false
		}
		if !r.Signaled && s.LastExit != nil && (s.LastExit.Code != 0 || s.LastExit.Signal != 0) {
			return false
		}
	}
	return true
}

// Summary is a line per service saying how it ended.
func (r *RunResult) Summary() string {
	var b strings.Builder
	for _, s := range r.Services {
		fmt.Fprintf(&b, "%s: %s (%s)", s.Name, s.State, s.Reason)
		if s.LastExit != nil {
			fmt.Fprintf(&b, ", last exit: %s", s.LastExit)
		}
		if s.Restarts > 0 {
			fmt.Fprintf(&b, ", %d restarts", s.Restarts)
		}
		if s.Message != "" {
			fmt.Fprintf(&b, ": %s", s.Message)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// LogDir is where a capsule's service logs live: <root>/logs/<capsule>.
func LogDir(root, capsule string) string { return layout.Layout{Root: root}.Logs(capsule) }

// LogOptions select what ReadCapsuleLogs passes on.
type LogOptions = capslog.Options

// LogLine is one record of a capsule's logs.
type LogLine = capslog.Line

// ReadCapsuleLogs passes the log records of target (NAME or NAME/SERVICE)
// to fn (capslog.Read).
func ReadCapsuleLogs(ctx context.Context, root, target string, o LogOptions, fn func(LogLine) error) error {
	return capslog.Read(ctx, root, target, o, fn)
}

func serviceNames(p *plan.Plan) []string {
	out := make([]string, len(p.Services))
	for k, s := range p.Services {
		out[k] = s.Name
	}
	return out
}

// Supervise makes the supervisor of an instance's services: started
// through the capsule's init, probed inside it, logged under LogDir.
func (i *Instance) Supervise() (*supervisor.Supervisor, error) {
	return supervisor.New(supervisorConfigs(i.plan.Services), capsuleRunner{i}, supervisor.Options{
		Prober:    capsuleProber{i},
		LogDir:    i.opts.layout().Logs(i.plan.Capsule),
		NotifyDir: i.paths.Notify,
		StateDir:  i.paths.Supervisor,
		Log:       i.Log,
	})
}

// Run runs a capsule in the foreground under the supervisor (restart
// policies, probes, ordering, logs) until ctx ends (SIGINT/SIGTERM) or no
// service runs any more, then stops the services in reverse order and
// removes the instance. Service output is logged, and echoed to out line by
// line, prefixed with the service's name; when out fails (its reader is
// gone: EPIPE, or EIO from a hung-up terminal) the run stops as if
// signalled, rather than run on unseen or die and orphan the capsule.
func Run(ctx context.Context, ref string, o Options, out io.Writer) (*RunResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	setMetrics, closeMetrics, err := runMetrics(&o)
	if err != nil {
		return nil, err
	}
	defer closeMetrics()
	t, err := Resolve(ref, o)
	if err != nil {
		return nil, err
	}
	inst, err := Create(ctx, t, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if derr := inst.Destroy(context.WithoutCancel(ctx)); derr != nil {
			inst.Log.Error().Err(derr).Msg("removing the instance")
		}
	}()
	sup, err := inst.Supervise()
	if err != nil {
		return nil, err
	}
	setMetrics(inst, sup)
	echo := capslog.Echo(ctx, o.layout().Logs(inst.plan.Capsule), serviceNames(inst.plan), out, func(err error) {
		inst.Log.Warn().Err(err).Msg("the output is gone: stopping the capsule")
		cancel(fmt.Errorf("writing the services' output: %w", err))
	})
	sub := sup.Events()
	defer sub.Close()
	res := &RunResult{}
	// The supervisor's own context means "shutting down: leave the services
	// running" (what a daemon that will be re-adopted needs); a foreground
	// run stops them itself below, so it gives one that is never cancelled.
	if err := sup.Start(context.WithoutCancel(ctx)); err != nil {
		inst.Log.Error().Err(err).Msg("starting the services")
	}
	for !AllTerminal(sup.States()) {
		select {
		case <-sub.C(): // the supervisor logs each transition itself
			continue
		case <-ctx.Done():
			res.Signaled = true
		}
		break
	}
	stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), stopDeadline(t.Manifest))
	defer stopCancel()
	if err := sup.Stop(stopCtx); err != nil {
		inst.Log.Error().Err(err).Msg("stopping the services")
	}
	sup.Wait()
	echo()
	res.Services = sup.Status()
	return res, nil
}

// AllTerminal says whether no service runs or will run: each ended, failed
// or was stopped (a service not yet started has not ended).
func AllTerminal(st []supervisor.ServiceStatus) bool {
	for _, s := range st {
		if !s.State.Terminal() || s.Reason == supervisor.ReasonNotStarted {
			return false
		}
	}
	return true
}

// stopDeadline bounds a whole stop: every service's stop timeout in turn,
// and some room for the tree kills.
func stopDeadline(m *specs.Manifest) time.Duration {
	d := 10 * time.Second
	for _, s := range m.Services {
		d += s.StopTimeout
	}
	return d
}
