//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// CapsuleState is where a capsule stands under the daemon (status shows it).
type CapsuleState string

// The states of a capsule under the daemon. A capsule the daemon has not
// started yet has none ("").
const (
	StateStarting CapsuleState = "starting" // its instance is being made or adopted
	StateRunning  CapsuleState = "running"  // supervised
	StateStopping CapsuleState = "stopping" // its services are being stopped, then its instance removed
	StateStopped  CapsuleState = "stopped"
	StateFailed   CapsuleState = "failed" // it did not start (Error says why)
)

// transitions is every move a capsule's state may make; to refuses any
// other. An upgrade does not move it: the capsule runs throughout, and the
// switch replaces its instance in place.
var transitions = map[CapsuleState][]CapsuleState{
	"":            {StateStarting},
	StateStarting: {StateRunning, StateFailed},
	StateRunning:  {StateStopping, StateFailed}, // failed: its supervisor did not start
	StateStopping: {StateStopped},
	StateStopped:  {StateStarting},
	StateFailed:   {StateStarting},
}

// errStopping refuses a start while the daemon shuts down: stopAll would
// not see the new instance, which would outlive the daemon.
var errStopping = errors.New("the daemon is stopping; no capsule starts now")

// canMove says whether the table lets a capsule go from one state to another.
func canMove(from, to CapsuleState) bool { return slices.Contains(transitions[from], to) }

// to moves m to next, or says why it cannot; d.mu is held.
func (m *managed) to(next CapsuleState) error {
	if !canMove(m.state, next) {
		return fmt.Errorf("capsule %s is %s; it cannot go to %s (allowed: %v)", m.name, orNone(m.state), next, transitions[m.state])
	}
	m.state, m.since = next, time.Now()
	return nil
}

func orNone(s CapsuleState) string {
	if s == "" {
		return "not started"
	}
	return string(s)
}
