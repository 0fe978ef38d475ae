package supervisor

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when a test says. Tests that
// drive a supervisor wait for it to arm a timer (nextTimer), then fire it.
type fakeClock struct {
	mu      sync.Mutex // guards every field below and of its timers
	now     time.Time
	timers  []*fakeTimer
	created int           // NewTimer calls
	armedCh chan struct{} // closed and replaced whenever a timer is armed
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), armedCh: make(chan struct{})}
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	c.created++
	c.armLocked(t, d)
	return t
}

func (c *fakeClock) armLocked(t *fakeTimer, d time.Duration) {
	t.when, t.active = c.now.Add(d), true
	close(c.armedCh)
	c.armedCh = make(chan struct{})
	if d <= 0 {
		c.fireLocked(t)
	}
}

func (c *fakeClock) fireLocked(t *fakeTimer) {
	t.active = false
	select {
	case t.ch <- c.now:
	default:
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	select {
	case <-t.ch:
	default:
	}
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	select {
	case <-t.ch:
	default:
	}
	t.c.armLocked(t, d)
	return was
}

// active counts the armed timers.
func (c *fakeClock) active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.active {
			n++
		}
	}
	return n
}

func (c *fakeClock) newTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.created
}

// fireNext waits until a timer is armed, moves the time to the earliest
// armed timer's deadline, fires it and returns how far the time moved.
func (c *fakeClock) fireNext(t *testing.T) time.Duration {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, tm := range c.timers {
			if tm.active && (next == nil || tm.when.Before(next.when)) {
				next = tm
			}
		}
		if next != nil {
			d := next.when.Sub(c.now)
			c.now = next.when
			c.fireLocked(next)
			c.mu.Unlock()
			return d
		}
		ch := c.armedCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("fake clock: no timer was armed within 10s")
		}
	}
}

// fixedRand returns v every time: 0.5 is no jitter.
type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }
