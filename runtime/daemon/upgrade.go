//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/supervisor"
)

// Upgrade kinds.
const (
	KindUpgrade  = "upgrade"
	KindRollback = "rollback"
)

// UpgradeProgress is one line of an upgrade's progress; the last one has
// Verdict set, and OK when the new release serves.
type UpgradeProgress struct {
	Time    time.Time `json:"time"`
	Phase   Phase     `json:"phase"`
	Message string    `json:"message"`
	Verdict bool      `json:"verdict,omitempty"`
	OK      bool      `json:"ok,omitempty"`
	// SwitchTime is, on the verdict of a switch, the time from the new
	// release being ready (healthy for min_healthy_time) to the old one
	// no longer accepting (its services stopped).
	SwitchTime time.Duration `json:"switch_time,omitempty"`
}

// UpgradeStatus is an upgrade under way, as status shows it.
type UpgradeStatus struct {
	Kind      string    `json:"kind"`
	Candidate string    `json:"candidate"` // release digest
	Instance  string    `json:"instance,omitempty"`
	Phase     Phase     `json:"phase"`
	Since     time.Time `json:"since"`
}

// upgradeRun is an upgrade the daemon is doing.
type upgradeRun struct {
	kind, from, to string
	cancel         context.CancelFunc
	done           chan struct{}
	// phase and inst are guarded by the daemon's mu.
	phase Phase
	inst  string
	since time.Time
}

// beginUpgrade checks that capsule name can be upgraded to ref now and
// takes its upgrade slot; a second upgrade of the same capsule is refused.
func (d *Daemon) beginUpgrade(name, ref, kind string) (*managed, *upgradeRun, error) {
	if kind == KindRollback {
		ref = readRef(previousRef(d.o.Root, name))
		if ref == "" {
			return nil, nil, fmt.Errorf("capsule %q has no previous stable release to roll back to (none recorded in %s)", name, previousRef(d.o.Root, name))
		}
	}
	store, err := release.Open(d.o.Root)
	if err != nil {
		return nil, nil, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("%s to %q: %w", kind, ref, err)
	}
	if rel.Name != name {
		return nil, nil, fmt.Errorf("release %s is capsule %q, not %q", rel.Digest[:12], rel.Name, name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.capsules[name]
	switch {
	case m == nil || m.state != StateRunning:
		return nil, nil, fmt.Errorf("capsule %q is not running under this daemon (tori-run start %s)", name, name)
	case m.upgrade != nil:
		return nil, nil, fmt.Errorf("an %s of %s is already under way (to %s, phase %s); wait for its verdict", m.upgrade.kind, name, short(m.upgrade.to), m.upgrade.phase)
	case m.release == rel.Digest:
		return nil, nil, fmt.Errorf("capsule %s already runs release %s", name, short(rel.Digest))
	}
	run := &upgradeRun{kind: kind, from: m.release, to: rel.Digest, phase: PhaseStarting, since: time.Now(), done: make(chan struct{})}
	m.upgrade = run
	return m, run, nil
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// runUpgrade starts the new release beside the old one, waits until it is
// ready and healthy as its update: asks, and switches; or stops it and
// keeps the old one. progress gets each step; the returned value is the
// verdict.
func (d *Daemon) runUpgrade(m *managed, run *upgradeRun, progress func(UpgradeProgress)) UpgradeProgress {
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel = cancel
	defer cancel()
	defer close(run.done)
	log := d.o.Log.With().Str(runtime.FieldCapsule, m.name).Str("from", short(run.from)).Str("to", short(run.to)).Str("kind", run.kind).Logger()
	say := func(phase Phase, format string, args ...any) {
		p := UpgradeProgress{Time: time.Now(), Phase: phase, Message: fmt.Sprintf(format, args...)}
		d.mu.Lock()
		run.phase = phase
		d.mu.Unlock()
		d.um.setPhase(m.name, phase)
		log.Info().Str("phase", string(phase)).Msg(p.Message)
		d.publish(Event{Capsule: m.name, Release: run.to, Event: supervisor.Event{Time: p.Time, Type: supervisor.EventType(run.kind), Reason: supervisor.Reason(phase), Message: p.Message}})
		progress(p)
	}
	verdict := func(p UpgradeProgress) UpgradeProgress {
		p.Time, p.Verdict = time.Now(), true
		d.mu.Lock()
		m.upgrade = nil
		d.mu.Unlock()
		d.um.setPhase(m.name, "")
		result := "rolled-back"
		if p.OK {
			result = "done"
		}
		d.um.count(result)
		log.Info().Bool("ok", p.OK).Msg(p.Message)
		d.publish(Event{Capsule: m.name, Release: run.to, Event: supervisor.Event{Time: p.Time, Type: supervisor.EventType(run.kind), Reason: supervisor.Reason(p.Phase), Message: p.Message}})
		return p
	}
	d.mu.Lock()
	oldInst, oldSup := m.inst, m.sup
	d.mu.Unlock()
	rec := &upgradeRecord{Capsule: m.name, Kind: run.kind, From: run.from, To: run.to, Phase: PhaseStarting, Started: time.Now().UTC(), OldInstance: oldInst.ID}
	if err := writeUpgradeRecord(d.o.Root, rec); err != nil {
		return verdict(UpgradeProgress{Phase: PhaseRolledBack, Message: fmt.Sprintf("%s of %s not started: recording it: %v", run.kind, m.name, err)})
	}
	say(PhaseStarting, "starting release %s beside %s", short(run.to), short(run.from))

	t, err := runtime.Resolve(run.to, d.o.Options)
	var cand *runtime.Instance
	if err == nil {
		o := d.o.Options
		o.Shared = m.shared
		cand, err = runtime.Create(ctx, t, o)
	}
	if err != nil {
		_ = removeUpgradeRecord(d.o.Root, m.name)
		return verdict(UpgradeProgress{Phase: PhaseRolledBack, Message: fmt.Sprintf("rolled back: release %s did not start: %v; %s still serves", short(run.to), err, short(run.from))})
	}
	mach := newUpgradeMachine(t.Manifest.Update, time.Now())
	rec.Candidate, rec.Phase = cand.ID, PhaseWaitingReady
	d.mu.Lock()
	run.inst = cand.ID
	d.mu.Unlock()
	candSup, err := cand.Supervise()
	if err == nil {
		err = writeUpgradeRecord(d.o.Root, rec)
	}
	if err != nil {
		_ = cand.Destroy(context.WithoutCancel(ctx))
		_ = removeUpgradeRecord(d.o.Root, m.name)
		return verdict(UpgradeProgress{Phase: PhaseRolledBack, Message: fmt.Sprintf("rolled back: %v; %s still serves", err, short(run.from))})
	}
	m.shared.GateProbes(cand, oldInst)
	defer m.shared.UngateProbes()
	sub := candSup.Events()
	fwd := d.forwardFrom(m.name, run.to, candSup)
	// The supervisor's own context detaches when it ends (for a daemon
	// that stops); the new release outlives this upgrade.
	if err := candSup.Start(context.Background()); err != nil {
		mach.Fail(err.Error())
	}
	mach.Started()
	say(PhaseWaitingReady, "instance %s runs; waiting for every service to be ready (healthy_deadline %s)", cand.ID, t.Manifest.Update.HealthyDeadline)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for phase := mach.phase; !mach.phase.Terminal() && mach.phase != PhaseSwitching; {
		next := mach.Observe(time.Now(), candSup.Status())
		if mach.phase != phase {
			phase = mach.phase
			if phase == PhaseWaitingHealthy {
				rec.Phase = phase
				if err := writeUpgradeRecord(d.o.Root, rec); err != nil {
					log.Error().Err(err).Msg("recording the phase")
				}
				say(phase, "every service is ready; healthy for %s?", t.Manifest.Update.MinHealthyTime)
			}
			continue
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case ev := <-sub.C():
			if ev.Type == supervisor.EventReady {
				progress(UpgradeProgress{Time: ev.Time, Phase: phase, Message: fmt.Sprintf("%s is ready (%s)", ev.Service, ev.Reason)})
			}
		case <-timer.C:
		case <-ctx.Done():
			mach.Fail("the daemon is stopping")
		}
		timer.Stop()
	}
	sub.Close()

	m.shared.UngateProbes() // the old release is never frozen past here
	if mach.phase == PhaseRolledBack {
		say(PhaseRolledBack, "release %s failed: %s; stopping it", short(run.to), mach.reason)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtime.StopDeadline(t.Manifest))
		defer cancel()
		_ = candSup.Stop(sctx)
		candSup.Wait()
		fwd()
		if err := cand.Destroy(sctx); err != nil {
			log.Error().Err(err).Msg("removing the failed release's instance")
		}
		if err := removeUpgradeRecord(d.o.Root, m.name); err != nil {
			log.Error().Err(err).Msg("removing the upgrade record")
		}
		return verdict(UpgradeProgress{Phase: PhaseRolledBack, Message: fmt.Sprintf("rolled back: release %s %s; %s serves, as it did throughout", short(run.to), mach.reason, short(run.from))})
	}

	// The switch. From the record's switching phase on, a new daemon keeps
	// the new release.
	rec.Phase = PhaseSwitching
	if err := writeUpgradeRecord(d.o.Root, rec); err != nil {
		log.Error().Err(err).Msg("recording the switch")
	}
	switchStart := time.Now()
	say(PhaseSwitching, "release %s is healthy; stopping %s", short(run.to), short(run.from))
	d.mu.Lock()
	oldFwd := m.stopForward
	m.inst, m.sup, m.release, m.adopted, m.stopForward = cand, candSup, run.to, false, fwd
	m.since = time.Now()
	d.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtime.StopDeadline(oldInst.Manifest))
	defer cancel()
	err = oldSup.Stop(sctx)
	oldSup.Wait()
	switchTime := time.Since(switchStart)
	// The refs follow (a new daemon re-writes them from the record if this
	// one dies first): they are not on the path of the switch.
	if err := writeRef(d.o.Root, m.name, "previous", run.from); err != nil {
		log.Error().Err(err).Msg("recording the previous release")
	}
	if err := writeRef(d.o.Root, m.name, "current", run.to); err != nil {
		log.Error().Err(err).Msg("recording the current release")
	}
	if oldFwd != nil {
		oldFwd()
	}
	err = errors.Join(err, oldInst.Destroy(sctx))
	if err != nil {
		log.Error().Err(err).Msg("stopping the old release")
	}
	if err := m.shared.TakeSockets(cand); err != nil {
		log.Error().Err(err).Msg("taking the new release's sockets")
	}
	mach.Switched()
	if err := removeUpgradeRecord(d.o.Root, m.name); err != nil {
		log.Error().Err(err).Msg("removing the upgrade record")
	}
	return verdict(UpgradeProgress{Phase: PhaseDone, OK: true, SwitchTime: switchTime,
		Message: fmt.Sprintf("%s serves; %s stopped (previous stable, tori-run rollback %s returns to it)", short(run.to), short(run.from), m.name)})
}

// forwardFrom copies a supervisor's events to the daemon's subscribers,
// marked with the release (if set). The returned func, called once the
// supervisor has ended, delivers what is left and stops the copying.
func (d *Daemon) forwardFrom(capsule, rel string, sup *supervisor.Supervisor) func() {
	sub := sup.Events()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.C() {
			d.publish(Event{Capsule: capsule, Release: rel, Event: ev})
		}
	}()
	return func() {
		sub.Close()
		<-done
	}
}

// recoverUpgrade finishes an upgrade a previous daemon was doing when it
// died, from its record: before the switch the old release is kept and the
// new one's instance removed; from the switch on, the reverse. The
// instances of the capsule left are then adopted as usual.
func (d *Daemon) recoverUpgrade(name string) error {
	rec, err := readUpgradeRecord(d.o.Root, name)
	if err != nil || rec == nil {
		return err
	}
	keep, drop, result := rec.From, rec.To, "rolled-back"
	if rec.Phase == PhaseSwitching || rec.Phase == PhaseDone {
		keep, drop, result = rec.To, rec.From, "done"
		if err := writeRef(d.o.Root, name, "previous", rec.From); err != nil {
			return err
		}
		if err := writeRef(d.o.Root, name, "current", rec.To); err != nil {
			return err
		}
	}
	dirs, _ := filepath.Glob(layout.Layout{Root: d.o.Root}.InstanceGlob(name))
	var errs []error
	for _, dir := range dirs {
		ir, err := runtime.ReadInstanceRecord(dir)
		if err != nil || ir.Capsule != name || ir.Owner != runtime.OwnerDaemon || ir.Release != drop {
			continue
		}
		errs = append(errs, d.stopLeftInstance(dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("finishing the %s of %s to %s: %w", rec.Kind, name, short(rec.To), err)
	}
	if err := removeUpgradeRecord(d.o.Root, name); err != nil {
		return err
	}
	d.um.count("recovered-" + result)
	msg := fmt.Sprintf("the %s to %s was cut at %s by a daemon restart; %s kept", rec.Kind, short(rec.To), rec.Phase, short(keep))
	d.o.Log.Warn().Str(runtime.FieldCapsule, name).Msg(msg)
	d.publish(Event{Capsule: name, Release: keep, Event: supervisor.Event{Time: time.Now(), Type: supervisor.EventType(rec.Kind), Reason: supervisor.Reason(result), Message: msg}})
	return nil
}

// serveUpgrade is POST /v1/upgrade?capsule=NAME&release=REF[&kind=rollback]:
// a refusal is an error answer; once begun, progress lines then the
// verdict, as JSON lines. The upgrade goes on if the client goes away.
func (d *Daemon) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind := KindUpgrade
	if q.Get("kind") == KindRollback {
		kind = KindRollback
	}
	m, run, err := d.beginUpgrade(q.Get("capsule"), q.Get("release"), kind)
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flush(w)
	lines := make(chan UpgradeProgress, 64)
	go func() {
		defer close(lines)
		v := d.runUpgrade(m, run, func(p UpgradeProgress) {
			select {
			case lines <- p:
			default: // a slow client misses progress lines, never the verdict
			}
		})
		lines <- v
	}()
	enc := json.NewEncoder(w)
	gone := r.Context().Done()
	for p := range lines {
		if gone != nil && enc.Encode(p) == nil {
			flush(w)
		}
		select {
		case <-gone:
			gone = nil
		default:
		}
	}
}

// stopLeftInstance stops an instance a dead daemon left, gracefully: it is
// adopted, each service gets its stop signal and stop timeout (requests in
// flight finish), then the instance is removed. An instance that cannot be
// adopted is swept.
func (d *Daemon) stopLeftInstance(dir string) error {
	l := flock.New(layout.InstanceAt(dir).Lock)
	if ok, err := l.TryLock(); err != nil || !ok {
		return nil // alive: not ours
	}
	_ = l.Unlock()
	ctx := context.Background()
	o := d.o.Options
	o.Shared = nil
	inst, adopted, err := runtime.Adopt(ctx, dir, o)
	if err != nil {
		d.o.Log.Warn().Err(err).Str("instance", filepath.Base(dir)).Msg("could not adopt the instance to stop it gracefully; killing it")
		return runtime.SweepInstance(dir, d.o.Options)
	}
	sctx, cancel := context.WithTimeout(ctx, runtime.StopDeadline(inst.Manifest))
	defer cancel()
	done := make(chan struct{}, len(adopted))
	for _, a := range adopted {
		go func() {
			defer func() { done <- struct{}{} }()
			if spec := inst.Manifest.Service(a.Name); spec != nil {
				_ = supervisor.Terminate(sctx, a.Process(), spec.StopSignal.Num, spec.StopTimeout)
			}
			closeAll(a.Stdout, a.Stderr)
		}()
	}
	for range adopted {
		<-done
	}
	return inst.Destroy(sctx)
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}
