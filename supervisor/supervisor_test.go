package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The test binary doubles as a service: SUPERVISOR_TEST_HELPER selects a
// mode (see helper).
func TestMain(m *testing.M) {
	if mode := os.Getenv("SUPERVISOR_TEST_HELPER"); mode != "" {
		helper(mode)
		return
	}
	os.Exit(m.Run())
}

// helper modes:
//
//	notify       send STATUS= and READY=1 to NOTIFY_SOCKET, then sleep
//	notify-usr1  the same once SIGUSR1 arrives
func helper(mode string) {
	if mode == "notify-usr1" {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR1)
		fmt.Println("waiting for SIGUSR1")
		<-c
	}
	addr := &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if _, err := conn.Write([]byte("STATUS=warmed up\nREADY=1\n")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	time.Sleep(time.Hour)
}

const waitLimit = 20 * time.Second // a hang guard, never a timing assertion

type harness struct {
	t       *testing.T
	sup     *Supervisor
	sub     *Subscription
	events  []Event
	claimed map[int]bool // events waitFor returned
	runner  *ExecRunner
}

func sh(script string) ExecService { return ExecService{Argv: []string{"/bin/sh", "-c", script}} }

func newHarness(t *testing.T, cfgs []ServiceConfig, svcs map[string]ExecService, opts Options) *harness {
	t.Helper()
	opts.Log = zerolog.New(zerolog.NewTestWriter(t))
	if opts.Rand == nil {
		opts.Rand = fixedRand(0.5)
	}
	r := &ExecRunner{Services: svcs}
	sup, err := New(cfgs, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, sup: sup, sub: sup.Events(), runner: r, claimed: map[int]bool{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		_ = sup.Stop(ctx)
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	if err := h.sup.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

// waitFor returns the first event that matches and was not returned
// before, reading more events as needed.
func (h *harness) waitFor(what string, match func(Event) bool) Event {
	h.t.Helper()
	for i, e := range h.events {
		if !h.claimed[i] && match(e) {
			h.claimed[i] = true
			return e
		}
	}
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for {
		select {
		case e := <-h.sub.C():
			h.events = append(h.events, e)
			h.t.Logf("event %s %s %s %s pid=%d delay=%s %s", e.Service, e.Type, e.State, e.Reason, e.Pid, e.Delay, e.Message)
			if match(e) {
				h.claimed[len(h.events)-1] = true
				return e
			}
		case <-limit.C:
			h.t.Fatalf("no %s event within %s; status %+v", what, waitLimit, h.sup.Status())
		}
	}
}

func (h *harness) waitEvent(svc string, typ EventType) Event {
	h.t.Helper()
	return h.waitFor(svc+" "+string(typ), func(e Event) bool { return e.Service == svc && e.Type == typ })
}

// index is the position of the first recorded event that matches, or -1.
func (h *harness) index(svc string, typ EventType) int {
	return slices.IndexFunc(h.events, func(e Event) bool { return e.Service == svc && e.Type == typ })
}

func (h *harness) status(name string) ServiceStatus {
	for _, s := range h.sup.Status() {
		if s.Name == name {
			return s
		}
	}
	h.t.Fatalf("no status of %s", name)
	return ServiceStatus{}
}

func base(name string) ServiceConfig {
	return ServiceConfig{Name: name, Restart: RestartOnFailure, StopTimeout: 5 * time.Second,
		Backoff: Backoff{Initial: 0, Max: 0}}
}

func TestCrashLoopFollowsSchedule(t *testing.T) {
	clock := newFakeClock()
	cfg := base("crash")
	cfg.Backoff = Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, ResetAfter: time.Minute}
	cfg.MaxRestarts, cfg.RestartWindow = 4, time.Minute
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"crash": sh("exit 1")}, Options{Clock: clock})
	h.start()
	var delays []time.Duration
	for range 4 {
		e := h.waitEvent("crash", EventRestarting)
		if e.Reason != ReasonCrashed || !strings.Contains(e.Message, "exited with status 1") {
			t.Fatalf("restarting event %+v", e)
		}
		delays = append(delays, e.Delay)
		if moved := clock.fireNext(t); moved != e.Delay {
			t.Fatalf("the supervisor armed %s for a decided delay of %s", moved, e.Delay)
		}
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	if !slices.Equal(delays, want) {
		t.Fatalf("delays %v, want %v", delays, want)
	}
	e := h.waitEvent("crash", EventFailed)
	if e.Reason != ReasonCrashLoop || !strings.HasPrefix(e.Message, "4 restarts within 1m0s") {
		t.Fatalf("failed event %+v", e)
	}
	st := h.status("crash")
	if st.State != StateFailed || st.Reason != ReasonCrashLoop || st.Restarts != 4 || st.LastExit == nil || st.LastExit.Code != 1 {
		t.Fatalf("status %+v", st)
	}
	if n := strings.Count(eventTypes(h.events, "crash"), "started"); n != 5 {
		t.Fatalf("%d starts, want 5: %s", n, eventTypes(h.events, "crash"))
	}
}

func eventTypes(evs []Event, svc string) string {
	var b []string
	for _, e := range evs {
		if e.Service == svc {
			b = append(b, string(e.Type))
		}
	}
	return strings.Join(b, " ")
}

func TestPermanentStartErrorFailsAtOnce(t *testing.T) {
	cfg := base("gone")
	cfg.Restart = RestartAlways
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"gone": {Argv: []string{"/nonexistent/binary"}}}, Options{})
	h.start()
	e := h.waitEvent("gone", EventFailed)
	if e.Reason != ReasonPermanentError || !strings.Contains(e.Message, "no such file") {
		t.Fatalf("failed event %+v", e)
	}
	if got := eventTypes(h.events, "gone"); got != "starting failed" {
		t.Fatalf("events %q, want one start and failed", got)
	}
}

func TestCleanExitPolicies(t *testing.T) {
	once, always := base("once"), base("always")
	always.Restart, always.MaxRestarts, always.RestartWindow = RestartAlways, 2, time.Hour
	h := newHarness(t, []ServiceConfig{once, always},
		map[string]ExecService{"once": sh("exit 0"), "always": sh("exit 0")}, Options{})
	h.start()
	e := h.waitEvent("once", EventCompleted)
	if e.State != StateExited || e.Reason != ReasonExited {
		t.Fatalf("%+v", e)
	}
	e = h.waitEvent("always", EventFailed)
	if e.Reason != ReasonCrashLoop {
		t.Fatalf("%+v", e)
	}
}

// oomRunner's processes end at once as OOM-killed.
type oomRunner struct{ starts atomic.Int32 }

type doneProcess struct {
	exit Exit
	done chan struct{}
}

func (p *doneProcess) Pid() int                    { return 4242 }
func (p *doneProcess) Signal(syscall.Signal) error { return nil }
func (p *doneProcess) Kill() error                 { return nil }
func (p *doneProcess) Done() <-chan struct{}       { return p.done }
func (p *doneProcess) Exit() Exit                  { return p.exit }
func (p *doneProcess) Stats() (Stats, error)       { return Stats{}, os.ErrProcessDone }
func (r *oomRunner) Start(context.Context, string, Output) (Process, error) {
	r.starts.Add(1)
	p := &doneProcess{exit: Exit{Code: 137, Signal: syscall.SIGKILL, OOMKilled: true}, done: make(chan struct{})}
	close(p.done)
	return p, nil
}

func TestOOMKillIsADistinctReason(t *testing.T) {
	cfg := base("hog")
	cfg.MaxRestarts, cfg.RestartWindow = 1, time.Hour
	sup, err := New([]ServiceConfig{cfg}, &oomRunner{}, Options{Rand: fixedRand(0.5)})
	if err != nil {
		t.Fatal(err)
	}
	sub := sup.Events()
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sup.Stop(context.Background())
	var types []string
	for e := range sub.C() {
		types = append(types, string(e.Type)+":"+string(e.Reason))
		if e.Type == EventFailed {
			break
		}
	}
	want := "starting:starting started:started ready:no-ready-probe oom-killed:oom-killed restarting:oom-killed " +
		"starting:starting started:started ready:no-ready-probe oom-killed:oom-killed failed:crash-loop"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events\n%s\nwant\n%s", got, want)
	}
	if st := sup.Status()[0]; st.LastReason != ReasonOOMKilled || !st.LastExit.OOMKilled {
		t.Fatalf("status %+v", st)
	}
}

func TestReadyByTCPAndHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	tcp, web, never := base("tcp"), base("web"), base("never")
	tcp.Ready = &Probe{Kind: ProbeTCP, Addr: ln.Addr().String(), Interval: 5 * time.Millisecond, Timeout: time.Second, Retries: 100}
	web.Ready = &Probe{Kind: ProbeHTTP, URL: srv.URL, Interval: 5 * time.Millisecond, Timeout: time.Second, Retries: 100}
	never.Restart = RestartNever
	never.Ready = &Probe{Kind: ProbeTCP, Addr: closedAddr, Interval: 5 * time.Millisecond, Timeout: time.Second, Retries: 3}
	h := newHarness(t, []ServiceConfig{tcp, web, never},
		map[string]ExecService{"tcp": sh("exec sleep 100"), "web": sh("exec sleep 100"), "never": sh("exec sleep 100")}, Options{})
	h.start()
	if e := h.waitEvent("tcp", EventReady); e.Reason != ReasonReadyProbe {
		t.Fatalf("%+v", e)
	}
	if e := h.waitEvent("web", EventReady); e.Reason != ReasonReadyProbe || hits.Load() != 3 {
		t.Fatalf("%+v after %d requests", e, hits.Load())
	}
	e := h.waitEvent("never", EventFailed)
	if e.Reason != ReasonNotReady || !strings.Contains(e.Message, "not ready after 3 checks") {
		t.Fatalf("%+v", e)
	}
	if st := h.status("tcp"); st.State != StateReady || st.Pid == 0 {
		t.Fatalf("%+v", st)
	}
}

func TestReadyByExec(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "up")
	cfg := base("svc")
	cfg.Ready = &Probe{Kind: ProbeExec, Exec: []string{"test", "-f", flag}, Interval: 5 * time.Millisecond, Retries: 1000}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"svc": sh("sleep 0.05; touch " + flag + "; exec sleep 100")}, Options{})
	h.start()
	if e := h.waitEvent("svc", EventReady); e.Reason != ReasonReadyProbe {
		t.Fatalf("%+v", e)
	}
	if _, err := os.Stat(flag); err != nil {
		t.Fatalf("ready before the service made %s", flag)
	}
}

func TestReadyByNotify(t *testing.T) {
	cfg := base("n")
	cfg.Ready = &Probe{Kind: ProbeNotify, Interval: time.Second, Retries: 30}
	helperSvc := ExecService{Argv: []string{os.Args[0]}, Env: []string{"SUPERVISOR_TEST_HELPER=notify"}}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"n": helperSvc}, Options{NotifyDir: t.TempDir()})
	h.start()
	e := h.waitEvent("n", EventReady)
	if e.Reason != ReasonNotifyReady || e.Message != "warmed up" {
		t.Fatalf("%+v", e)
	}
	if st := h.status("n"); st.NotifyStatus != "warmed up" || st.State != StateReady {
		t.Fatalf("%+v", st)
	}
}

func TestNotifyFromAForeignPidIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := base("n")
	cfg.Ready = &Probe{Kind: ProbeNotify}
	helperSvc := ExecService{Argv: []string{os.Args[0]}, Env: []string{"SUPERVISOR_TEST_HELPER=notify-usr1"}}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"n": helperSvc}, Options{NotifyDir: dir, LogDir: dir})
	h.start()
	started := h.waitEvent("n", EventStarted)
	// This test process is not in the service's tree.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: filepath.Join(dir, "n.notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("READY=1\nSTATUS=forged")); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	e := h.waitEvent("n", EventNotifyRefused)
	if e.Pid != os.Getpid() {
		t.Fatalf("refused pid %d, want ours %d", e.Pid, os.Getpid())
	}
	if st := h.status("n"); st.State != StateRunning || st.NotifyStatus != "" {
		t.Fatalf("after a forged READY=1: %+v", st)
	}
	// Wait until the helper listens for SIGUSR1 (it says so on stdout).
	waitLog(t, dir, "n", "waiting for SIGUSR1")
	if err := syscall.Kill(started.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if e := h.waitEvent("n", EventReady); e.Reason != ReasonNotifyReady {
		t.Fatalf("%+v", e)
	}
	if i, j := h.index("n", EventNotifyRefused), h.index("n", EventReady); i > j {
		t.Fatal("ready before the refusal")
	}
}

func TestNotifyDeadline(t *testing.T) {
	clock := newFakeClock()
	cfg := base("mute")
	cfg.Restart = RestartNever
	cfg.Ready = &Probe{Kind: ProbeNotify, Interval: time.Second, Retries: 3}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"mute": sh("exec sleep 100")}, Options{Clock: clock, NotifyDir: t.TempDir()})
	h.start()
	h.waitEvent("mute", EventStarted)
	if d := clock.fireNext(t); d != 3*time.Second {
		t.Fatalf("notify deadline armed for %s, want 3s", d)
	}
	e := h.waitEvent("mute", EventFailed)
	if e.Reason != ReasonNotReady || !strings.HasPrefix(e.Message, "no READY=1 within 3s") {
		t.Fatalf("%+v", e)
	}
}

// waitLog follows a service's log until a line contains s.
func waitLog(t *testing.T, dir, svc, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	errFound := fmt.Errorf("found")
	err := ReadLogs(ctx, dir, svc, ReadOptions{Follow: true}, func(l Line) error {
		if strings.Contains(l.Text, s) {
			return errFound
		}
		return nil
	})
	if err != errFound {
		t.Fatalf("waiting for %q in the log of %s: %v", s, svc, err)
	}
}

func TestUnhealthyRestarts(t *testing.T) {
	cfg := base("sick")
	cfg.Restart = RestartAlways
	cfg.Health = &Probe{Kind: ProbeExec, Exec: []string{"false"}, Interval: 5 * time.Millisecond, Retries: 2, OnFailure: OnFailureRestart}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"sick": sh("exec sleep 100")}, Options{})
	h.start()
	first := h.waitEvent("sick", EventStarted)
	e := h.waitEvent("sick", EventUnhealthy)
	if !strings.Contains(e.Message, "2 health checks failed") {
		t.Fatalf("%+v", e)
	}
	if e := h.waitEvent("sick", EventStopping); e.Reason != ReasonUnhealthy {
		t.Fatalf("%+v", e)
	}
	if e := h.waitEvent("sick", EventExited); e.Reason != ReasonUnhealthy || e.Exit.Signal != syscall.SIGTERM {
		t.Fatalf("%+v", e)
	}
	if e := h.waitEvent("sick", EventRestarting); e.Reason != ReasonUnhealthy {
		t.Fatalf("%+v", e)
	}
	if e := h.waitEvent("sick", EventStarted); e.Pid == first.Pid {
		t.Fatal("not a new process")
	}
}

func TestUnhealthyIgnored(t *testing.T) {
	dir := t.TempDir()
	okFile := filepath.Join(dir, "ok")
	cfg := base("meh")
	cfg.Health = &Probe{Kind: ProbeExec, Exec: []string{"test", "-f", okFile}, Interval: 5 * time.Millisecond, Retries: 1, OnFailure: OnFailureIgnore}
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"meh": sh("exec sleep 100")}, Options{})
	h.start()
	h.waitEvent("meh", EventUnhealthy)
	if st := h.status("meh"); st.State != StateReady || st.Health != HealthUnhealthy {
		t.Fatalf("%+v", st)
	}
	if err := os.WriteFile(okFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("meh", EventHealthy)
	if h.index("meh", EventStopping) >= 0 || h.status("meh").Health != HealthHealthy {
		t.Fatalf("events %s", eventTypes(h.events, "meh"))
	}
}

func TestOrderingStartAndStop(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "a-up")
	a, b, c := base("a"), base("b"), base("c")
	a.Ready = &Probe{Kind: ProbeExec, Exec: []string{"test", "-f", flag}, Interval: 5 * time.Millisecond, Retries: 1000}
	b.After = []string{"a"}
	c.After = []string{"b"}
	h := newHarness(t, []ServiceConfig{c, b, a}, map[string]ExecService{
		"a": sh("sleep 0.05; touch " + flag + "; exec sleep 100"),
		"b": sh("exec sleep 100"), "c": sh("exec sleep 100"),
	}, Options{})
	h.start()
	h.waitEvent("c", EventReady)
	if st := h.status("b"); st.State != StateReady {
		t.Fatalf("b %+v", st)
	}
	aReady, bStarting, bReady, cStarting := h.index("a", EventReady), h.index("b", EventStarting), h.index("b", EventReady), h.index("c", EventStarting)
	if aReady >= bStarting || bReady >= cStarting {
		t.Fatalf("start order wrong: %v", h.events)
	}
	if err := h.sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.waitEvent("a", EventStopped)
	cStopped, bStopping, bStopped, aStopping := h.index("c", EventStopped), h.index("b", EventStopping), h.index("b", EventStopped), h.index("a", EventStopping)
	if cStopped >= bStopping || bStopped >= aStopping {
		t.Fatalf("stop order wrong (want c, b, a)")
	}
	for _, st := range h.sup.Status() {
		if st.State != StateStopped || st.Reason != ReasonStopRequested {
			t.Fatalf("%+v", st)
		}
	}
}

func TestDependencyFailed(t *testing.T) {
	a, b := base("a"), base("b")
	b.After = []string{"a"}
	h := newHarness(t, []ServiceConfig{a, b}, map[string]ExecService{"a": {Argv: []string{"/nonexistent"}}, "b": sh("exec sleep 100")}, Options{})
	h.start()
	e := h.waitEvent("b", EventFailed)
	if e.Reason != ReasonDependencyFailed || !strings.Contains(e.Message, "a is failed (permanent-error)") {
		t.Fatalf("%+v", e)
	}
	if h.index("b", EventStarting) >= 0 {
		t.Fatal("b was started")
	}
	if err := h.sup.WaitReady(context.Background()); err == nil || !strings.Contains(err.Error(), "b failed (dependency-failed") {
		t.Fatalf("WaitReady: %v", err)
	}
}

func TestCompletedDependencySatisfies(t *testing.T) {
	migrate, app := base("migrate"), base("app")
	migrate.Restart = RestartNever
	app.After = []string{"migrate"}
	h := newHarness(t, []ServiceConfig{migrate, app}, map[string]ExecService{"migrate": sh("exit 0"), "app": sh("exec sleep 100")}, Options{})
	h.start()
	h.waitEvent("app", EventReady)
	if err := h.sup.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// groupAlive lists the live (not zombie) processes of process group pgid.
func groupAlive(t *testing.T, pgid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if pg, _ := strconv.Atoi(f[2]); pg == pgid && f[0] != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// waitGroupGone waits until process group pgid has no live process: a
// SIGKILLed process dies a moment after kill returns.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	limit := time.Now().Add(waitLimit)
	for {
		left := groupAlive(t, pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(limit) {
			t.Fatalf("process group %d still has %v", pgid, left)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStopLeavesNothing(t *testing.T) {
	// "stubborn": every process ignores SIGTERM; "leaver": the main process
	// obeys it but its children and grandchildren ignore it (Supervisor#1101).
	stubborn, leaver := base("stubborn"), base("leaver")
	stubborn.StopTimeout = 50 * time.Millisecond
	dir := t.TempDir()
	h := newHarness(t, []ServiceConfig{stubborn, leaver}, map[string]ExecService{
		"stubborn": sh(`trap "" TERM; (sh -c 'trap "" TERM; sleep 1000 & wait' &); sleep 1000 & wait`),
		"leaver":   sh(`(trap "" TERM; sh -c 'trap "" TERM; sleep 1000 & wait') & sleep 1000 & echo spawned; wait`),
	}, Options{LogDir: dir})
	h.start()
	s1 := h.waitEvent("stubborn", EventStarted)
	s2 := h.waitEvent("leaver", EventStarted)
	waitLog(t, dir, "leaver", "spawned")
	for len(groupAlive(t, s1.Pid)) < 4 {
		time.Sleep(time.Millisecond)
	}
	t.Logf("stubborn tree %v, leaver tree %v", groupAlive(t, s1.Pid), groupAlive(t, s2.Pid))
	if err := h.sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGroupGone(t, s1.Pid)
	waitGroupGone(t, s2.Pid)
	if e := h.waitEvent("stubborn", EventExited); e.Exit.Signal != syscall.SIGKILL {
		t.Fatalf("%+v", e)
	}
}

func TestStopDeadlineKills(t *testing.T) {
	cfg := base("slow")
	cfg.StopTimeout = time.Hour
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"slow": sh(`trap "" TERM; sleep 1000 & wait`)}, Options{})
	h.start()
	e := h.waitEvent("slow", EventStarted)
	for len(groupAlive(t, e.Pid)) < 2 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.waitEvent("slow", EventReady)
	go func() { h.waitEvent("slow", EventStopping); cancel() }()
	if err := h.sup.StopService(ctx, "slow"); err == nil || !strings.Contains(err.Error(), "its tree was killed") {
		t.Fatalf("StopService: %v", err)
	}
	waitGroupGone(t, e.Pid)
}

func TestStartStopRestartService(t *testing.T) {
	cfg := base("svc")
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{"svc": sh("exec sleep 100")}, Options{})
	h.start()
	p1 := h.waitEvent("svc", EventStarted).Pid
	h.waitEvent("svc", EventReady)
	if err := h.sup.RestartService(context.Background(), "svc"); err != nil {
		t.Fatal(err)
	}
	if e := h.waitEvent("svc", EventStopped); e.Reason != ReasonRestartRequested {
		t.Fatalf("%+v", e)
	}
	p2 := h.waitEvent("svc", EventStarted).Pid
	if p1 == p2 {
		t.Fatal("same pid")
	}
	if err := h.sup.StopService(context.Background(), "svc"); err != nil {
		t.Fatal(err)
	}
	if st := h.status("svc"); st.State != StateStopped || st.Pid != 0 || st.Restarts != 0 {
		t.Fatalf("%+v", st)
	}
	if err := h.sup.StartService("svc"); err != nil {
		t.Fatal(err)
	}
	p3 := h.waitFor("a third start", func(e Event) bool { return e.Type == EventStarted && e.Pid != p2 }).Pid
	h.waitFor("its ready", func(e Event) bool { return e.Type == EventReady && e.Pid == p3 })
	st := h.status("svc")
	if st.Stats == nil || st.Stats.Pids != 1 {
		t.Fatalf("no stats: %+v", st)
	}
	if err := h.sup.StartService("nope"); err == nil {
		t.Fatal("started an unknown service")
	}
}

// With no probe configured, a supervised service that runs arms no timer:
// nothing wakes the supervisor until something happens.
func TestNoWakeupsWhenIdle(t *testing.T) {
	clock := newFakeClock()
	var cfgs []ServiceConfig
	svcs := map[string]ExecService{}
	for i := range 10 {
		c := base(fmt.Sprintf("s%d", i))
		c.Backoff = Backoff{Initial: time.Second, Max: time.Minute, ResetAfter: time.Minute}
		if i > 0 {
			c.After = []string{fmt.Sprintf("s%d", i-1)}
		}
		cfgs = append(cfgs, c)
		svcs[c.Name] = sh("exec sleep 100")
	}
	h := newHarness(t, cfgs, svcs, Options{Clock: clock})
	h.start()
	if err := h.sup.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, a := clock.newTimers(), clock.active(); n != 0 || a != 0 {
		t.Fatalf("%d timers made, %d armed, want none", n, a)
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	cfg := base("crash")
	cfg.MaxRestarts, cfg.RestartWindow = 20, time.Hour
	sup, err := New([]ServiceConfig{cfg}, &ExecRunner{Services: map[string]ExecService{"crash": sh("exit 1")}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow := sup.Subscribe(2) // never read
	fast := sup.Subscribe(1000)
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sup.Stop(context.Background())
	n := 0
	for e := range fast.C() {
		n++
		if e.Type == EventFailed {
			break
		}
	}
	// The slow one holds its first 2 events and missed every other one;
	// supervision went on to the end regardless.
	if len(slow.C()) != 2 || slow.Dropped()+2 != uint64(n) || fast.Dropped() != 0 {
		t.Fatalf("slow dropped %d, fast dropped %d after %d", slow.Dropped(), fast.Dropped(), n)
	}
	slow.Close()
	fast.Close()
}

func TestAdoptCarriesOn(t *testing.T) {
	stateDir, logDir := t.TempDir(), t.TempDir()
	cfg := base("db")
	cfg.Restart = RestartAlways
	cfg.MaxRestarts, cfg.RestartWindow = 5, time.Hour
	svcs := map[string]ExecService{"db": sh("echo hello; exec sleep 100")}

	// The first supervisor starts it, and detaches (its context ends).
	h1 := newHarness(t, []ServiceConfig{cfg}, svcs, Options{StateDir: stateDir, LogDir: logDir})
	ctx, cancel := context.WithCancel(context.Background())
	if err := h1.sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := h1.waitEvent("db", EventReady)
	h1.sup.mu.Lock()
	p := h1.sup.svcs["db"].proc
	h1.sup.mu.Unlock()
	cancel()
	h1.sup.Wait()
	if syscall.Kill(e.Pid, 0) != nil {
		t.Fatal("detaching stopped the process")
	}
	// Pretend a history the first one had.
	var ps persisted
	b, _ := os.ReadFile(filepath.Join(stateDir, "db.state.json"))
	if err := jsonUnmarshal(b, &ps); err != nil || !ps.Ready || ps.Started.IsZero() {
		t.Fatalf("state %s: %v", b, err)
	}
	ps.Restarts = 3
	if err := writeFileAtomic(stateDir, "db.state.json", ps); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, []ServiceConfig{cfg}, svcs, Options{StateDir: stateDir, LogDir: logDir})
	if err := h2.sup.Adopt("db", p, nil, nil); err != nil {
		t.Fatal(err)
	}
	h2.start()
	if e := h2.waitEvent("db", EventReady); e.Reason != ReasonAdopted || e.Pid != p.Pid() {
		t.Fatalf("%+v", e)
	}
	st := h2.status("db")
	if st.Restarts != 3 || !st.Started.Equal(ps.Started) {
		t.Fatalf("%+v", st)
	}
	// It is supervised: its death restarts it.
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	if e := h2.waitEvent("db", EventExited); e.Reason != ReasonCrashed {
		t.Fatalf("%+v", e)
	}
	h2.waitEvent("db", EventStarted)
	if st := h2.status("db"); st.Restarts != 4 {
		t.Fatalf("%+v", st)
	}
	if err := h2.sup.Adopt("db", p, nil, nil); err == nil {
		t.Fatal("adopted after Start")
	}
}

func TestServiceLogsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfg := base("talk")
	cfg.Restart = RestartNever
	h := newHarness(t, []ServiceConfig{cfg}, map[string]ExecService{
		"talk": sh(`echo out; echo err >&2; printf 'bin\001\377ary\n'; printf 'no newline'`),
	}, Options{LogDir: dir})
	h.start()
	h.waitEvent("talk", EventCompleted)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	h.sup.Stop(ctx) // flushes the copiers
	var got []string
	if err := ReadLogs(context.Background(), dir, "talk", ReadOptions{}, func(l Line) error {
		got = append(got, l.Stream+":"+l.Text)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got) // the two streams' relative order is not kept
	want := []string{"stderr:err", "stdout:bin\x01\xffary", "stdout:no newline", "stdout:out"}
	if !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestStatesReadsNoStats: States gives the same states as Status without
// reading any process's usage (a cgroup walk per service in the runtime),
// which Status does for each live process.
func TestStatesReadsNoStats(t *testing.T) {
	h := newHarness(t, []ServiceConfig{base("a")}, map[string]ExecService{"a": sh("sleep 60")}, Options{})
	h.start()
	h.waitEvent("a", EventStarted)
	st, states := h.sup.Status()[0], h.sup.States()[0]
	if st.Stats == nil {
		t.Fatalf("Status of a running service has no stats: %+v", st)
	}
	if states.Stats != nil {
		t.Errorf("States read the usage: %+v", states.Stats)
	}
	if states.State != st.State || states.Pid != st.Pid || states.Name != st.Name {
		t.Errorf("States %+v differs from Status %+v beyond the usage", states, st)
	}
}
