//go:build linux

package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

func svc(name string, state supervisor.State) supervisor.ServiceStatus {
	return supervisor.ServiceStatus{Name: name, State: state}
}

// TestUpgradeMachine drives the machine through each way an upgrade goes,
// with an injected clock: times are offsets from the new release's start.
func TestUpgradeMachine(t *testing.T) {
	policy := specs.Update{MinHealthyTime: 10 * time.Second, HealthyDeadline: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	running := []supervisor.ServiceStatus{svc("web", supervisor.StateRunning), svc("db", supervisor.StateReady)}
	ready := []supervisor.ServiceStatus{svc("web", supervisor.StateReady), svc("db", supervisor.StateReady)}
	crashed := []supervisor.ServiceStatus{{Name: "web", State: supervisor.StateBackingOff, Restarts: 0,
		LastExit: &supervisor.Exit{Code: 1}, LastReason: supervisor.ReasonCrashed}, svc("db", supervisor.StateReady)}
	type step struct {
		at       time.Duration
		st       []supervisor.ServiceStatus
		phase    Phase
		next     time.Duration // -1: no wake-up
		inReason string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"ready then healthy: switch", []step{
			{1 * time.Second, running, PhaseWaitingReady, time.Minute, ""},
			{3 * time.Second, ready, PhaseWaitingHealthy, 13 * time.Second, ""},
			{12 * time.Second, ready, PhaseWaitingHealthy, 13 * time.Second, ""},
			{13 * time.Second, ready, PhaseSwitching, -1, ""},
		}},
		{"never ready: deadline", []step{
			{1 * time.Second, running, PhaseWaitingReady, time.Minute, ""},
			{time.Minute, running, PhaseRolledBack, -1, "not ready within healthy_deadline 1m0s: web is running"},
		}},
		{"crash while waiting for ready", []step{
			{1 * time.Second, running, PhaseWaitingReady, time.Minute, ""},
			{2 * time.Second, crashed, PhaseRolledBack, -1, "web crashed: exited with status 1 (crashed)"},
		}},
		{"crash after ready", []step{
			{2 * time.Second, ready, PhaseWaitingHealthy, 12 * time.Second, ""},
			{5 * time.Second, crashed, PhaseRolledBack, -1, "web crashed"},
		}},
		{"crash loop", []step{
			{2 * time.Second, []supervisor.ServiceStatus{{Name: "web", State: supervisor.StateFailed, Reason: supervisor.ReasonCrashLoop, Message: "5 restarts within 1m0s"}}, PhaseRolledBack, -1, "web failed (crash-loop): 5 restarts"},
		}},
		{"restarted and ready again still counts", []step{
			{2 * time.Second, []supervisor.ServiceStatus{{Name: "web", State: supervisor.StateReady, Restarts: 1}}, PhaseRolledBack, -1, "web restarted 1 times"},
		}},
		{"unhealthy", []step{
			{2 * time.Second, ready, PhaseWaitingHealthy, 12 * time.Second, ""},
			{8 * time.Second, []supervisor.ServiceStatus{{Name: "web", State: supervisor.StateReady, Health: supervisor.HealthUnhealthy}, svc("db", supervisor.StateReady)}, PhaseRolledBack, -1, "web is unhealthy"},
		}},
		{"not ready any more", []step{
			{2 * time.Second, ready, PhaseWaitingHealthy, 12 * time.Second, ""},
			{8 * time.Second, running, PhaseRolledBack, -1, "no longer ready: web is running"},
		}},
		{"ready too late to be healthy in time", []step{
			{55 * time.Second, ready, PhaseWaitingHealthy, time.Minute, ""},
			{time.Minute, ready, PhaseRolledBack, -1, "not healthy for min_healthy_time 10s within healthy_deadline 1m0s"},
		}},
		{"completed one-shot counts as ready", []step{
			{1 * time.Second, []supervisor.ServiceStatus{{Name: "migrate", State: supervisor.StateExited, LastExit: &supervisor.Exit{}}, svc("web", supervisor.StateReady)}, PhaseWaitingHealthy, 11 * time.Second, ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newUpgradeMachine(policy, t0)
			if m.phase != PhaseStarting {
				t.Fatalf("initial phase %s", m.phase)
			}
			m.Started()
			for i, s := range tc.steps {
				next := m.Observe(at(s.at), s.st)
				if m.phase != s.phase {
					t.Fatalf("step %d: phase %s, want %s (reason %q)", i, m.phase, s.phase, m.reason)
				}
				if s.next < 0 && !next.IsZero() || s.next >= 0 && !next.Equal(at(s.next)) {
					t.Fatalf("step %d: next %v, want +%v", i, next.Sub(t0), s.next)
				}
				if !strings.Contains(m.reason, s.inReason) {
					t.Fatalf("step %d: reason %q, want %q in it", i, m.reason, s.inReason)
				}
			}
		})
	}
	m := newUpgradeMachine(policy, t0)
	m.Fail("the instance could not be made: boom")
	if m.phase != PhaseRolledBack || m.reason == "" {
		t.Fatalf("Fail: %s %q", m.phase, m.reason)
	}
	m = newUpgradeMachine(policy, t0)
	m.Started()
	m.Observe(at(time.Second), ready)
	m.Observe(at(11*time.Second), ready)
	m.Fail("too late")
	m.Switched()
	if m.phase != PhaseDone {
		t.Fatalf("once switching, only done: %s", m.phase)
	}
}
