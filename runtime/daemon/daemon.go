//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/metrics"
	"github.com/tori-run/tori-run/supervisor"
)

// Options configure tori-run daemon.
type Options struct {
	runtime.Options
	// Socket is the control API's Unix socket (mode 0600, root only).
	Socket string
	// StopDeadline bounds the stop of every capsule at SIGTERM.
	StopDeadline time.Duration
	// Options.MetricsAddr, if set, serves Prometheus metrics (GET
	// /metrics) there: every capsule the daemon runs (metrics.go).
}

// Daemon supervises every enabled capsule and serves the control API.
type Daemon struct {
	o Options

	mu       sync.Mutex // guards capsules, subs and closing
	capsules map[string]*managed
	subs     map[chan Event]struct{}
	// closing is set once the daemon stops: no start begins after it;
	// closed is closed then.
	closing bool
	closed  chan struct{}
	// starts counts the starts under way (Add under mu, while !closing), so
	// that stopAll waits for them before it stops what they made.
	starts sync.WaitGroup
	um     *upgradeMetrics // nil without --metrics-addr
	// launch makes or adopts m's instance and starts its supervisor
	// (launchInstance; tests put a stand-in here).
	launch func(m *managed, ref string) error
}

func newDaemon(o Options) *Daemon {
	d := &Daemon{o: o, capsules: map[string]*managed{}, subs: map[chan Event]struct{}{}, closed: make(chan struct{})}
	d.launch = d.launchInstance
	return d
}

// managed is one capsule the daemon runs.
type managed struct {
	name, release string
	inst          *runtime.Instance
	sup           *supervisor.Supervisor
	state         CapsuleState // moved only by to (state.go)
	err           string
	since         time.Time
	adopted       bool
	// stopForward ends the copying of the supervisor's events, once it
	// has ended.
	stopForward func()
	// shared is what the capsule's instances share (sockets, state);
	// upgrade is the upgrade under way, if any.
	shared  *runtime.Shared
	upgrade *upgradeRun
}

// Run runs the daemon until ctx ends, then stops every capsule within
// the stop deadline and returns nil.
func Run(ctx context.Context, o Options) error {
	if o.Socket == "" {
		o.Socket = DefaultSocket
	}
	if o.StopDeadline == 0 {
		o.StopDeadline = 60 * time.Second
	}
	o.Owner = runtime.OwnerDaemon
	d := newDaemon(o)
	if o.MetricsAddr != "" {
		ms, err := metrics.Start(o.MetricsAddr, runtime.MetricsBuild(), d.samples, o.Log)
		if err != nil {
			return err
		}
		defer ms.Close()
		d.o.Metrics = ms.State
		if d.um, err = newUpgradeMetrics(ms.Registry); err != nil {
			return err
		}
		o = d.o
	}
	l, err := listenControl(o.Socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerOf(c))
		}}
	go func() { _ = srv.Serve(l) }()
	o.Log.Info().Str("socket", o.Socket).Msg("daemon listening")

	if err := runtime.SweepStale(ctx, o.Options); err != nil {
		o.Log.Warn().Err(err).Msg("cleaning up after foreground runs")
	}
	enabled, err := Enabled(o.Root)
	if err != nil {
		o.Log.Error().Err(err).Msg("reading the enabled capsules")
	}
	for _, name := range slices.Sorted(maps.Keys(enabled)) {
		if err := d.start(name); err != nil {
			l := d.capsuleLog(name)
			l.Error().Err(err).Msg("capsule did not start")
		}
	}
	// What a previous daemon left of capsules no longer enabled, nobody
	// will adopt: remove it.
	if err := runtime.SweepStale(ctx, o.Options, runtime.OwnerDaemon); err != nil {
		o.Log.Warn().Err(err).Msg("removing instances of capsules no longer enabled")
	}
	<-ctx.Done()
	o.Log.Info().Msg("stopping every capsule")
	sctx, cancel := context.WithTimeout(context.Background(), o.StopDeadline)
	defer cancel()
	d.stopAll(sctx)
	_ = srv.Shutdown(sctx)
	_ = os.Remove(o.Socket)
	return nil
}

// start runs an enabled capsule (or one of its services).
func (d *Daemon) start(name string) error {
	d.mu.Lock()
	busy := d.capsules[name] != nil && d.capsules[name].upgrade != nil
	closing := d.closing
	d.mu.Unlock()
	if closing {
		return errStopping
	}
	if !busy {
		if err := d.recoverUpgrade(name); err != nil {
			d.o.Log.Error().Err(err).Str(runtime.FieldCapsule, name).Msg("finishing an upgrade a previous daemon left")
		}
	}
	enabled, err := Enabled(d.o.Root)
	if err != nil {
		return err
	}
	ref, ok := enabled[name]
	if !ok {
		return fmt.Errorf("capsule %q is not enabled (tori-run enable %s)", name, name)
	}
	// The slot is taken under the lock before launching, so two start
	// requests at once cannot make two instances.
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return errStopping
	}
	m := &managed{name: name, release: ref, shared: runtime.NewShared(name, d.o.Options)}
	if prev := d.capsules[name]; prev != nil {
		if prev.state == StateRunning || prev.state == StateStarting {
			d.mu.Unlock()
			return nil
		}
		m.state = prev.state
	}
	if err := m.to(StateStarting); err != nil {
		d.mu.Unlock()
		return err
	}
	d.capsules[name] = m
	d.starts.Add(1)
	d.mu.Unlock()
	defer d.starts.Done()
	err = d.launch(m, ref)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		m.err = err.Error()
		if merr := m.to(StateFailed); merr != nil {
			err = errors.Join(err, merr)
		}
	}
	return err
}

func (d *Daemon) launchInstance(m *managed, ref string) error {
	ctx := context.Background()
	if dir := runtime.FindAdoptable(d.o.Root, m.name); dir != "" {
		rec, err := runtime.ReadInstanceRecord(dir)
		if err == nil && rec.Release == ref {
			if err := d.adopt(m, dir); err == nil {
				return nil
			} else {
				l := runtime.CapsuleLogger(d.o.Log, m.name, rec.Release, rec.BuildSHA)
				l.Warn().Err(err).Msg("could not adopt the running capsule; starting it anew")
			}
		}
		if err := runtime.SweepInstance(dir, d.o.Options); err != nil {
			return fmt.Errorf("removing the instance a previous daemon left: %w", err)
		}
	}
	t, err := runtime.Resolve(ref, d.o.Options)
	if err != nil {
		return err
	}
	o := d.o.Options
	o.Shared = m.shared
	inst, err := runtime.Create(ctx, t, o)
	if err != nil {
		return err
	}
	sup, err := inst.Supervise()
	if err == nil {
		err = m.shared.TakeSockets(inst)
	}
	if err != nil {
		_ = inst.Destroy(ctx)
		_ = m.shared.Close(ctx)
		return err
	}
	d.mu.Lock()
	m.inst, m.sup = inst, sup
	err = m.to(StateRunning)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.forward(m)
	return sup.Start(ctx)
}

// adopt carries on supervising a capsule a previous daemon left running:
// the same processes, their restart history from the supervisor's state
// folder, their output from the pipes the init kept.
func (d *Daemon) adopt(m *managed, dir string) error {
	ctx := context.Background()
	o := d.o.Options
	o.Shared = m.shared
	inst, adopted, err := runtime.Adopt(ctx, dir, o)
	if err != nil {
		return err
	}
	sup, err := inst.Supervise()
	if err == nil {
		err = m.shared.TakeSockets(inst)
	}
	if err != nil {
		return err
	}
	for _, a := range adopted {
		if a.Stdout == nil {
			a.Stdout, _ = os.Open(os.DevNull)
			a.Stderr, _ = os.Open(os.DevNull)
		}
		if err := sup.Adopt(a.Name, a.Process(), a.Stdout, a.Stderr); err != nil {
			inst.Log.Warn().Err(err).Str(runtime.FieldService, a.Name).Msg("could not adopt the service; killing it")
			_ = a.Kill()
		}
	}
	d.mu.Lock()
	m.inst, m.sup, m.adopted = inst, sup, true
	err = m.to(StateRunning)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.forward(m)
	return sup.Start(ctx)
}

// forward copies a capsule's events to the daemon's subscribers.
func (d *Daemon) forward(m *managed) {
	m.stopForward = d.forwardFrom(m.name, "", m.sup)
}

func (d *Daemon) publish(ev Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.subs {
		select {
		case c <- ev:
		default: // a slow subscriber loses events; supervision never waits
		}
	}
}

// stop stops a running capsule and removes its instance.
func (d *Daemon) stop(ctx context.Context, name string) error {
	d.mu.Lock()
	m := d.capsules[name]
	if m != nil && m.upgrade != nil {
		d.mu.Unlock()
		return fmt.Errorf("an %s of %s is under way; wait for its verdict", m.upgrade.kind, name)
	}
	running := m != nil && m.state == StateRunning
	if running {
		_ = m.to(StateStopping) // running -> stopping is in the table
	}
	d.mu.Unlock()
	if !running {
		return nil
	}
	var errs []error
	errs = append(errs, m.sup.Stop(ctx))
	m.sup.Wait()
	m.stopForward()
	if m.inst != nil {
		errs = append(errs, m.inst.Destroy(ctx))
	}
	errs = append(errs, m.shared.Close(ctx))
	d.mu.Lock()
	errs = append(errs, m.to(StateStopped))
	d.mu.Unlock()
	return errors.Join(errs...)
}

// stopAll stops every capsule: from now on no start begins, the starts
// under way end (running or failed) and then everything running stops, in
// the reverse order of names.
func (d *Daemon) stopAll(ctx context.Context) {
	d.mu.Lock()
	if !d.closing {
		d.closing = true
		close(d.closed)
	}
	d.mu.Unlock()
	started := make(chan struct{})
	go func() { d.starts.Wait(); close(started) }()
	select {
	case <-started:
	case <-ctx.Done():
	}
	d.mu.Lock()
	names := slices.Sorted(maps.Keys(d.capsules))
	var upgrades []*upgradeRun
	for _, m := range d.capsules {
		if m.upgrade != nil {
			upgrades = append(upgrades, m.upgrade)
		}
	}
	d.mu.Unlock()
	// An upgrade under way rolls back first: the old release is the one
	// whose stop is recorded as the capsule's.
	for _, u := range upgrades {
		if u.cancel != nil {
			u.cancel()
		}
		select {
		case <-u.done:
		case <-ctx.Done():
		}
	}
	for i := len(names) - 1; i >= 0; i-- {
		if err := d.stop(ctx, names[i]); err != nil {
			l := d.capsuleLog(names[i])
			l.Error().Err(err).Msg("stopping")
		}
	}
}

func (d *Daemon) status(name string) []CapsuleStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []CapsuleStatus
	for _, n := range slices.Sorted(maps.Keys(d.capsules)) {
		if name != "" && n != name {
			continue
		}
		m := d.capsules[n]
		st := CapsuleStatus{Name: n, Release: m.release, State: m.state, Error: m.err, Since: m.since, Adopted: m.adopted}
		if m.inst != nil {
			st.Instance, st.BuildSHA = m.inst.ID, runtime.ShowBuildSHA(m.inst.BuildSHA)
			st.Seccomp = runtime.SeccompMode(m.inst.Manifest)
			st.Sockets = m.inst.Sockets()
		}
		st.Previous = readRef(previousRef(d.o.Root, n))
		if u := m.upgrade; u != nil {
			st.Upgrade = &UpgradeStatus{Kind: u.kind, Candidate: u.to, Instance: u.inst, Phase: u.phase, Since: u.since}
		}
		if m.sup != nil && m.state == StateRunning {
			st.Services = m.sup.Status()
			st.Storage = m.inst.StateUsage()
		}
		out = append(out, st)
	}
	return out
}
