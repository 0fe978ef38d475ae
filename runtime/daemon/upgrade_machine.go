//go:build linux

package daemon

import (
	"fmt"
	"strings"
	"time"

	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// Phase is where an upgrade stands.
type Phase string

// The phases of an upgrade, in order; it ends done or rolled-back.
const (
	PhaseStarting       Phase = "starting"        // the new release's instance is being made
	PhaseWaitingReady   Phase = "waiting-ready"   // its services run; not every one is ready yet
	PhaseWaitingHealthy Phase = "waiting-healthy" // every one is ready; healthy for min_healthy_time?
	PhaseSwitching      Phase = "switching"       // the old release is being stopped
	PhaseDone           Phase = "done"            // the new release serves alone
	PhaseRolledBack     Phase = "rolled-back"     // the new release was stopped; the old one serves
)

// Terminal says whether the upgrade has ended.
func (p Phase) Terminal() bool { return p == PhaseDone || p == PhaseRolledBack }

// upgradeMachine decides an upgrade from what it is told; it runs nothing
// and reads no clock (every call takes now), so it is tested alone.
//
// The new release's services must all become ready, then stay ready and
// healthy for min_healthy_time, everything within healthy_deadline of the
// start. Any exit of one of its processes (a crash, a crash loop, an OOM
// kill, a restart for health or readiness), a failed health check or a
// missed deadline rolls it back: while the old release serves, nothing is
// gained by retrying a release that has already failed once.
type upgradeMachine struct {
	policy  specs.Update
	phase   Phase
	started time.Time // the new release's start (the deadline counts from here)
	readyAt time.Time // every service ready
	reason  string    // why it rolled back
}

func newUpgradeMachine(policy specs.Update, now time.Time) *upgradeMachine {
	return &upgradeMachine{policy: policy, phase: PhaseStarting, started: now}
}

// Started: the new instance runs and its supervisor started.
func (m *upgradeMachine) Started() {
	if m.phase == PhaseStarting {
		m.phase = PhaseWaitingReady
	}
}

// Fail rolls back for a reason found outside the machine (the instance
// could not be made, the supervisor failed to start).
func (m *upgradeMachine) Fail(reason string) {
	if !m.phase.Terminal() && m.phase != PhaseSwitching {
		m.phase, m.reason = PhaseRolledBack, reason
	}
}

// Switched: the old release has stopped.
func (m *upgradeMachine) Switched() {
	if m.phase == PhaseSwitching {
		m.phase = PhaseDone
	}
}

// Observe takes the new release's services as they stand at now, moves the
// phase, and returns when to look again at the latest if nothing changes
// (the zero time when the phase is not waiting).
func (m *upgradeMachine) Observe(now time.Time, st []supervisor.ServiceStatus) time.Time {
	if m.phase != PhaseWaitingReady && m.phase != PhaseWaitingHealthy {
		return time.Time{}
	}
	deadline := m.started.Add(m.policy.HealthyDeadline)
	if reason := brokenService(st); reason != "" {
		m.phase, m.reason = PhaseRolledBack, reason
		return time.Time{}
	}
	notReady := notReadyServices(st)
	switch m.phase {
	case PhaseWaitingReady:
		if len(notReady) == 0 {
			m.phase, m.readyAt = PhaseWaitingHealthy, now
			return m.Observe(now, st)
		}
		if !now.Before(deadline) {
			m.phase = PhaseRolledBack
			m.reason = fmt.Sprintf("not ready within healthy_deadline %s: %s", m.policy.HealthyDeadline, strings.Join(notReady, ", "))
			return time.Time{}
		}
		return deadline
	default: // waiting-healthy
		if len(notReady) > 0 {
			m.phase = PhaseRolledBack
			m.reason = "no longer ready: " + strings.Join(notReady, ", ")
			return time.Time{}
		}
		healthyAt := m.readyAt.Add(m.policy.MinHealthyTime)
		if !now.Before(healthyAt) {
			m.phase = PhaseSwitching
			return time.Time{}
		}
		if !now.Before(deadline) {
			m.phase = PhaseRolledBack
			m.reason = fmt.Sprintf("not healthy for min_healthy_time %s within healthy_deadline %s", m.policy.MinHealthyTime, m.policy.HealthyDeadline)
			return time.Time{}
		}
		if deadline.Before(healthyAt) {
			return deadline
		}
		return healthyAt
	}
}

// brokenService names the first service of the new release that has
// failed in any way: its process ended, it is failed or unhealthy.
func brokenService(st []supervisor.ServiceStatus) string {
	for _, s := range st {
		switch {
		case s.State == supervisor.StateFailed:
			msg := fmt.Sprintf("%s failed (%s)", s.Name, s.Reason)
			if s.Message != "" {
				msg += ": " + s.Message
			}
			return msg
		case s.Health == supervisor.HealthUnhealthy:
			return fmt.Sprintf("%s is unhealthy", s.Name)
		case s.LastExit != nil && !completed(s):
			return fmt.Sprintf("%s crashed: %s (%s)", s.Name, s.LastExit, s.LastReason)
		case s.Restarts > 0:
			return fmt.Sprintf("%s restarted %d times", s.Name, s.Restarts)
		}
	}
	return ""
}

// notReadyServices lists services neither ready nor cleanly completed (a
// one-shot that exited 0 counts as done).
func notReadyServices(st []supervisor.ServiceStatus) []string {
	var out []string
	for _, s := range st {
		if s.State == supervisor.StateReady || completed(s) {
			continue
		}
		out = append(out, fmt.Sprintf("%s is %s", s.Name, s.State))
	}
	if len(st) == 0 {
		out = append(out, "no service reported yet")
	}
	return out
}

// completed says whether a service ended cleanly and is not restarted (a
// one-shot such as a migration).
func completed(s supervisor.ServiceStatus) bool {
	return s.State == supervisor.StateExited && s.LastExit != nil && s.LastExit.Code == 0 && s.LastExit.Signal == 0
}
