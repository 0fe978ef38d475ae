package supervisor

import "time"

// Clock is the supervisor's time source: restart delays, probe intervals
// and stop timeouts run on it, so tests drive them with a fake.
type Clock interface {
	Now() time.Time
	// NewTimer returns a running timer, as time.NewTimer.
	NewTimer(d time.Duration) Timer
}

// Timer is a time.Timer behind an interface.
type Timer interface {
	C() <-chan time.Time
	// Stop and Reset behave as time.Timer's (Go 1.23+: no stale value is
	// received after either returns).
	Stop() bool
	Reset(d time.Duration) bool
}

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer returns a time.Timer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

// timer is a lazily made, reusable timer of one service: armed with arm,
// disarmed with stop, never a time.After in a loop. Its zero value is
// disarmed; C is nil (blocks forever in a select) while disarmed.
type timer struct {
	clock Clock
	t     Timer
	armed bool
}

func (t *timer) arm(d time.Duration) {
	if t.t == nil {
		t.t = t.clock.NewTimer(d)
	} else {
		t.t.Reset(d)
	}
	t.armed = true
}

func (t *timer) stop() {
	if t.t != nil && t.armed {
		t.t.Stop()
	}
	t.armed = false
}

// C is the timer's channel while armed, else nil. The caller marks it
// disarmed after receiving from it (fired).
func (t *timer) C() <-chan time.Time {
	if !t.armed {
		return nil
	}
	return t.t.C()
}

func (t *timer) fired() { t.armed = false }
