package supervisor

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func crashCfg() ServiceConfig {
	return ServiceConfig{Name: "web", Restart: RestartOnFailure,
		Backoff:     Backoff{Initial: 100 * time.Millisecond, Max: time.Second, ResetAfter: time.Minute},
		MaxRestarts: 0, RestartWindow: time.Minute}
}

// crashAt is a run that crashed at end after lasting d.
func crashAt(end time.Time, d time.Duration) Outcome {
	return Outcome{Reason: ReasonCrashed, Message: "exited with status 1", Started: end.Add(-d), Ended: end}
}

func TestDecideBackoffSchedule(t *testing.T) {
	cfg := crashCfg()
	var h History
	now := t0
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		d, nh := Decide(&cfg, h, crashAt(now, 10*time.Millisecond), now, fixedRand(0.5))
		if !d.Restart || d.Delay != w*time.Millisecond || d.State != StateBackingOff || d.Reason != ReasonCrashed {
			t.Fatalf("restart %d: %+v, want a restart after %dms", i, d, w)
		}
		h = nh
		now = now.Add(d.Delay + 10*time.Millisecond)
	}
}

func TestDecideJitter(t *testing.T) {
	cfg := crashCfg()
	for _, tc := range []struct {
		r       float64
		attempt int
		want    time.Duration
	}{
		{0, 0, 90 * time.Millisecond},         // -10%
		{0.25, 1, 190 * time.Millisecond},     // -5%
		{0.75, 2, 420 * time.Millisecond},     // +5%
		{0.999999, 3, 880 * time.Millisecond}, // +10% (rounded)
		{0.999999, 4, time.Second},            // capped at Max, never above
		{0, 30, 900 * time.Millisecond},       // at the cap, jitter still spreads downward
		{0.5, 200, time.Second},               // huge exponents do not overflow
	} {
		d, _ := Decide(&cfg, History{Attempt: tc.attempt}, crashAt(t0, time.Second), t0, fixedRand(tc.r))
		if d.Delay.Round(time.Millisecond) != tc.want {
			t.Errorf("r=%v attempt=%d: delay %s, want %s", tc.r, tc.attempt, d.Delay, tc.want)
		}
	}
	// A seeded source gives the same schedule every time, within ±10%.
	schedule := func() []time.Duration {
		r := rand.New(rand.NewPCG(1, 2))
		var h History
		var out []time.Duration
		for range 6 {
			d, nh := Decide(&cfg, h, crashAt(t0, 0), t0, r)
			h = nh
			out = append(out, d.Delay)
		}
		return out
	}
	a, b := schedule(), schedule()
	for i := range a {
		base := min(100*time.Millisecond<<i, time.Second)
		if a[i] != b[i] || a[i] < base*9/10 || a[i] > min(base*11/10, time.Second) {
			t.Errorf("restart %d: %s then %s, base %s", i, a[i], b[i], base)
		}
	}
}

func TestDecideResetAfterStableRun(t *testing.T) {
	cfg := crashCfg()
	h := History{Attempt: 4}
	d, h := Decide(&cfg, h, crashAt(t0, 59*time.Second), t0, fixedRand(0.5))
	if d.Delay != time.Second {
		t.Fatalf("after a 59s run: %s, want the capped 1s", d.Delay)
	}
	d, h = Decide(&cfg, h, crashAt(t0, 60*time.Second), t0, fixedRand(0.5))
	if d.Delay != 100*time.Millisecond || h.Attempt != 1 {
		t.Fatalf("after a 60s run (reset_after): %s attempt %d, want 100ms and 1", d.Delay, h.Attempt)
	}
	d, _ = Decide(&cfg, h, crashAt(t0, time.Millisecond), t0, fixedRand(0.5))
	if d.Delay != 200*time.Millisecond {
		t.Fatalf("next crash: %s, want 200ms", d.Delay)
	}
	// ResetAfter 0 never resets.
	cfg.Backoff.ResetAfter = 0
	d, _ = Decide(&cfg, History{Attempt: 4}, crashAt(t0, time.Hour), t0, fixedRand(0.5))
	if d.Delay != time.Second {
		t.Fatalf("reset_after 0: %s, want 1s", d.Delay)
	}
}

func TestDecideCrashLoop(t *testing.T) {
	cfg := crashCfg()
	cfg.MaxRestarts, cfg.RestartWindow = 3, 10*time.Second
	var h History
	now := t0
	for i := range 3 {
		d, nh := Decide(&cfg, h, crashAt(now, time.Second), now, fixedRand(0.5))
		if !d.Restart {
			t.Fatalf("restart %d refused: %+v", i, d)
		}
		h, now = nh, now.Add(time.Second)
	}
	d, h2 := Decide(&cfg, h, crashAt(now, time.Second), now, fixedRand(0.5))
	if d.Restart || d.State != StateFailed || d.Reason != ReasonCrashLoop ||
		!strings.HasPrefix(d.Message, "3 restarts within 10s; last: exited with status 1") {
		t.Fatalf("4th crash: %+v, want failed: crash-loop", d)
	}
	if len(h2.Restarts) != 3 {
		t.Fatalf("history %v", h2.Restarts)
	}
	// The window slides: 10s after the first restart, one more is allowed.
	d, _ = Decide(&cfg, h, crashAt(t0.Add(10*time.Second), time.Second), t0.Add(10*time.Second), fixedRand(0.5))
	if !d.Restart {
		t.Fatalf("after the first restart left the window: %+v", d)
	}
	// MaxRestarts 0: no limit.
	cfg.MaxRestarts = 0
	h = History{Restarts: make([]time.Time, 1000)}
	for i := range h.Restarts {
		h.Restarts[i] = t0
	}
	if d, _ := Decide(&cfg, h, crashAt(t0, 0), t0, fixedRand(0.5)); !d.Restart {
		t.Fatalf("max_restarts 0: %+v", d)
	}
}

func TestDecidePolicies(t *testing.T) {
	exit := func(r Reason) Outcome { return Outcome{Reason: r, Message: string(r), Started: t0, Ended: t0} }
	type want struct {
		restart bool
		state   State
	}
	restart := want{true, StateBackingOff}
	exited := want{false, StateExited}
	failed := want{false, StateFailed}
	stopped := want{false, StateStopped}
	for _, tc := range []struct {
		policy Policy
		end    Reason
		want   want
	}{
		{RestartAlways, ReasonExited, restart},
		{RestartAlways, ReasonCrashed, restart},
		{RestartAlways, ReasonOOMKilled, restart},
		{RestartAlways, ReasonUnhealthy, restart},
		{RestartAlways, ReasonStartFailed, restart},
		{RestartAlways, ReasonPermanentError, failed},
		{RestartAlways, ReasonStopRequested, stopped},
		{RestartOnFailure, ReasonExited, exited},
		{RestartOnFailure, ReasonCrashed, restart},
		{RestartOnFailure, ReasonOOMKilled, restart},
		{RestartOnFailure, ReasonLost, restart},
		{RestartOnFailure, ReasonNotReady, restart},
		{RestartOnFailure, ReasonUnhealthy, restart},
		{RestartOnFailure, ReasonPermanentError, failed},
		{RestartOnFailure, ReasonRestartRequested, stopped},
		{RestartNever, ReasonExited, exited},
		{RestartNever, ReasonCrashed, failed},
		{RestartNever, ReasonOOMKilled, failed},
		{RestartNever, ReasonPermanentError, failed},
		{RestartNever, ReasonStopRequested, stopped},
	} {
		cfg := crashCfg()
		cfg.Restart = tc.policy
		d, _ := Decide(&cfg, History{}, exit(tc.end), t0, fixedRand(0.5))
		if d.Restart != tc.want.restart || d.State != tc.want.state {
			t.Errorf("%s after %s: restart=%v state=%s, want %+v", tc.policy, tc.end, d.Restart, d.State, tc.want)
		}
		if d.Reason != tc.end {
			t.Errorf("%s after %s: reason %s", tc.policy, tc.end, d.Reason)
		}
	}
}

func TestDecideExitClassification(t *testing.T) {
	for _, tc := range []struct {
		exit Exit
		want Reason
		msg  string
	}{
		{Exit{Code: 0}, ReasonExited, "exited with status 0"},
		{Exit{Code: 1}, ReasonCrashed, "exited with status 1"},
		{Exit{Code: 137, Signal: 9}, ReasonCrashed, "killed by SIGKILL"},
		{Exit{Code: 137, Signal: 9, OOMKilled: true}, ReasonOOMKilled, "killed by the kernel at its memory limit (OOM)"},
		{Exit{Code: -1, Err: "init gone"}, ReasonLost, "lost: init gone"},
	} {
		if r := tc.exit.reason(); r != tc.want || tc.exit.String() != tc.msg {
			t.Errorf("%+v: %s %q, want %s %q", tc.exit, r, tc.exit.String(), tc.want, tc.msg)
		}
	}
}

func TestDecideImmediateRestart(t *testing.T) {
	cfg := crashCfg()
	cfg.Backoff = Backoff{Initial: 0, Max: 0}
	var h History
	for i := range 100 {
		d, nh := Decide(&cfg, h, crashAt(t0, 0), t0, fixedRand(0.99))
		if !d.Restart || d.Delay != 0 {
			t.Fatalf("restart %d: %+v, want immediate", i, d)
		}
		h = nh
	}
}

func TestDecideIsPure(t *testing.T) {
	cfg := crashCfg()
	h := History{Restarts: []time.Time{t0.Add(-time.Hour), t0}, Attempt: 2}
	before := append([]time.Time(nil), h.Restarts...)
	Decide(&cfg, h, crashAt(t0, 0), t0, fixedRand(0.5))
	if h.Attempt != 2 || len(h.Restarts) != 2 || !h.Restarts[0].Equal(before[0]) {
		t.Fatalf("Decide changed its input: %+v", h)
	}
}

func TestCheckConfigs(t *testing.T) {
	ok := func(name string, after ...string) ServiceConfig {
		return ServiceConfig{Name: name, Restart: RestartNever, After: after}
	}
	order, err := checkConfigs([]ServiceConfig{ok("web", "db"), ok("db"), ok("worker", "web", "db")})
	if err != nil || strings.Join(order, ",") != "db,web,worker" {
		t.Fatalf("order %v, %v", order, err)
	}
	for _, tc := range []struct {
		cfgs []ServiceConfig
		want string
	}{
		{[]ServiceConfig{ok("a", "b"), ok("b", "c"), ok("c", "b")}, "after: cycle b -> c -> b"},
		{[]ServiceConfig{ok("a", "x")}, `after "x": no such service`},
		{[]ServiceConfig{ok("a"), ok("a")}, "listed twice"},
		{[]ServiceConfig{{Name: "a", Restart: "sometimes"}}, `restart "sometimes"`},
		{[]ServiceConfig{{Name: "a", Restart: RestartNever, Backoff: Backoff{Initial: 2, Max: 1}}}, "0 ≤ initial ≤ max"},
		{[]ServiceConfig{{Name: "a", Restart: RestartNever, Health: &Probe{Kind: ProbeNotify}}}, "notify cannot be a health probe"},
		{[]ServiceConfig{{Name: "a", Restart: RestartNever, Ready: &Probe{Kind: ProbeTCP, Addr: "x:1"}}}, "interval must be positive"},
		{[]ServiceConfig{{Name: "a/b", Restart: RestartNever}}, "without /"},
	} {
		if _, err := checkConfigs(tc.cfgs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfgs, err, tc.want)
		}
	}
}

// The worked example of docs/SUPERVISOR.md.
func TestDecideWorkedExample(t *testing.T) {
	cfg := ServiceConfig{Name: "web", Restart: RestartOnFailure,
		Backoff:     Backoff{Initial: 100 * time.Millisecond, Max: time.Second, ResetAfter: 60 * time.Second},
		MaxRestarts: 5, RestartWindow: 60 * time.Second}
	var h History
	start := t0
	var got []string
	for range 6 {
		end := start.Add(200 * time.Millisecond)
		d, nh := Decide(&cfg, h, crashAt(end, 200*time.Millisecond), end, fixedRand(0.5))
		h = nh
		if !d.Restart {
			got = append(got, string(d.State)+": "+string(d.Reason)+": "+d.Message)
			break
		}
		got = append(got, d.Delay.String())
		start = end.Add(d.Delay)
	}
	want := "100ms 200ms 400ms 800ms 1s failed: crash-loop: 5 restarts within 1m0s; last: exited with status 1"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("%s\nwant %s", s, want)
	}
	if !start.Equal(t0.Add(3500 * time.Millisecond)) {
		t.Fatalf("run 6 started at %s", start.Sub(t0))
	}
}
