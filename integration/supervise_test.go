package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tori-run/tori-run/runtime/daemon"
	"github.com/tori-run/tori-run/supervisor"
)

// supervised runs a capsule under the supervisor until every service has
// ended or the timeout, and returns its final status and every event.
func supervised(t *testing.T, body string, timeout time.Duration) ([]supervisor.ServiceStatus, []supervisor.Event) {
	t.Helper()
	o := options(t)
	inst := start(t, capsule(t, body), o)
	sup, err := inst.Supervise()
	if err != nil {
		t.Fatal(err)
	}
	sub := sup.Events()
	defer sub.Close()
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var events []supervisor.Event
	deadline := time.After(timeout)
	for done := false; !done; {
		select {
		case ev := <-sub.C():
			events = append(events, ev)
			st := sup.Status()
			done = !slices.ContainsFunc(st, func(s supervisor.ServiceStatus) bool {
				return !s.State.Terminal() || s.Reason == supervisor.ReasonNotStarted
			})
		case <-deadline:
			done = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sup.Stop(ctx); err != nil {
		t.Error(err)
	}
	sup.Wait()
	for {
		select {
		case ev := <-sub.C():
			events = append(events, ev)
			continue
		default:
		}
		break
	}
	return sup.Status(), events
}

func delays(events []supervisor.Event) []time.Duration {
	var out []time.Duration
	for _, ev := range events {
		if ev.Type == supervisor.EventRestarting {
			out = append(out, ev.Delay)
		}
	}
	return out
}

// TestCrashLoopBackoffThenFailed: a service that always fails is restarted
// on the promised schedule (doubling from initial, capped at max, jitter
// within 10%), then marked failed as a crash loop.
func TestCrashLoopBackoffThenFailed(t *testing.T) {
	requireRoot(t)
	st, events := supervised(t, "services:\n  loop:\n    command: "+wl+"exit 1\n    restart: always\n"+
		"    backoff: { initial: 20ms, max: 80ms, reset_after: 1m }\n    max_restarts: 4\n    restart_window: 1m\n", 60*time.Second)
	d := delays(events)
	want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond}
	if len(d) != len(want) {
		t.Fatalf("restart delays %v, want %d of them", d, len(want))
	}
	for i := range want {
		if lo, hi := want[i]*9/10, want[i]*11/10; d[i] < lo || d[i] > hi {
			t.Errorf("delay %d = %v, want %v ±10%%", i, d[i], want[i])
		}
	}
	if s := st[0]; s.State != supervisor.StateFailed || s.Reason != supervisor.ReasonCrashLoop {
		t.Errorf("final state %s (%s): %s", s.State, s.Reason, s.Message)
	}
}

// TestOOMKillRestartedByPolicy: a service killed by its memory limit is
// reported as OOM-killed, and on-failure restarts it.
func TestOOMKillRestartedByPolicy(t *testing.T) {
	requireRoot(t)
	_, events := supervised(t, "services:\n  hog:\n    command: "+wl+"alloc 256\n    resources: { MemoryMax: 32M }\n"+
		"    restart: on-failure\n    backoff: { initial: 10ms, max: 10ms }\n    max_restarts: 1\n    restart_window: 1m\n", 60*time.Second)
	var oom, restarted bool
	for _, ev := range events {
		if ev.Type == supervisor.EventOOMKilled && ev.Reason == supervisor.ReasonOOMKilled && ev.Exit != nil && ev.Exit.OOMKilled {
			oom = true
		}
		if oom && ev.Type == supervisor.EventRestarting && ev.Reason == supervisor.ReasonOOMKilled {
			restarted = true
		}
	}
	if !oom || !restarted {
		t.Fatalf("want an oom-killed exit then a restart; events: %+v", events)
	}
}

// TestDependencyOrder: a service starts after those it follows are ready
// (here: by an exec probe inside the capsule), and stops before them.
func TestDependencyOrder(t *testing.T) {
	requireRoot(t)
	o := options(t)
	inst := start(t, capsule(t, "services:\n  web:\n    command: "+wl+"sleep 60\n    after: [db]\n"+
		"  db:\n    command: "+wl+"ready-after 300\n    ready: { exec: \"/.tori/tori-run workload exists /tmp/db-ready\", interval: 50ms, retries: 100 }\n"), o)
	sup, err := inst.Supervise()
	if err != nil {
		t.Fatal(err)
	}
	sub := sup.Events()
	defer sub.Close()
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sup.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sup.Wait()
	var order []string
	for len(sub.C()) > 0 {
		ev := <-sub.C()
		switch ev.Type {
		case supervisor.EventReady, supervisor.EventStarted, supervisor.EventStopped:
			order = append(order, ev.Service+":"+string(ev.Type))
		}
	}
	idx := func(s string) int { return slices.Index(order, s) }
	dbFirst := idx("db:ready") >= 0 && idx("db:ready") < idx("web:started")
	webStopsFirst := idx("web:stopped") >= 0 && idx("web:stopped") < idx("db:stopped")
	if !dbFirst || !webStopsFirst {
		t.Fatalf("order %v: want db ready before web starts, web stopped before db", order)
	}
}

// TestDaemonRefusesNonRoot: the control socket is root's alone: its mode
// (0600) keeps others from connecting, and its peer-credential check
// (SO_PEERCRED) refuses a non-root peer that connects anyway.
func TestDaemonRefusesNonRoot(t *testing.T) {
	requireRoot(t)
	sockDir, err := os.MkdirTemp("", "tori-sock-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	_ = os.Chmod(sockDir, 0o755)
	o := daemon.Options{Options: options(t), Socket: filepath.Join(sockDir, "tori.sock"), StopDeadline: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(o.Socket); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fi, err := os.Stat(o.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	if _, err := daemon.NewClient(o.Socket).Status(context.Background(), ""); err != nil {
		t.Fatalf("root is refused: %v", err)
	}
	// The test binary, as user nobody, tries to connect: both it and the
	// socket's folder are made reachable, so only the socket's mode decides.
	pub, err := os.MkdirTemp("", "tori-daemon-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	self, _ := os.ReadFile(os.Args[0])
	bin := filepath.Join(pub, "t")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) ([]byte, error) {
		cmd := exec.Command(bin, append([]string{"workload"}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd.CombinedOutput()
	}
	if out, err := asNobody("dial", o.Socket); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("nobody connected: %v %s", err, out)
	}
	// With the socket opened to everyone (an operator's mistake), nobody
	// connects, and the daemon still refuses it by its peer credentials.
	if err := os.Chmod(o.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	out, err := asNobody("control-status", o.Socket)
	if err == nil || !strings.Contains(string(out), "HTTP 403") || !strings.Contains(string(out), "root only") {
		t.Fatalf("nobody, connected, was not refused: %v %s", err, out)
	}
}

// controlStatus asks the control socket at path for the status and prints
// the HTTP answer; it exits 0 only on 200.
func controlStatus(path string) int {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	resp, err := hc.Get("http://tori/v1/status")
	if err != nil {
		println(err.Error())
		return 2
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	fmt.Printf("HTTP %d: %s\n", resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		return 3
	}
	return 0
}

func dial(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		println(err.Error())
		if errors.Is(err, syscall.EACCES) {
			return 3
		}
		return 2
	}
	c.Close()
	return 0
}
