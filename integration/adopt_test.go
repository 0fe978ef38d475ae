package integration

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/daemon"
	"github.com/tori-run/tori-run/supervisor"
)

func daemonMain(root, runDir, socket string) int {
	stateRoot := filepath.Join(runDir, "state")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	o := daemon.Options{Options: runtime.Options{Root: root, RunDir: runDir, StateRoot: stateRoot, Log: zerolog.New(os.Stderr).With().Timestamp().Logger()}, Socket: socket, StopDeadline: 20 * time.Second}
	if err := daemon.Run(ctx, o); err != nil {
		println(err.Error())
		return 1
	}
	return 0
}

// TestDaemonReadoptsAfterCrash: a daemon SIGKILLed leaves its capsule
// running; the next daemon carries on supervising the same processes
// (tracked by pidfd and cgroup), and stops them all at SIGTERM.
func TestDaemonReadoptsAfterCrash(t *testing.T) {
	requireRoot(t)
	o := options(t)
	installFolder(t, o, filepath.Dir(capsule(t, "services:\n  a:\n    command: "+wl+"sleep 600\n  b:\n    command: "+wl+"sleep 600\n")))
	if _, _, err := daemon.Enable(o.Root, "itest"); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(o.RunDir, "tori.sock")
	logf, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", b)
		}
	}()
	startDaemon := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "workload", "daemon", o.Root, o.RunDir, socket)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	client := daemon.NewClient(socket)
	// running waits until both services are ready and returns their pids.
	running := func(reason supervisor.Reason) map[string]int {
		t.Helper()
		for i := 0; i < 300; i++ {
			st, err := client.Status(context.Background(), "itest")
			if err == nil && len(st) == 1 && len(st[0].Services) == 2 {
				pids := map[string]int{}
				for _, s := range st[0].Services {
					if s.State == supervisor.StateReady && (reason == "" || s.Reason == reason) {
						pids[s.Name] = s.Pid
					}
				}
				if len(pids) == 2 {
					return pids
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("the capsule did not become ready")
		return nil
	}

	first := startDaemon()
	before := running("")
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	for name, pid := range before {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("%s (pid %d) died with the daemon", name, pid)
		}
	}

	second := startDaemon()
	after := running(supervisor.ReasonAdopted)
	for name := range before {
		if after[name] != before[name] {
			t.Fatalf("%s: pid %d after adoption, %d before: restarted, not adopted", name, after[name], before[name])
		}
	}
	// Supervision carries on: a killed service is restarted.
	_ = syscall.Kill(after["a"], syscall.SIGKILL)
	for i := 0; ; i++ {
		st, err := client.Status(context.Background(), "itest")
		if err == nil && st[0].Services[0].Restarts+st[0].Services[1].Restarts == 1 {
			break
		}
		if i == 300 {
			t.Fatalf("the killed service was not restarted: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	assertNothingLeft(t, o)
	for name, pid := range after {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("%s (pid %d) survived the daemon's stop", name, pid)
		}
	}
}
