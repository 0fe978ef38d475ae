package supervisor

import (
	"sync"
	"sync/atomic"
	"time"
)

// EventType names what happened to a service.
type EventType string

// The event types.
const (
	EventStarting      EventType = "starting"       // Runner.Start is called
	EventStarted       EventType = "started"        // a process runs (Pid)
	EventReady         EventType = "ready"          // it is ready (Reason says how)
	EventExited        EventType = "exited"         // the process ended (Exit, Reason)
	EventOOMKilled     EventType = "oom-killed"     // the process ended by an OOM kill (instead of exited)
	EventRestarting    EventType = "restarting"     // a restart is scheduled after Delay
	EventFailed        EventType = "failed"         // given up (Reason, Message)
	EventUnhealthy     EventType = "unhealthy"      // health probe failed Retries times
	EventHealthy       EventType = "healthy"        // health probe passes (first time or again)
	EventStopping      EventType = "stopping"       // stop signal sent
	EventStopped       EventType = "stopped"        // stopped on request
	EventNotifyRefused EventType = "notify-refused" // an sd_notify message from outside the service's tree
	EventCompleted     EventType = "completed"      // ended and not restarted by policy (state exited)
)

// Event is one thing that happened to a service.
type Event struct {
	Time    time.Time     `json:"time"`
	Service string        `json:"service"`
	Type    EventType     `json:"type"`
	State   State         `json:"state"`
	Reason  Reason        `json:"reason,omitempty"`
	Message string        `json:"message,omitempty"`
	Pid     int           `json:"pid,omitempty"`
	Exit    *Exit         `json:"exit,omitempty"`
	Delay   time.Duration `json:"delay,omitempty"` // restarting: the decided delay
}

// Subscription receives events. Its channel is bounded: when a subscriber
// falls behind, events for it are dropped and counted, and supervision
// never waits for it.
type Subscription struct {
	c       chan Event
	dropped atomic.Uint64
	bus     *bus
	once    sync.Once
}

// C is the event channel, closed by Close.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped counts the events this subscriber missed because its channel was
// full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unsubscribes and closes C.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		s.bus.mu.Unlock()
		close(s.c)
	})
}

type bus struct {
	mu   sync.Mutex // guards subs, and sends on their channels against Close
	subs map[*Subscription]struct{}
}

func (b *bus) subscribe(n int) *Subscription {
	if n <= 0 {
		n = 256
	}
	s := &Subscription{c: make(chan Event, n), bus: b}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = make(map[*Subscription]struct{})
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

func (b *bus) publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.dropped.Add(1)
		}
	}
}
