package supervisor

import (
	"context"
	"fmt"
	"time"
)

// Watching one running process: readiness (probe or sd_notify), health
// checks, and the end of the process, a stop or the supervisor's shutdown.

type probeResult struct {
	err    error
	health bool // a health check (else readiness)
}

// supervise watches one process until it ends, is stopped (Outcome), or the
// supervisor's context ends (detached: the process is left running). It
// runs the readiness and health probes and reads sd_notify messages.
func (s *Supervisor) supervise(svc *service, h *loopHandle, p Process, started time.Time, a *adoption) (o Outcome, detached bool) {
	cfg := &svc.cfg
	s.mu.Lock()
	svc.proc, svc.started, svc.health, svc.notifyStatus = p, started, HealthNone, ""
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		svc.proc = nil
		s.mu.Unlock()
	}()
	startReason := ReasonStarted
	if a != nil {
		startReason = ReasonAdopted
	}
	s.transition(svc, StateRunning, startReason, "", Event{Type: EventStarted, Pid: p.Pid()})
	s.saveState(svc)

	var (
		tm        = timer{clock: s.opts.Clock} // the next probe, or the notify deadline
		ready     bool
		fails     int
		probing   bool
		results   = make(chan probeResult, 1)
		probeStop context.CancelFunc
		notifyC   <-chan notifyMsg
	)
	defer tm.stop()
	if svc.notify != nil {
		notifyC = svc.notify.msgs
	}
	becomeReady := func(r Reason, msg string) {
		ready, fails = true, 0
		tm.stop()
		s.transition(svc, StateReady, r, msg, Event{Type: EventReady, Pid: p.Pid()})
		s.saveState(svc)
		if cfg.Health != nil {
			tm.arm(cfg.Health.Interval)
		}
	}
	runProbe := func(pr *Probe, health bool) {
		ctx, cancel := context.WithCancel(context.Background())
		if pr.Timeout > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), pr.Timeout)
		}
		probing, probeStop = true, cancel
		go func() {
			err := s.opts.Prober.Probe(ctx, cfg.Name, pr)
			cancel()
			results <- probeResult{err: err, health: health}
		}()
	}
	// endProbe cancels a running probe and waits for its goroutine.
	endProbe := func() {
		if probing {
			probeStop()
			<-results
			probing = false
		}
	}
	defer endProbe()

	switch {
	case a != nil && (a.ready || cfg.Ready == nil || cfg.Ready.Kind == ProbeNotify):
		becomeReady(ReasonAdopted, "ready before the hand-over")
	case cfg.Ready == nil:
		becomeReady(ReasonNoReadyProbe, "")
	case cfg.Ready.Kind == ProbeNotify:
		if cfg.Ready.Interval > 0 && cfg.Ready.Retries > 0 {
			tm.arm(cfg.Ready.Interval * time.Duration(cfg.Ready.Retries))
		}
	default:
		runProbe(cfg.Ready, false)
	}

	for {
		select {
		case <-p.Done():
			endProbe()
			_ = p.Kill() // what remains of the tree
			return s.ended(svc, p, started, "", ""), false

		case <-h.stopCtx.Done():
			endProbe()
			why := s.stopReason(h)
			s.stopProcess(svc, h, p, why)
			return s.ended(svc, p, started, why, "stopped on request"), false

		case <-s.shutdown.Done():
			return Outcome{}, true

		case <-tm.C():
			tm.fired()
			switch {
			case !ready && cfg.Ready.Kind == ProbeNotify:
				msg := fmt.Sprintf("no READY=1 within %s", cfg.Ready.Interval*time.Duration(cfg.Ready.Retries))
				s.stopProcess(svc, h, p, ReasonNotReady)
				return s.ended(svc, p, started, ReasonNotReady, msg), false
			case !ready:
				runProbe(cfg.Ready, false)
			default:
				runProbe(cfg.Health, true)
			}

		case r := <-results:
			probing = false
			if !r.health {
				if r.err == nil {
					becomeReady(ReasonReadyProbe, "")
					continue
				}
				fails++
				if cfg.Ready.Retries > 0 && fails >= cfg.Ready.Retries {
					msg := fmt.Sprintf("not ready after %d checks: %v", fails, r.err)
					s.stopProcess(svc, h, p, ReasonNotReady)
					return s.ended(svc, p, started, ReasonNotReady, msg), false
				}
				tm.arm(cfg.Ready.Interval)
				continue
			}
			if stop, msg := s.healthResult(svc, p, &fails, r.err); stop {
				s.stopProcess(svc, h, p, ReasonUnhealthy)
				return s.ended(svc, p, started, ReasonUnhealthy, msg), false
			}
			tm.arm(cfg.Health.Interval)

		case m, ok := <-notifyC:
			if !ok {
				notifyC = nil
				continue
			}
			if !notifyFrom(p, m.pid) {
				s.opts.Log.Warn().Str("service", cfg.Name).Int("sender_pid", m.pid).Msg("sd_notify message from outside the service refused")
				s.publish(svc, Event{Type: EventNotifyRefused, Pid: m.pid,
					Message: fmt.Sprintf("sd_notify message from pid %d, outside the service, refused", m.pid)})
				continue
			}
			if m.hasStatus {
				s.mu.Lock()
				svc.notifyStatus = m.status
				s.mu.Unlock()
			}
			if m.ready && !ready && cfg.Ready != nil && cfg.Ready.Kind == ProbeNotify {
				becomeReady(ReasonNotifyReady, m.status)
			}
		}
	}
}

// healthResult records one health check; it reports whether the service
// must be restarted as unhealthy.
func (s *Supervisor) healthResult(svc *service, p Process, fails *int, err error) (bool, string) {
	cfg := svc.cfg.Health
	s.mu.Lock()
	was := svc.health
	s.mu.Unlock()
	if err == nil {
		*fails = 0
		if was != HealthHealthy {
			s.setHealth(svc, HealthHealthy)
			s.publish(svc, Event{Type: EventHealthy, Pid: p.Pid()})
		}
		return false, ""
	}
	*fails++
	if *fails < max(cfg.Retries, 1) || was == HealthUnhealthy {
		return false, ""
	}
	msg := fmt.Sprintf("%d health checks failed: %v", *fails, err)
	s.setHealth(svc, HealthUnhealthy)
	s.publish(svc, Event{Type: EventUnhealthy, Pid: p.Pid(), Reason: ReasonUnhealthy, Message: msg})
	return cfg.OnFailure != OnFailureIgnore, msg
}

func (s *Supervisor) setHealth(svc *service, hl Health) {
	s.mu.Lock()
	svc.health = hl
	s.mu.Unlock()
}
