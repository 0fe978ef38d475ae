package supervisor

import (
	"context"
	"fmt"
	"time"
)

// Watching one running process: readiness (probe or sd_notify), health
// checks, and the end of the process, a stop or the supervisor's shutdown.

// probes is the probe state of one running process, owned by its watch
// (supervise): the timer of the next check (or of the READY=1 deadline),
// whether the process became ready, the failed checks in a row, and the
// one check in flight, whose result arrives on results.
type probes struct {
	prober  Prober
	service string
	timer   timer
	ready   bool
	fails   int
	cancel  context.CancelFunc // of the check in flight; nil when none runs
	results chan probeResult   // buffered: a check never blocks on it
}

type probeResult struct {
	err    error
	health bool // a health check (else readiness)
}

func newProbes(prober Prober, service string, clock Clock) *probes {
	return &probes{prober: prober, service: service, timer: timer{clock: clock}, results: make(chan probeResult, 1)}
}

// run starts one check of pr (bounded by its timeout) in a goroutine; its
// result arrives on results. One check runs at a time.
func (ps *probes) run(pr *Probe, health bool) {
	ctx, cancel := context.WithCancel(context.Background())
	if pr.Timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), pr.Timeout)
	}
	ps.cancel = cancel
	go func() {
		err := ps.prober.Probe(ctx, ps.service, pr)
		cancel()
		ps.results <- probeResult{err: err, health: health}
	}()
}

// received marks the check in flight as answered: call it after each
// receive from results.
func (ps *probes) received() { ps.cancel = nil }

// stop cancels the check in flight and waits for its goroutine, so that
// none outlives the watch.
func (ps *probes) stop() {
	if ps.cancel != nil {
		ps.cancel()
		<-ps.results
		ps.cancel = nil
	}
}

// readyFailed counts a failed readiness check and reports whether the
// process is out of retries; otherwise the next check is armed.
func (ps *probes) readyFailed(pr *Probe) bool {
	ps.fails++
	if pr.Retries > 0 && ps.fails >= pr.Retries {
		return true
	}
	ps.timer.arm(pr.Interval)
	return false
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

	ps := newProbes(s.opts.Prober, cfg.Name, s.opts.Clock)
	defer ps.timer.stop()
	defer ps.stop()
	var notifyC <-chan notifyMsg
	if svc.notify != nil {
		notifyC = svc.notify.msgs
	}

	switch {
	case a != nil && (a.ready || cfg.Ready == nil || cfg.Ready.Kind == ProbeNotify):
		s.becomeReady(svc, p, ps, ReasonAdopted, "ready before the hand-over")
	case cfg.Ready == nil:
		s.becomeReady(svc, p, ps, ReasonNoReadyProbe, "")
	case cfg.Ready.Kind == ProbeNotify:
		if cfg.Ready.Interval > 0 && cfg.Ready.Retries > 0 {
			ps.timer.arm(cfg.Ready.Interval * time.Duration(cfg.Ready.Retries))
		}
	default:
		ps.run(cfg.Ready, false)
	}

	for {
		select {
		case <-p.Done():
			ps.stop()
			_ = p.Kill() // what remains of the tree
			return s.ended(svc, p, started, "", ""), false

		case <-h.stopCtx.Done():
			ps.stop()
			why := s.stopReason(h)
			s.stopProcess(svc, h, p, why)
			return s.ended(svc, p, started, why, "stopped on request"), false

		case <-s.shutdown.Done():
			return Outcome{}, true

		case <-ps.timer.C():
			ps.timer.fired()
			switch {
			case !ps.ready && cfg.Ready.Kind == ProbeNotify:
				msg := fmt.Sprintf("no READY=1 within %s", cfg.Ready.Interval*time.Duration(cfg.Ready.Retries))
				s.stopProcess(svc, h, p, ReasonNotReady)
				return s.ended(svc, p, started, ReasonNotReady, msg), false
			case !ps.ready:
				ps.run(cfg.Ready, false)
			default:
				ps.run(cfg.Health, true)
			}

		case r := <-ps.results:
			ps.received()
			switch {
			case !r.health && r.err == nil:
				s.becomeReady(svc, p, ps, ReasonReadyProbe, "")
			case !r.health:
				if ps.readyFailed(cfg.Ready) {
					msg := fmt.Sprintf("not ready after %d checks: %v", ps.fails, r.err)
					s.stopProcess(svc, h, p, ReasonNotReady)
					return s.ended(svc, p, started, ReasonNotReady, msg), false
				}
			default:
				if stop, msg := s.healthResult(svc, p, ps, r.err); stop {
					s.stopProcess(svc, h, p, ReasonUnhealthy)
					return s.ended(svc, p, started, ReasonUnhealthy, msg), false
				}
				ps.timer.arm(cfg.Health.Interval)
			}

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
			if m.ready && !ps.ready && cfg.Ready != nil && cfg.Ready.Kind == ProbeNotify {
				s.becomeReady(svc, p, ps, ReasonNotifyReady, m.status)
			}
		}
	}
}

// becomeReady records that p is ready and arms its first health check.
func (s *Supervisor) becomeReady(svc *service, p Process, ps *probes, r Reason, msg string) {
	ps.ready, ps.fails = true, 0
	ps.timer.stop()
	s.transition(svc, StateReady, r, msg, Event{Type: EventReady, Pid: p.Pid()})
	s.saveState(svc)
	if svc.cfg.Health != nil {
		ps.timer.arm(svc.cfg.Health.Interval)
	}
}

// healthResult records one health check; it reports whether the service
// must be restarted as unhealthy.
func (s *Supervisor) healthResult(svc *service, p Process, ps *probes, err error) (bool, string) {
	cfg := svc.cfg.Health
	s.mu.Lock()
	was := svc.health
	s.mu.Unlock()
	if err == nil {
		ps.fails = 0
		if was != HealthHealthy {
			s.setHealth(svc, HealthHealthy)
			s.publish(svc, Event{Type: EventHealthy, Pid: p.Pid()})
		}
		return false, ""
	}
	ps.fails++
	if ps.fails < max(cfg.Retries, 1) || was == HealthUnhealthy {
		return false, ""
	}
	msg := fmt.Sprintf("%d health checks failed: %v", ps.fails, err)
	s.setHealth(svc, HealthUnhealthy)
	s.publish(svc, Event{Type: EventUnhealthy, Pid: p.Pid(), Reason: ReasonUnhealthy, Message: msg})
	return cfg.OnFailure != OnFailureIgnore, msg
}

func (s *Supervisor) setHealth(svc *service, hl Health) {
	s.mu.Lock()
	svc.health = hl
	s.mu.Unlock()
}
