package cgroups

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// waitExited returns once the processes have exited (sleeping on their
// pidfds), not before: a killed child is a zombie by then.
func TestWaitExitedWaitsForExit(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = cmd.Process.Kill()
	}()
	if !waitExited([]int{pid}, time.Minute) {
		t.Skip("no pidfds on this kernel (Linux < 5.3): waitEmpty polls")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// "PID (comm) STATE ...": not yet reaped, so a zombie once it exited.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) == 0 || f[0] != "Z" {
		t.Fatalf("waitExited returned while pid %d is in state %q, not exited", pid, f[0])
	}
	// A process already gone counts as exited.
	if !waitExited([]int{1 << 30}, time.Second) {
		t.Fatal("a pid that does not exist was not taken as exited")
	}
}
