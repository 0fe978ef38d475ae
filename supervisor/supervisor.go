package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Options tune a Supervisor. The zero value works: the real clock, a
// randomly seeded jitter, probes on the host, output discarded.
type Options struct {
	Clock Clock // default RealClock{}
	Rand  Rand  // default a *rand.Rand seeded at random
	// Prober runs exec, http and tcp probes (default HostProber{}).
	Prober Prober
	// LogDir holds each service's log (LogPath); "" discards output.
	LogDir     string
	LogOptions LogOptions
	// NotifyDir holds the services' sd_notify sockets, NAME.notify; "" makes
	// a temporary one when a service needs it.
	NotifyDir string
	// StateDir holds NAME.state.json, each service's restart history, so
	// that a supervisor that adopts a running service carries on with it
	// (see Adopt); "" keeps nothing.
	StateDir string
	Log      zerolog.Logger
	// EventBuffer is each subscriber's channel size (default 256).
	EventBuffer int
}

// Supervisor runs a set of services: starts them in dependency order,
// restarts them by policy, probes them, logs their output, stops them in
// reverse order. It owns one goroutine per service while that service is
// supervised, plus one per output stream of a running process.
type Supervisor struct {
	runner  Runner
	opts    Options
	order   []string // a start order: every service after those it follows
	svcs    map[string]*service
	bus     bus
	devnull *os.File // the output of services when there is no LogDir

	loops     sync.WaitGroup // service loops
	copiers   sync.WaitGroup // output copiers
	closeOnce sync.Once      // of close: Stop may be called more than once

	mu sync.Mutex // guards changed, started, closing, shutdown, tmpNotify, and every service's fields marked "s.mu"
	// changed is closed and replaced on every state change: services that
	// wait for others re-check then. Nothing else wakes them.
	changed   chan struct{}
	started   bool
	closing   bool
	shutdown  context.Context
	tmpNotify string
}

// service is one supervised service.
type service struct {
	cfg ServiceConfig
	log *logFile // nil without LogDir
	// notify is its NOTIFY_SOCKET, made before its first start and kept
	// until Stop (owned by its loop while it runs).
	notify *notifySocket

	logErrors atomic.Uint64

	// Fields below: s.mu.
	state        State
	reason       Reason
	message      string
	since        time.Time
	proc         Process
	started      time.Time // of proc
	restarts     int
	hist         History
	lastExit     *Exit
	lastReason   Reason
	lastExitAt   time.Time
	health       Health
	notifyStatus string
	loop         *loopHandle // nil while no loop runs
	adopt        *adoption
}

// loopHandle controls one run of a service's loop: its "stop this service"
// context, and the "kill now" signal of a stop whose deadline passed.
type loopHandle struct {
	stopCtx    context.Context
	cancel     context.CancelFunc
	stopReason Reason // s.mu
	kill       chan struct{}
	killOnce   sync.Once
	done       chan struct{}
}

func (h *loopHandle) killNow() { h.killOnce.Do(func() { close(h.kill) }) }

type adoption struct {
	p              Process
	stdout, stderr io.ReadCloser
	started        time.Time
	ready          bool
}

// New checks the services (names, policies, probes, after: existing names,
// no cycle) and makes a Supervisor; nothing starts until Start.
func New(cfgs []ServiceConfig, r Runner, opts Options) (*Supervisor, error) {
	cfgs = append([]ServiceConfig(nil), cfgs...)
	order, err := checkConfigs(cfgs)
	if err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if opts.Prober == nil {
		opts.Prober = HostProber{}
	}
	s := &Supervisor{runner: r, opts: opts, order: order, svcs: make(map[string]*service, len(cfgs)),
		changed: make(chan struct{})}
	now := opts.Clock.Now()
	for _, c := range cfgs {
		s.svcs[c.Name] = &service{cfg: c, state: StateStopped, reason: ReasonNotStarted, since: now}
	}
	if opts.LogDir != "" {
		for _, c := range cfgs {
			l, err := openLogFile(opts.LogDir, c.Name, opts.LogOptions)
			if err != nil {
				s.closeLogs()
				return nil, fmt.Errorf("service %s: %w", c.Name, err)
			}
			s.svcs[c.Name].log = l
		}
	} else if s.devnull, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		return nil, err
	}
	return s, nil
}

// Adopt hands an already running process of the named service to the
// supervisor, before Start: a new daemon takes over what an old one
// started (the runtime finds it by pidfd and cgroup, never by a stored
// pid). stdout and stderr, when not nil, are the read ends of its output,
// copied into its log. Its history (restarts, backoff, when it started,
// whether it was ready) comes from Options.StateDir when a previous
// supervisor left it there; otherwise it starts afresh, started now.
func (s *Supervisor) Adopt(name string, p Process, stdout, stderr io.ReadCloser) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.svcs[name]
	switch {
	case svc == nil:
		return fmt.Errorf("adopt: no service %q", name)
	case s.started:
		return errors.New("adopt: the supervisor has started; adopt before Start")
	case svc.adopt != nil:
		return fmt.Errorf("adopt: service %s is already adopted", name)
	}
	a := &adoption{p: p, stdout: stdout, stderr: stderr, started: s.opts.Clock.Now()}
	if ps, err := s.loadState(name); err == nil {
		svc.hist, svc.restarts = ps.History, ps.Restarts
		svc.lastExit, svc.lastReason, svc.lastExitAt = ps.LastExit, ps.LastReason, ps.LastExitAt
		if !ps.Started.IsZero() {
			a.started = ps.Started
		}
		a.ready = ps.Ready
	} else if !errors.Is(err, os.ErrNotExist) {
		s.opts.Log.Warn().Err(err).Str("service", name).Msg("adopting without the previous history")
	}
	svc.adopt = a
	return nil
}

// Start starts supervising: every service starts once those it follows are
// ready; adopted ones carry on. It does not wait (see WaitReady). ctx is
// the supervisor's life: when it ends, supervision stops and LEAVES the
// processes running, for a new supervisor to adopt (Stop stops them).
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("supervisor: Start called twice")
	}
	s.started, s.shutdown = true, ctx
	for _, name := range s.order {
		s.launchLocked(s.svcs[name])
	}
	return nil
}

// launchLocked starts a loop for svc. Call with s.mu held.
func (s *Supervisor) launchLocked(svc *service) {
	ctx, cancel := context.WithCancel(context.Background())
	h := &loopHandle{stopCtx: ctx, cancel: cancel, kill: make(chan struct{}), done: make(chan struct{})}
	svc.loop = h
	a := svc.adopt
	svc.adopt = nil
	s.loops.Add(1)
	go s.runLoop(svc, h, a)
}

// WaitReady waits until every service is ready or has completed (exited
// with status 0), and returns an error naming the services that failed or
// stopped instead.
func (s *Supervisor) WaitReady(ctx context.Context) error {
	for {
		s.mu.Lock()
		pending := false
		var bad []string
		for _, name := range s.order {
			svc := s.svcs[name]
			switch {
			case svc.state == StateReady || (svc.state == StateExited && svc.reason == ReasonExited):
			case svc.state.Terminal() && (svc.reason != ReasonNotStarted || svc.loop == nil):
				bad = append(bad, fmt.Sprintf("%s %s (%s: %s)", name, svc.state, svc.reason, svc.message))
			default:
				pending = true
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(bad) > 0 {
			return fmt.Errorf("services not ready: %s", strings.Join(bad, "; "))
		}
		if !pending {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop stops every service, in reverse dependency order (a service stops
// before those it follows), and ends supervision. Each gets its stop
// signal and stop timeout; when ctx ends first, what still runs is killed
// at once and Stop returns ctx's error. Logs are flushed and closed.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	dependents := make(map[string][]*loopHandle)
	for _, svc := range s.svcs {
		for _, a := range svc.cfg.After {
			if svc.loop != nil {
				dependents[a] = append(dependents[a], svc.loop)
			}
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(s.order))
	for i, name := range s.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, h := range dependents[name] {
				select {
				case <-h.done:
				case <-ctx.Done():
				}
			}
			errs[i] = s.stopService(ctx, name, ReasonStopRequested)
		}()
	}
	wg.Wait()
	s.loops.Wait()
	s.closeOnce.Do(func() { s.close(ctx) })
	return errors.Join(errs...)
}

// Wait waits until every service loop has ended: after Stop, or after the
// context given to Start ended (the processes then still run).
func (s *Supervisor) Wait() { s.loops.Wait() }

func (s *Supervisor) close(ctx context.Context) {
	for _, svc := range s.svcs {
		if svc.notify != nil {
			svc.notify.close()
		}
	}
	s.mu.Lock()
	if s.tmpNotify != "" {
		_ = os.RemoveAll(s.tmpNotify)
	}
	s.mu.Unlock()
	// The copiers end at EOF, once the whole tree is gone. A process that
	// escaped the kill and holds a pipe must not hold Stop: bounded by ctx.
	copied := make(chan struct{})
	go func() { s.copiers.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-ctx.Done():
	}
	s.closeLogs()
	if s.devnull != nil {
		s.devnull.Close()
	}
}

func (s *Supervisor) closeLogs() {
	for _, svc := range s.svcs {
		if svc.log != nil {
			_ = svc.log.close()
		}
	}
}

// StopService stops one service (stop signal, StopTimeout, then its tree is
// killed; at once when ctx ends first). It stays stopped until
// StartService. Services that follow it are not stopped.
func (s *Supervisor) StopService(ctx context.Context, name string) error {
	return s.stopService(ctx, name, ReasonStopRequested)
}

func (s *Supervisor) stopService(ctx context.Context, name string, why Reason) error {
	s.mu.Lock()
	svc := s.svcs[name]
	if svc == nil {
		s.mu.Unlock()
		return fmt.Errorf("no service %q", name)
	}
	h := svc.loop
	if h == nil {
		s.mu.Unlock()
		return nil
	}
	if h.stopReason == "" {
		h.stopReason = why
	}
	s.mu.Unlock()
	h.cancel()
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		h.killNow()
		<-h.done
		return fmt.Errorf("stopping %s: %w; its tree was killed", name, ctx.Err())
	}
}

// StartService starts a service that is stopped, exited or failed, with a
// fresh restart history (a person asked). A service already supervised is
// left alone.
func (s *Supervisor) StartService(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.svcs[name]
	switch {
	case svc == nil:
		return fmt.Errorf("no service %q", name)
	case !s.started:
		return errors.New("the supervisor has not started")
	case s.closing:
		return errors.New("the supervisor is stopping")
	case s.shutdown.Err() != nil:
		return errors.New("the supervisor has ended")
	case svc.loop != nil:
		return nil
	}
	svc.hist = History{}
	s.launchLocked(svc)
	return nil
}

// RestartService stops a service (as StopService) and starts it again at
// once, with a fresh restart history.
func (s *Supervisor) RestartService(ctx context.Context, name string) error {
	if err := s.stopService(ctx, name, ReasonRestartRequested); err != nil {
		return err
	}
	return s.StartService(name)
}

// Events subscribes to the events of every service from now on, with a
// channel of Options.EventBuffer events.
func (s *Supervisor) Events() *Subscription { return s.bus.subscribe(s.opts.EventBuffer) }

// Subscribe is Events with a channel of buffer events (default 256 when
// buffer ≤ 0).
func (s *Supervisor) Subscribe(buffer int) *Subscription { return s.bus.subscribe(buffer) }

// ServiceStatus is one service's state for people and for the control API.
type ServiceStatus struct {
	Name    string    `json:"name"`
	State   State     `json:"state"`
	Reason  Reason    `json:"reason"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"` // of the last transition
	Pid     int       `json:"pid,omitempty"`
	// Started is when the current process started; Uptime is since then.
	Started  time.Time     `json:"started,omitzero"`
	Uptime   time.Duration `json:"uptime,omitempty"`
	Restarts int           `json:"restarts"`
	// LastExit is how the previous process ended, LastReason why.
	LastExit     *Exit     `json:"last_exit,omitempty"`
	LastReason   Reason    `json:"last_reason,omitempty"`
	LastExitAt   time.Time `json:"last_exit_at,omitzero"`
	Health       Health    `json:"health,omitempty"`
	NotifyStatus string    `json:"notify_status,omitempty"` // the last STATUS= it sent
	Stats        *Stats    `json:"stats,omitempty"`
	// LogErrors counts log records that could not be written.
	LogErrors uint64 `json:"log_errors,omitempty"`
}

// Status returns every service's status, in start order.
func (s *Supervisor) Status() []ServiceStatus {
	now := s.opts.Clock.Now()
	s.mu.Lock()
	out := make([]ServiceStatus, 0, len(s.order))
	procs := make([]Process, 0, len(s.order))
	for _, name := range s.order {
		svc := s.svcs[name]
		st := ServiceStatus{Name: name, State: svc.state, Reason: svc.reason, Message: svc.message, Since: svc.since,
			Restarts: svc.restarts, LastExit: svc.lastExit, LastReason: svc.lastReason, LastExitAt: svc.lastExitAt,
			Health: svc.health, NotifyStatus: svc.notifyStatus, LogErrors: svc.logErrors.Load()}
		if svc.proc != nil {
			st.Pid, st.Started, st.Uptime = svc.proc.Pid(), svc.started, now.Sub(svc.started)
		}
		out = append(out, st)
		procs = append(procs, svc.proc)
	}
	s.mu.Unlock()
	for i, p := range procs {
		if p != nil {
			if st, err := p.Stats(); err == nil {
				out[i].Stats = &st
			}
		}
	}
	return out
}

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

// start starts one process of svc, with its output piped into its log.
func (s *Supervisor) start(svc *service, h *loopHandle) (Process, time.Time, error) {
	s.transition(svc, StateStarting, ReasonStarting, "", Event{Type: EventStarting})
	var out Output
	if svc.cfg.Ready != nil && svc.cfg.Ready.Kind == ProbeNotify {
		if err := s.ensureNotify(svc); err != nil {
			return nil, time.Time{}, err
		}
		out.NotifySocket = svc.notify.path
	}
	var rOut, rErr *os.File
	if svc.log != nil {
		var err error
		if rOut, out.Stdout, err = os.Pipe(); err != nil {
			return nil, time.Time{}, fmt.Errorf("stdout pipe: %w", err)
		}
		if rErr, out.Stderr, err = os.Pipe(); err != nil {
			rOut.Close()
			out.Stdout.Close()
			return nil, time.Time{}, fmt.Errorf("stderr pipe: %w", err)
		}
	} else {
		out.Stdout, out.Stderr = s.devnull, s.devnull
	}
	p, err := s.runner.Start(h.stopCtx, svc.cfg.Name, out)
	if svc.log != nil {
		out.Stdout.Close()
		out.Stderr.Close()
	}
	if err != nil {
		if rOut != nil {
			rOut.Close()
			rErr.Close()
		}
		return nil, time.Time{}, err
	}
	if rOut != nil {
		s.copyOutput(svc, rOut, rErr)
	}
	return p, s.opts.Clock.Now(), nil
}

func (s *Supervisor) ensureNotify(svc *service) error {
	if svc.notify != nil {
		return nil
	}
	s.mu.Lock()
	dir := s.opts.NotifyDir
	if dir == "" {
		if s.tmpNotify == "" {
			d, err := os.MkdirTemp("", "tori-notify-")
			if err != nil {
				s.mu.Unlock()
				return fmt.Errorf("notify socket dir: %w", err)
			}
			s.tmpNotify = d
		}
		dir = s.tmpNotify
	}
	s.mu.Unlock()
	n, err := listenNotify(filepath.Join(dir, svc.cfg.Name+".notify"))
	if err != nil {
		return err
	}
	svc.notify = n
	return nil
}

// copyOutput copies a process's streams into svc's log until EOF.
func (s *Supervisor) copyOutput(svc *service, stdout, stderr io.ReadCloser) {
	maxLine := svc.logMaxLine()
	for _, st := range []struct {
		name string
		r    io.ReadCloser
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if st.r == nil {
			continue
		}
		s.copiers.Add(1)
		go func() {
			defer s.copiers.Done()
			defer st.r.Close()
			if svc.log == nil {
				_, _ = io.Copy(io.Discard, st.r)
				return
			}
			copyLines(st.r, maxLine, time.Now, func(t time.Time, partial bool, text []byte) {
				if err := svc.log.write(t, st.name, partial, text); err != nil {
					svc.logErrors.Add(1)
				}
			})
		}()
	}
}

func (svc *service) logMaxLine() int {
	if svc.log == nil {
		return DefaultLogMaxLine
	}
	return svc.log.opts.MaxLine
}

// notifyFrom reports whether an sd_notify sender belongs to p's tree.
func notifyFrom(p Process, pid int) bool {
	if pid <= 0 {
		return false
	}
	if b, ok := p.(interface{ BelongsTo(pid int) bool }); ok {
		return b.BelongsTo(pid)
	}
	return pid == p.Pid()
}

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

// stopProcess stops p: its stop signal, then after StopTimeout (or at once
// when the stop's deadline passed) a kill of the whole tree; after the
// main process ended, a kill of what remains (children that ignored the
// signal, Supervisor#1101).
func (s *Supervisor) stopProcess(svc *service, h *loopHandle, p Process, why Reason) {
	sig := svc.cfg.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	s.transition(svc, StateStopping, why, fmt.Sprintf("sent %s", sigName(sig)), Event{Type: EventStopping, Pid: p.Pid()})
	if err := p.Signal(sig); err != nil {
		s.opts.Log.Warn().Err(err).Str("service", svc.cfg.Name).Msg("stop signal")
	}
	if svc.cfg.StopTimeout > 0 {
		t := timer{clock: s.opts.Clock}
		t.arm(svc.cfg.StopTimeout)
		select {
		case <-p.Done():
		case <-t.C():
			t.fired()
		case <-h.kill:
		}
		t.stop()
	}
	if err := p.Kill(); err != nil {
		s.opts.Log.Error().Err(err).Str("service", svc.cfg.Name).Msg("killing the service's tree")
	}
	<-p.Done()
	_ = p.Kill()
}

// ended records how p ended. why overrides the exit's own reason (a stop,
// a failed probe); msg then says it.
func (s *Supervisor) ended(svc *service, p Process, started time.Time, why Reason, msg string) Outcome {
	ex := p.Exit()
	now := s.opts.Clock.Now()
	r := ex.reason()
	if ex.OOMKilled || why == "" {
		why, msg = r, ex.String() // an OOM kill is reported as such even during a stop
	} else {
		msg += "; " + ex.String()
	}
	s.mu.Lock()
	svc.lastExit, svc.lastReason, svc.lastExitAt = &ex, why, now
	s.mu.Unlock()
	typ := EventExited
	if ex.OOMKilled {
		typ = EventOOMKilled
	}
	s.publish(svc, Event{Type: typ, Pid: p.Pid(), Reason: why, Message: msg, Exit: &ex})
	return Outcome{Reason: why, Message: msg, Started: started, Ended: now}
}

func sigName(sig syscall.Signal) string {
	if n := unixSignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}
