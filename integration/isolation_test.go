package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/supervisor"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts, namespaces and cgroups (run make test-root)")
	}
}

// capsule writes an app folder with the given manifest body (name, version
// and layers are added) and returns its capsule.yml.
func capsule(t *testing.T, body string) string {
	t.Helper()
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "hello.txt"), []byte("from the release\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(app, "capsule.yml")
	if err := os.WriteFile(m, []byte("name: itest\nversion: \"1.0.0\"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

func options(t *testing.T) runtime.Options {
	return withTestInit(t, runtime.Options{Root: t.TempDir(), RunDir: t.TempDir(), StateRoot: t.TempDir(), Log: zerolog.New(zerolog.NewTestWriter(t))})
}

// start creates an instance and registers its destruction, with a check
// that nothing of it remains.
func start(t *testing.T, manifest string, o runtime.Options) *runtime.Instance {
	t.Helper()
	tgt, err := runtime.Resolve(manifest, o)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := runtime.Create(context.Background(), tgt, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.Destroy(context.Background()); err != nil {
			t.Errorf("destroy: %v", err)
		}
		assertNothingLeft(t, o)
	})
	return inst
}

func assertNothingLeft(t *testing.T, o runtime.Options) {
	t.Helper()
	if m, _ := overlay.MountsUnder(o.Root); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	if d, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*")); len(d) > 0 {
		t.Errorf("instance folders left: %v", d)
	}
	if d, _ := filepath.Glob(filepath.Join(o.RunDir, "containers", "*")); len(d) > 0 {
		t.Errorf("container state left: %v", d)
	}
}

// service starts name and returns it with a channel of its output lines.
func service(t *testing.T, inst *runtime.Instance, name string) (*runtime.Service, <-chan string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s, err := inst.StartService(context.Background(), name, w, w)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return s, lines
}

func expectLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before a line starting %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line starting %q", prefix)
		}
	}
}

func wait(t *testing.T, s *runtime.Service) supervisor.Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := s.Wait(ctx)
	if err != nil {
		t.Fatalf("%s did not exit: %v", s.Name, err)
	}
	return info
}

const wl = "/.tori/tori-run workload "

// TestMemoryLimitOOMKill: the kernel kills a service past its MemoryMax, and
// the exit is reported as an OOM kill.
func TestMemoryLimitOOMKill(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  hog:\n    command: "+wl+"alloc 256\n    resources: { MemoryMax: 32M }\n"), options(t))
	s, _ := service(t, inst, "hog")
	info := wait(t, s)
	if !info.OOMKilled {
		t.Fatalf("exit = %+v (%s), want an OOM kill", info, info.String())
	}
}

// TestTasksMaxHoldsForkBomb: pids.max stops forks, whatever the service does.
func TestTasksMaxHoldsForkBomb(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  bomb:\n    command: "+wl+"forks 200\n    resources: { TasksMax: 20 }\n"), options(t))
	s, lines := service(t, inst, "bomb")
	l := expectLine(t, lines, "forked ")
	var ok, n int
	if _, err := fmtSscanf(l, "forked %d of %d", &ok, &n); err != nil {
		t.Fatal(err)
	}
	// The service itself and Go's threads count as tasks too.
	if ok >= 20 || !strings.Contains(l, "resource temporarily unavailable") {
		t.Fatalf("TasksMax 20 let %d of %d forks through: %s", ok, n, l)
	}
	procs, _ := s.Group.Procs()
	if len(procs) > 20 {
		t.Errorf("%d processes in the service's cgroup", len(procs))
	}
}

// TestCPUQuotaThrottles: a service spinning under CPUQuota=20% is throttled
// by the kernel (cpu.stat), not by tori-run.
func TestCPUQuotaThrottles(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  spin:\n    command: "+wl+"spin 1500\n    resources: { CPUQuota: 20% }\n"), options(t))
	s, _ := service(t, inst, "spin")
	var st = waitStats(t, s)
	if st.ThrottledPeriods == 0 {
		t.Fatalf("no throttling seen in cpu.stat: %+v", st)
	}
	t.Logf("throttled %d periods, %v; CPU used %v", st.ThrottledPeriods, st.ThrottledTime, st.CPUUsage)
}

// waitStats samples the service's stats until it exits, keeping the last.
func waitStats(t *testing.T, s *runtime.Service) (last runtimeStats) {
	t.Helper()
	for {
		if st, err := s.Group.Stats(); err == nil {
			last = st
		}
		select {
		case <-s.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestServicesIsolated: each service has its own cgroup; the app is an
// overlay whose writes go to a scratch layer that is discarded; system
// folders are read-only; the capsule has its own hostname.
func TestServicesIsolated(t *testing.T) {
	requireRoot(t)
	m := capsule(t, "services:\n  a:\n    command: "+wl+"write\n  b:\n    command: "+wl+"sleep 60\n")
	inst := start(t, m, options(t))
	a, la := service(t, inst, "a")
	b, _ := service(t, inst, "b")
	if l := expectLine(t, la, "app write: "); l != "app write: <nil>" {
		t.Errorf("the app must be writable through the scratch layer: %s", l)
	}
	if l := expectLine(t, la, "usr write: "); !strings.Contains(l, "read-only file system") {
		t.Errorf("/usr must be read-only: %s", l)
	}
	if l := expectLine(t, la, "hostname: "); l != "hostname: itest" {
		t.Errorf("hostname: %s", l)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(m), "written-by-service")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a write in /app reached the release folder: %v", err)
	}
	pa, _ := a.Group.Procs()
	pb, _ := b.Group.Procs()
	if len(pa) != 1 || len(pb) != 1 || pa[0] == pb[0] || a.Group.Path() == b.Group.Path() {
		t.Errorf("per-service cgroups: a %s %v, b %s %v", a.Group.Path(), pa, b.Group.Path(), pb)
	}
}

// TestReadOnlyApp: read_only: true drops the scratch layer.
func TestReadOnlyApp(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "read_only: true\nservices:\n  a:\n    command: "+wl+"write\n"), options(t))
	_, la := service(t, inst, "a")
	if l := expectLine(t, la, "app write: "); !strings.Contains(l, "read-only file system") {
		t.Errorf("read_only app accepted a write: %s", l)
	}
}

// TestStopKillsWholeTree: the supervisor's stop (what run and the daemon
// do) sends the stop signal, then after stop_timeout kills the service's
// whole tree: the main process and the children that ignore SIGTERM too.
func TestStopKillsWholeTree(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  tree:\n    command: "+wl+"ignore-term\n    stop_timeout: 300ms\n"+
		"    ready: { exec: \"/.tori/tori-run workload exists /tmp/tree-started\", interval: 50ms, retries: 200 }\n"), options(t))
	sup, err := inst.Supervise()
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sup.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st := sup.Status()[0]
	tree := append([]int{st.Pid}, childrenOf(t, st.Pid)...)
	if len(tree) != 4 {
		t.Fatalf("want the service and 3 children, got %v", tree)
	}
	fds := make([]int, len(tree))
	for i, pid := range tree {
		if fds[i], err = unix.PidfdOpen(pid, 0); err != nil {
			t.Fatalf("pidfd of %d: %v", pid, err)
		}
		defer unix.Close(fds[i])
	}
	if err := sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sup.Wait()
	// The main process ignores SIGTERM: only the kill after stop_timeout ends it.
	if st = sup.Status()[0]; st.LastExit == nil || st.LastExit.Signal != syscall.SIGKILL || st.LastReason != supervisor.ReasonStopRequested {
		t.Errorf("ended: %v (%s), want killed by SIGKILL after the stop timeout of a requested stop", st.LastExit, st.LastReason)
	}
	// Every process of the tree ends (pidfds: no pid reuse can fool this).
	// The bound only keeps a broken kill from hanging the test.
	for i, fd := range fds {
		fs := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fs, 10_000); n != 1 || err != nil {
			t.Errorf("pid %d still runs after the stop (%v)", tree[i], err)
		}
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// TestBadSetups fail with a clear error and leave nothing behind.
func TestBadSetups(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct{ name, ref, body, want string }{
		{"missing release", "no-such-capsule", "", "not a capsule.yml, an app folder or an installed release"},
		{"unknown layer", "", "layers: [" + strings.Repeat("ab", 32) + "]\nservices:\n  a: { command: /bin/true }\n", "is not an installed release"},
		{"missing volume", "", "volumes: [/nonexistent/tori-vol:/data]\nservices:\n  a: { command: /bin/true }\n", "the host path /nonexistent/tori-vol does not exist"},
		{"missing program", "", "services:\n  a: { command: ./not-there }\n", "not-there is not in the app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t)
			// The operator allows the missing volume: its absence is the error.
			o.Host = &runtime.HostConfig{Volumes: []runtime.AllowedVolume{{Path: "/nonexistent", From: "test"}}}
			ref := tc.ref
			if ref == "" {
				ref = capsule(t, tc.body)
			}
			tgt, err := runtime.Resolve(ref, o)
			if err == nil {
				_, err = runtime.Create(context.Background(), tgt, o)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			assertNothingLeft(t, o)
		})
	}
}

// TestExecFailureIsPermanent: a program that cannot be executed is a start
// error the supervisor must not retry.
func TestExecFailureIsPermanent(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  a: { command: /nonexistent-program }\n"), options(t))
	_, err := inst.StartService(context.Background(), "a", os.Stderr, os.Stderr)
	var se *supervisor.StartError
	if !errors.As(err, &se) || !se.Perm || !errors.Is(se, unix.ENOENT) {
		t.Fatalf("error %#v, want a permanent ENOENT start error", err)
	}
}

// TestFastExitingServices: a service that exits at once is still reported as
// started, then exited (the init answers before it can report the exit).
func TestFastExitingServices(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  quick:\n    command: "+wl+"sleep 0\n"), options(t))
	for i := 0; i < 30; i++ {
		s, err := inst.StartService(context.Background(), "quick", os.Stderr, os.Stderr)
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if info := wait(t, s); info.Code != 0 || info.Signal != 0 {
			t.Fatalf("run %d: %s", i, info.String())
		}
	}
}
