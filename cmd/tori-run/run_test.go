//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A foreground run whose reader went away must not orphan its capsule: the
// capsule's init, cgroups, mounts and instance folder all go, as on SIGTERM.
// Each case runs the real binary and takes away what it writes to.

// tickingApp is a capsule whose one service prints a line every 50 ms.
const tickingApp = "name: gone\nversion: \"1.0.0\"\nservices:\n  tick:\n    command: /bin/sh -c \"while :; do echo tick; sleep 0.05; done\"\n"

type runEnv struct {
	root, runDir, stateRoot, app string
	stderr                       string // the JSON log
}

func newRunEnv(t *testing.T) *runEnv {
	t.Helper()
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root and no -short: runs a capsule (mounts, namespaces, cgroups)")
	}
	e := &runEnv{root: t.TempDir(), runDir: t.TempDir(), stateRoot: t.TempDir(), app: t.TempDir()}
	e.stderr = filepath.Join(t.TempDir(), "stderr.json")
	if err := os.WriteFile(filepath.Join(e.app, "capsule.yml"), []byte(tickingApp), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *runEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "TORI_ROOT="+e.root, "TORI_RUN_DIR="+e.runDir, "TORI_STATE_ROOT="+e.stateRoot)
	return cmd
}

// start runs `tori-run run` with stdout (and stdin) on out, its log in a
// file; sys is the process's attributes (a session for a terminal).
func (e *runEnv) start(t *testing.T, out *os.File, sys *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(e.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := e.command("run", e.app, "--log-format", "json")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = out, out, logf
	cmd.SysProcAttr = sys
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.sweep(t, cmd) })
	return cmd
}

// sweep removes what a failed case left: the runner if it still runs, then
// what it made (a later run sweeps instances whose runner is gone).
func (e *runEnv) sweep(t *testing.T, cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		_ = cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if d, _ := filepath.Glob(filepath.Join(e.root, "instances", "*")); len(d) == 0 {
		return
	}
	trueApp := t.TempDir()
	_ = os.WriteFile(filepath.Join(trueApp, "capsule.yml"), []byte("name: sweep\nversion: \"1.0.0\"\nservices:\n  t:\n    command: /bin/true\n"), 0o644)
	if out, err := e.command("run", trueApp, "--log-level", "error").CombinedOutput(); err != nil {
		t.Logf("sweeping run: %v: %s", err, out)
	}
}

// waitExit waits for the runner to exit on its own.
func waitExit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("tori-run run ended: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("tori-run run still runs 60 s after its output went away")
	}
}

// started reads the instance and the init's host pid from the log's
// "capsule started" line.
func (e *runEnv) started(t *testing.T) (instance string, pid int) {
	t.Helper()
	b, err := os.ReadFile(e.stderr)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var l struct {
			Message  string `json:"message"`
			Instance string `json:"instance"`
			PID      int    `json:"pid"`
		}
		if json.Unmarshal(line, &l) == nil && l.Message == "capsule started" {
			return l.Instance, l.PID
		}
	}
	t.Fatalf("no \"capsule started\" line in the log:\n%s", b)
	return "", 0
}

// assertGone checks that nothing of the instance is left: its init, a
// cgroup of that name in any hierarchy, a mount under the root, its folder
// and libcontainer's state.
func (e *runEnv) assertGone(t *testing.T, instance string, pid int) {
	t.Helper()
	if pid > 0 {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("the capsule's init (pid %d, %q) still runs", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	for _, d := range cgroupDirsNamed(t, instance) {
		t.Errorf("cgroup left: %s", d)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], e.root) {
			t.Errorf("mount left: %s", f[4])
		}
	}
	for _, pat := range []string{filepath.Join(e.root, "instances", "*"), filepath.Join(e.runDir, "containers", "*")} {
		if d, _ := filepath.Glob(pat); len(d) > 0 {
			t.Errorf("left: %v", d)
		}
	}
}

// cgroupDirsNamed finds the instance's cgroup folders: <hierarchy><our
// cgroup>/tori/<instance> for each hierarchy in /proc/self/cgroup (the
// runner's cgroup is ours).
func cgroupDirsNamed(t *testing.T, instance string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrl := strings.TrimPrefix(parts[1], "name=")
		var mnt string
		switch {
		case parts[0] == "0" && ctrl == "":
			mnt = "/sys/fs/cgroup/unified"
			if _, err := os.Stat(mnt); err != nil {
				mnt = "/sys/fs/cgroup"
			}
		default:
			mnt = "/sys/fs/cgroup/" + strings.Split(ctrl, ",")[0]
		}
		d := filepath.Join(mnt, parts[2], "tori", instance)
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
	}
	return left
}

// waitForLine reads r until a line contains want.
func waitForLine(t *testing.T, r io.Reader, want string) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("the output ended before %q", want)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q in the output after 60 s", want)
	}
}

func TestRunStopsWhenStdoutBreaks(t *testing.T) {
	e := newRunEnv(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := e.start(t, w, nil)
	w.Close()
	waitForLine(t, r, "tick")
	instance, pid := e.started(t)
	r.Close() // the reader goes away: the next echoed line meets EPIPE
	waitExit(t, cmd)
	e.assertGone(t, instance, pid)
}

func TestRunStopsOnHangup(t *testing.T) {
	e := newRunEnv(t)
	master, slave := openPTY(t)
	// The runner leads a session whose controlling terminal is the pty,
	// as a shell's job is: closing the master hangs the terminal up.
	cmd := e.start(t, slave, &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0})
	slave.Close()
	waitForLine(t, master, "tick")
	instance, pid := e.started(t)
	master.Close()
	waitExit(t, cmd)
	e.assertGone(t, instance, pid)
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// A run echoes each line its services wrote, once and in order, up to the
// last one written just before they exited.
func TestRunEchoesEveryLine(t *testing.T) {
	e := newRunEnv(t)
	const app = "name: lines\nversion: \"1.0.0\"\nservices:\n  burst:\n    command: /bin/sh -c \"i=1; while [ $i -le 300 ]; do echo line$i; i=$((i+1)); done\"\n"
	if err := os.WriteFile(filepath.Join(e.app, "capsule.yml"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := e.command("run", e.app, "--log-level", "error")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("tori-run run: %v", err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if _, text, ok := strings.Cut(l, "| "); ok {
			got = append(got, text)
		}
	}
	var want []string
	for i := 1; i <= 300; i++ {
		want = append(want, fmt.Sprintf("line%d", i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("echoed %d lines, want line1..line300 once each in order; got first %q, last %q", len(got), first(got), last(got))
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
