package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// Policy says when a service that ended is started again.
type Policy string

// The restart policies.
const (
	// RestartAlways restarts after any end, a clean exit included.
	RestartAlways Policy = "always"
	// RestartOnFailure restarts after a failure: a non-zero status, a
	// signal, an OOM kill, a failed health or readiness check, a transient
	// start error. A clean exit (status 0) ends the service as exited.
	RestartOnFailure Policy = "on-failure"
	// RestartNever never restarts.
	RestartNever Policy = "never"
)

// Backoff is the restart delay schedule: Initial doubling up to Max, with
// ±10% jitter (never above Max). Initial 0 restarts at once, every time.
// The schedule starts over after a run that lasted ResetAfter or longer;
// ResetAfter 0 never resets it.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
}

// ServiceConfig is what the supervisor needs to know of one service. The
// runtime converts a parsed manifest service into it; how the service is
// started (argv, environment, cgroup) is the Runner's business, keyed by
// Name. Zero values are meaningful (Backoff.Initial 0 is an immediate
// restart), so the caller applies the manifest's defaults.
type ServiceConfig struct {
	Name    string
	Restart Policy
	Backoff Backoff
	// MaxRestarts restarts within RestartWindow mark the service failed
	// with ReasonCrashLoop. 0 (or less) sets no limit.
	MaxRestarts   int
	RestartWindow time.Duration
	// StopSignal is sent first when stopping (SIGTERM when 0); after
	// StopTimeout the whole tree is killed (at once when 0).
	StopSignal  syscall.Signal
	StopTimeout time.Duration
	// After names services that must be ready before this one starts.
	After []string
	// Ready decides when the service is ready (nil: as soon as it runs).
	Ready *Probe
	// Health is checked periodically once the service is ready.
	Health *Probe
}

// ProbeKind is how a probe checks a service.
type ProbeKind string

// The probe kinds.
const (
	ProbeExec   ProbeKind = "exec"   // run Exec; status 0 passes
	ProbeHTTP   ProbeKind = "http"   // GET URL; a 2xx or 3xx answer passes
	ProbeTCP    ProbeKind = "tcp"    // connect to Addr
	ProbeNotify ProbeKind = "notify" // sd_notify READY=1 on NOTIFY_SOCKET (readiness only)
)

// OnFailure is what a failed health check does.
type OnFailure string

// The health failure actions.
const (
	// OnFailureRestart stops the service (stop signal, timeout, kill) and
	// restarts it per its policy, as a failure with ReasonUnhealthy.
	OnFailureRestart OnFailure = "restart"
	// OnFailureIgnore only reports: status health and an unhealthy event.
	OnFailureIgnore OnFailure = "ignore"
)

// Probe is a readiness or health check.
//
// Readiness: the first check runs as soon as the process runs, then every
// Interval until one passes; after Retries failed checks (0: no limit) the
// service is stopped and ends with ReasonNotReady. A notify probe waits
// for READY=1 at most Interval×Retries (no limit when either is 0).
//
// Health: the first check runs Interval after the service became ready;
// Retries consecutive failures (at least 1) make it unhealthy.
type Probe struct {
	Kind     ProbeKind
	Exec     []string
	URL      string // http
	Addr     string // tcp, host:port
	Interval time.Duration
	// Timeout bounds one check (real time, not the injected clock: it
	// bounds I/O, it schedules nothing). 0: no bound but the service's.
	Timeout   time.Duration
	Retries   int
	OnFailure OnFailure // health only; "" means restart
}

func (p *Probe) check(what string) error {
	switch p.Kind {
	case ProbeExec:
		if len(p.Exec) == 0 {
			return fmt.Errorf("%s: exec probe without a command", what)
		}
	case ProbeHTTP:
		if p.URL == "" {
			return fmt.Errorf("%s: http probe without a URL", what)
		}
	case ProbeTCP:
		if p.Addr == "" {
			return fmt.Errorf("%s: tcp probe without an address", what)
		}
	case ProbeNotify:
		if what == "health" {
			return errors.New("health: notify cannot be a health probe")
		}
	default:
		return fmt.Errorf("%s: unknown probe kind %q (expected exec, http, tcp or notify)", what, p.Kind)
	}
	if p.Interval <= 0 && (what == "health" || p.Kind != ProbeNotify) {
		return fmt.Errorf("%s: interval must be positive, got %s", what, p.Interval)
	}
	switch p.OnFailure {
	case "", OnFailureRestart, OnFailureIgnore:
	default:
		return fmt.Errorf("%s: on_failure %q (expected restart or ignore)", what, p.OnFailure)
	}
	return nil
}

func (c *ServiceConfig) check() error {
	switch c.Restart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("restart %q (expected always, on-failure or never)", c.Restart)
	}
	if c.Backoff.Initial < 0 || c.Backoff.Max < c.Backoff.Initial {
		return fmt.Errorf("backoff initial %s, max %s: need 0 ≤ initial ≤ max", c.Backoff.Initial, c.Backoff.Max)
	}
	if c.MaxRestarts > 0 && c.RestartWindow <= 0 {
		return fmt.Errorf("max_restarts %d needs a positive restart_window", c.MaxRestarts)
	}
	if c.Ready != nil {
		if err := c.Ready.check("ready"); err != nil {
			return err
		}
	}
	if c.Health != nil {
		if err := c.Health.check("health"); err != nil {
			return err
		}
	}
	return nil
}

// checkConfigs validates every service, the names after refers to, and
// that after has no cycle. It returns the services in a start order.
func checkConfigs(cfgs []ServiceConfig) ([]string, error) {
	byName := make(map[string]*ServiceConfig, len(cfgs))
	for i := range cfgs {
		c := &cfgs[i]
		if c.Name == "" || strings.ContainsAny(c.Name, "/\x00") || c.Name == "." || c.Name == ".." {
			return nil, fmt.Errorf("service %q: a name must be non-empty, without / or NUL", c.Name)
		}
		if byName[c.Name] != nil {
			return nil, fmt.Errorf("service %q is listed twice", c.Name)
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("service %s: %w", c.Name, err)
		}
		byName[c.Name] = c
	}
	for _, c := range cfgs {
		for _, a := range c.After {
			if byName[a] == nil {
				return nil, fmt.Errorf("service %s: after %q: no such service", c.Name, a)
			}
		}
	}
	// Depth-first topological sort; a grey node met again is a cycle.
	const (
		white = iota
		grey
		black
	)
	color := make(map[string]int, len(cfgs))
	var order, path []string
	var visit func(n string) error
	visit = func(n string) error {
		switch color[n] {
		case black:
			return nil
		case grey:
			i := len(path) - 1
			for path[i] != n {
				i--
			}
			return fmt.Errorf("after: cycle %s -> %s", strings.Join(path[i:], " -> "), n)
		}
		color[n] = grey
		path = append(path, n)
		for _, a := range byName[n].After {
			if err := visit(a); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		color[n] = black
		order = append(order, n)
		return nil
	}
	for _, c := range cfgs {
		if err := visit(c.Name); err != nil {
			return nil, err
		}
	}
	return order, nil
}
