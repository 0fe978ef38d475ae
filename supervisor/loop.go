package supervisor

import (
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// The per-service loop: one goroutine per supervised service waits for
// the services it follows, starts a process, watches it (watch.go), asks
// Decide what next and backs off; every state change goes through
// transition.

// transition records a state change of svc, wakes whoever waits for one,
// logs it and publishes ev (when its Type is set) with the new state.
func (s *Supervisor) transition(svc *service, st State, r Reason, msg string, ev Event) {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	svc.state, svc.reason, svc.message, svc.since = st, r, msg, now
	close(s.changed)
	s.changed = make(chan struct{})
	if ev.Type != "" {
		ev.Time, ev.Service, ev.State = now, svc.cfg.Name, st
		if ev.Reason == "" {
			ev.Reason = r
		}
		if ev.Message == "" {
			ev.Message = msg
		}
		// Published under s.mu: subscribers see events in transition order.
		s.bus.publish(ev)
	}
	s.mu.Unlock()
	lvl := zerolog.InfoLevel
	switch st {
	case StateFailed:
		lvl = zerolog.ErrorLevel
	case StateBackingOff:
		lvl = zerolog.WarnLevel
	}
	e := s.opts.Log.WithLevel(lvl).Str("service", svc.cfg.Name).Str("state", string(st)).Str("reason", string(r))
	if ev.Pid != 0 {
		e = e.Int("pid", ev.Pid)
	}
	e.Msg(msg)
}

func (s *Supervisor) publish(svc *service, ev Event) {
	s.mu.Lock()
	ev.Time, ev.Service, ev.State = s.opts.Clock.Now(), svc.cfg.Name, svc.state
	s.bus.publish(ev)
	s.mu.Unlock()
}

// runLoop supervises svc until it is stopped, gives up, or the supervisor's
// context ends.
func (s *Supervisor) runLoop(svc *service, h *loopHandle, a *adoption) {
	defer s.loops.Done()
	defer func() {
		s.mu.Lock()
		if svc.loop == h {
			svc.loop = nil
			// Services waiting for this one see that it will not become ready.
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
		h.cancel()
		close(h.done)
	}()
	var (
		p       Process
		started time.Time
	)
	if a != nil {
		p, started = a.p, a.started
		s.copyOutput(svc, a.stdout, a.stderr)
	}
	backoff := timer{clock: s.opts.Clock}
	defer backoff.stop()
	for {
		var o Outcome
		if p == nil {
			if !s.waitDeps(svc, h) {
				return
			}
			var err error
			p, started, err = s.start(svc, h)
			if err != nil {
				now := s.opts.Clock.Now()
				o = Outcome{Reason: ReasonStartFailed, Message: err.Error(), Started: now, Ended: now}
				if IsPermanent(err) {
					o.Reason = ReasonPermanentError
				}
			}
		}
		if p != nil {
			var detached bool
			o, detached = s.supervise(svc, h, p, started, a)
			a, p = nil, nil
			if detached {
				return
			}
		}
		if h.stopCtx.Err() != nil && o.Reason != ReasonStopRequested && o.Reason != ReasonRestartRequested {
			o.Reason, o.Message = s.stopReason(h), "stopped on request after: "+o.Message
		}
		now := s.opts.Clock.Now()
		s.mu.Lock()
		d, hist := Decide(&svc.cfg, svc.hist, o, now, s.opts.Rand)
		svc.hist = hist
		if d.Restart {
			svc.restarts++
		}
		s.mu.Unlock()
		s.saveState(svc)
		switch {
		case d.Restart:
			s.transition(svc, StateBackingOff, d.Reason, d.Message, Event{Type: EventRestarting, Delay: d.Delay})
		case d.State == StateStopped:
			s.transition(svc, StateStopped, d.Reason, d.Message, Event{Type: EventStopped})
			return
		case d.State == StateFailed:
			s.transition(svc, StateFailed, d.Reason, d.Message, Event{Type: EventFailed})
			return
		default:
			s.transition(svc, d.State, d.Reason, d.Message, Event{Type: EventCompleted})
			return
		}
		if d.Delay > 0 {
			backoff.arm(d.Delay)
			select {
			case <-backoff.C():
				backoff.fired()
			case <-h.stopCtx.Done():
				backoff.stop()
				s.transition(svc, StateStopped, s.stopReason(h), "stopped while backing off", Event{Type: EventStopped})
				return
			case <-s.shutdown.Done():
				backoff.stop()
				return
			}
		}
	}
}

func (s *Supervisor) stopReason(h *loopHandle) Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.stopReason == "" {
		return ReasonStopRequested
	}
	return h.stopReason
}

// waitDeps waits until every service svc follows is ready (or completed
// with status 0). It reports false when svc must not start: a dependency
// cannot become ready (svc then fails), or a stop or shutdown came.
func (s *Supervisor) waitDeps(svc *service, h *loopHandle) bool {
	if len(svc.cfg.After) == 0 {
		return true
	}
	waiting := false
	for {
		s.mu.Lock()
		var pending, failed []string
		for _, name := range svc.cfg.After {
			d := s.svcs[name]
			switch {
			case d.state == StateReady || (d.state == StateExited && d.reason == ReasonExited):
			case d.loop == nil:
				failed = append(failed, fmt.Sprintf("%s is %s (%s)", name, d.state, d.reason))
			default:
				pending = append(pending, name)
			}
		}
		ch := s.changed
		s.mu.Unlock()
		switch {
		case len(failed) > 0:
			s.transition(svc, StateFailed, ReasonDependencyFailed, "not started: "+strings.Join(failed, ", "), Event{Type: EventFailed})
			return false
		case len(pending) == 0:
			return true
		case !waiting:
			waiting = true
			s.transition(svc, StateStarting, ReasonWaiting, "waiting for "+strings.Join(pending, ", "), Event{})
		}
		select {
		case <-ch:
		case <-h.stopCtx.Done():
			s.transition(svc, StateStopped, s.stopReason(h), "stopped while waiting for "+strings.Join(pending, ", "), Event{Type: EventStopped})
			return false
		case <-s.shutdown.Done():
			return false
		}
	}
}
