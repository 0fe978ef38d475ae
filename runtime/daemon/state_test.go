//go:build linux

package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/supervisor"
)

// Every state the table names can be reached, every one but "" can be left
// only as the table says, and to names both states when it refuses.
func TestCapsuleStateTransitions(t *testing.T) {
	all := []CapsuleState{"", StateStarting, StateRunning, StateStopping, StateStopped, StateFailed}
	reached := map[CapsuleState]bool{"": true}
	for _, from := range all {
		for _, to := range transitions[from] {
			reached[to] = true
		}
	}
	for _, s := range all {
		if !reached[s] {
			t.Errorf("no transition reaches %q", s)
		}
		if _, ok := transitions[s]; !ok {
			t.Errorf("state %q has no row in the table", s)
		}
	}
	for _, c := range []struct {
		from, to CapsuleState
		ok       bool
	}{
		{"", StateStarting, true}, {"", StateRunning, false},
		{StateStarting, StateRunning, true}, {StateStarting, StateStopping, false},
		{StateRunning, StateStopping, true}, {StateRunning, StateStarting, false},
		{StateStopping, StateStarting, false}, {StateStopping, StateStopped, true},
		{StateStopped, StateStarting, true}, {StateFailed, StateStarting, true}, {StateFailed, StateRunning, false},
	} {
		m := &managed{name: "web", state: c.from}
		err := m.to(c.to)
		if (err == nil) != c.ok {
			t.Errorf("%q -> %q: err = %v, want ok %v", c.from, c.to, err, c.ok)
		}
		if err != nil && (m.state != c.from || !strings.Contains(err.Error(), string(c.to))) {
			t.Errorf("%q -> %q refused: state now %q, error %q (want the state kept and both named)", c.from, c.to, m.state, err)
		}
	}
}

// A start under way when the daemon begins to stop is waited for and then
// stopped; a start asked for after that is refused. Before, stopAll skipped
// a capsule still starting (it stopped only running ones) and its
// processes outlived the daemon.
func TestStopAllStopsAStartUnderWay(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "refs", "web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "refs", "web", "current"), []byte("sha256:abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDaemon(Options{Options: runtime.Options{Root: root, Log: zerolog.Nop()}, StopDeadline: time.Minute})
	entered, gate := make(chan struct{}), make(chan struct{})
	var sup *supervisor.Supervisor
	d.launch = func(m *managed, ref string) error {
		close(entered)
		<-gate
		s, err := supervisor.New([]supervisor.ServiceConfig{{Name: "sleep", Restart: supervisor.RestartNever}},
			&supervisor.ExecRunner{Services: map[string]supervisor.ExecService{"sleep": {Argv: []string{"sleep", "1000"}}}},
			supervisor.Options{Log: zerolog.Nop()})
		if err != nil {
			return err
		}
		sup = s
		d.mu.Lock()
		m.sup = s
		err = m.to(StateRunning)
		d.mu.Unlock()
		if err != nil {
			return err
		}
		d.forward(m)
		if err := s.Start(context.Background()); err != nil {
			return err
		}
		return s.WaitReady(context.Background())
	}
	started := make(chan error, 1)
	go func() { started <- d.start("web") }()
	<-entered

	stopped := make(chan struct{})
	go func() { d.stopAll(context.Background()); close(stopped) }()
	<-d.closed // stopAll has begun: from now on no start begins
	if err := d.start("other"); !errors.Is(err, errStopping) {
		t.Errorf("a start after the stop began: err = %v, want %v", err, errStopping)
	}
	close(gate)
	if err := <-started; err != nil {
		t.Fatalf("the start under way: %v", err)
	}
	<-stopped
	t.Cleanup(func() { _ = sup.Stop(context.Background()) })

	st := d.status("web")
	if len(st) != 1 || st[0].State != StateStopped {
		t.Errorf("after stopAll: %+v, want web stopped", st)
	}
	for _, s := range sup.Status() {
		if s.Pid != 0 {
			t.Errorf("service %s still runs as pid %d after the daemon stopped", s.Name, s.Pid)
		}
	}
}
