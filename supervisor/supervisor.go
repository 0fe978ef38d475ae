package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// Status returns every service's status, in start order, with each live
// process's usage (Process.Stats: cgroup files in every hierarchy).
func (s *Supervisor) Status() []ServiceStatus { return s.status(true) }

// States is Status without the usage (Stats nil): what a loop that waits
// for the services to end needs at each event. Reading every service's
// cgroups at every event made starting 100 services cost the foreground
// run ~6 s of CPU (docs/PERFORMANCE.md).
func (s *Supervisor) States() []ServiceStatus { return s.status(false) }

func (s *Supervisor) status(withStats bool) []ServiceStatus {
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
		if p != nil && withStats {
			if st, err := p.Stats(); err == nil {
				out[i].Stats = &st
			}
		}
	}
	return out
}
