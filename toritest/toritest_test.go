package toritest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/release"
	torirt "github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/harness"
	"github.com/tori-run/tori-run/toritest"
)

// The test binary is bound into every capsule as /.tori/tori-run; services
// run its workloads with "/.tori/tori-run workload NAME ARGS".
const wl = "/.tori/tori-run workload "

func workload(args []string) int {
	switch args[0] {
	case "notify-after": // wait ms, create the marker, then say READY=1
		ms, _ := strconv.Atoi(args[1])
		time.Sleep(time.Duration(ms) * time.Millisecond)
		if err := os.WriteFile(args[2], nil, 0o644); err != nil {
			fmt.Println(err)
			return 1
		}
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			fmt.Println("notify:", err)
			return 1
		}
		_, _ = c.Write([]byte("READY=1\nSTATUS=warm"))
		time.Sleep(time.Hour)
	case "alloc": // touch n MiB, then wait
		n, _ := strconv.Atoi(args[1])
		var keep [][]byte
		for range n {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
	case "warming": // never ready
		fmt.Println("still warming up")
		time.Sleep(time.Hour)
	}
	return 0
}

// app writes a capsule's app folder with the given services: block.
func app(t testing.TB, name, services string) string {
	t.Helper()
	dir := t.TempDir()
	m := "name: " + name + "\nversion: \"1.0.0\"\nservices:\n" + services
	if err := os.WriteFile(filepath.Join(dir, "capsule.yml"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fatalTB records the failure of a Start instead of ending the test, so
// that the failure itself can be checked.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Fatalf(format string, a ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, a...)
	f.mu.Unlock()
	runtime.Goexit()
}

// startFailing runs Start in its own goroutine and returns its failure.
func startFailing(t *testing.T, ref string, opts ...toritest.Option) (string, time.Duration) {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	begin := time.Now()
	go func() {
		defer close(done)
		toritest.Start(f, ref, opts...)
		f.msg = "Start returned"
	}()
	<-done
	return f.msg, time.Since(begin)
}

// Start returns only once the service said READY=1: the marker it writes
// just before is there when Start returns.
func TestStartWaitsForNotify(t *testing.T) {
	t.Parallel()
	c := toritest.Start(t, app(t, "notifier", "  svc:\n    command: "+wl+"notify-after 300 /tmp/marker\n    ready: { notify: true, interval: 1s, retries: 60 }\n"))
	if _, err := c.Exec("svc", "test", "-e", "/tmp/marker"); err != nil {
		t.Fatalf("Start returned before the service was ready: %v", err)
	}
}

// A service that never gets ready fails the Start at the timeout, with its
// logs in the message.
func TestStartTimesOutWithLogs(t *testing.T) {
	t.Parallel()
	// The timeout bounds the whole Start; long enough for the service to
	// have started (the emulated CI guest is 10-20x slower).
	timeout := 3 * time.Second
	if os.Getenv("TORI_VM_GUEST") == "1" {
		timeout = 15 * time.Second
	}
	msg, _ := startFailing(t, app(t, "slow", "  svc:\n    command: "+wl+"warming\n    ready: { notify: true }\n"),
		toritest.WithTimeout(timeout))
	for _, want := range []string{"not ready in time", "svc: running", "still warming up"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, msg)
		}
	}
}

// A service that fails ends the Start at once (not at the timeout), with
// its logs and how it ended.
func TestStartFailsFastOnCrash(t *testing.T) {
	t.Parallel()
	msg, _ := startFailing(t, app(t, "crash", "  svc:\n    command: /bin/sh -c 'echo config missing >&2; exit 3'\n    restart: never\n    ready: { notify: true }\n"),
		toritest.WithTimeout(time.Minute))
	for _, want := range []string{"svc failed", "status 3", "config missing"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, msg)
		}
	}
}

// Each capsule has its own PID namespace, environment and state; 100 run
// at once (20 with -short).
func TestParallelIsolated(t *testing.T) {
	n := 100
	if testing.Short() {
		n = 20
	}
	if os.Getenv("TORI_VM_GUEST") == "1" {
		n = 8 // the CI guest's CPU is emulated, 10-20x slower
	}
	dir := app(t, "par", "  svc:\n    command: sleep 3600\n")
	for i := range n {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			id := strconv.Itoa(i)
			c := toritest.Start(t, dir, toritest.WithEnv("ID", id))
			out, err := c.Exec("svc", "sh", "-c", `echo $ID; cd /proc && echo [0-9]*`)
			if err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(string(out))
			// PID 1 the init, the service, this shell: nothing of the
			// other capsules.
			if len(f) != 4 || f[0] != id || f[1] != "1" {
				t.Fatalf("exec saw %q; want ID %s, then pids 1 and two more", out, id)
			}
			ctx := t.Context()
			if err := c.State().Put(ctx, "who", []byte(id)); err != nil {
				t.Fatal(err)
			}
			if v, err := c.State().Get(ctx, "who"); err != nil || string(v) != id {
				t.Fatalf("state who = %q, %v; want %s", v, err, id)
			}
		})
	}
}

// A volume binds a test's folder; limits land in the capsule's cgroup.
func TestVolumeAndLimits(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	c := toritest.Start(t, app(t, "vol", "  svc:\n    command: /bin/sh -c 'echo from-capsule > /data/out; exec sleep 3600'\n"),
		toritest.WithVolume(data, "/data"), toritest.WithLimits("TasksMax=17"))
	if _, err := c.Exec("svc", "test", "-s", "/data/out"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "out")); err != nil || string(b) != "from-capsule\n" {
		t.Fatalf("volume file: %q, %v", b, err)
	}
	pid, err := c.Pid("svc")
	if err != nil {
		t.Fatal(err)
	}
	if got := capsuleCgroupFile(t, pid, "pids", "pids.max"); got != "17" {
		t.Fatalf("capsule pids.max = %q, want 17", got)
	}
}

// capsuleCgroupFile reads a file of the capsule's cgroup (the parent of the
// service's leaf) in the controller's hierarchy, v1 or v2.
func capsuleCgroupFile(t *testing.T, pid int, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		for _, ctrl := range strings.Split(f[1], ",") {
			if ctrl == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, filepath.Dir(f[2]), file))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(v))
			}
		}
		if f[1] == "" && f[0] == "0" && !strings.Contains(string(b), ":"+controller) {
			v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", filepath.Dir(f[2]), file))
			if err == nil {
				return strings.TrimSpace(string(v))
			}
		}
	}
	t.Fatalf("no %s hierarchy for pid %d in %s", controller, pid, b)
	return ""
}

// Stop removes everything: the process, the folder, the mounts.
func TestStopRemovesEverything(t *testing.T) {
	t.Parallel()
	c := toritest.Start(t, "testdata/hello")
	pid, err := c.Pid("hello")
	if err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	cg := cgroupDirs(t, pid)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, c.Dir(), pidfd, cg)
}

// cgroupDirs lists the service's cgroup folders, one per hierarchy.
func cgroupDirs(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if !strings.Contains(f[2], "/svc-") {
			continue
		}
		for _, mnt := range []string{"/sys/fs/cgroup/" + strings.TrimPrefix(f[1], "name="), "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
			if f[1] == "" && mnt != "/sys/fs/cgroup/unified" && mnt != "/sys/fs/cgroup" {
				continue
			}
			if d := filepath.Join(mnt, f[2]); exists(d) {
				dirs = append(dirs, filepath.Dir(d)) // the capsule's cgroup
				break
			}
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("no cgroup folder of pid %d found from %s", pid, b)
	}
	return dirs
}

func mountsUnder(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), dir)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// assertGone checks that a Start left nothing: the service's process (by
// pidfd: no pid reuse), its cgroups, mounts and folder.
func assertGone(t *testing.T, dir string, pidfd int, cgroups []string) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); err != nil || n != 1 {
		t.Errorf("the service's process still runs (poll %d, %v)", n, err)
	}
	for _, d := range cgroups {
		if exists(d) {
			t.Errorf("cgroup left: %s", d)
		}
	}
	if mountsUnder(t, dir) {
		t.Errorf("mounts left under %s", dir)
	}
	if exists(dir) {
		t.Errorf("folder left: %s", dir)
	}
}

// kill -9 of a test binary holding a capsule: the kernel ends the capsule
// at once (its init exits when the test process's connection closes), and
// the next Start sweeps the rest (mounts, cgroups, files).
func TestKill9LeavesNothing(t *testing.T) {
	if os.Getenv("TORITEST_CHILD") == "1" {
		killedChild(t)
		return
	}
	t.Parallel()
	dir, pidfd, cg := startKilledChild(t, "^TestKill9LeavesNothing$", "")
	toritest.Start(t, "testdata/hello") // sweeps what the dead process left
	assertGone(t, filepath.Dir(dir), pidfd, cg)
}

// The same leftovers, swept by tori-run gc's sweep instead of a Start: it
// says what it removed (the test process's folder, with its instance).
func TestKill9ThenGC(t *testing.T) {
	if os.Getenv("TORITEST_CHILD") == "1" {
		killedChild(t)
		return
	}
	t.Parallel()
	// A TMPDIR of its own: no other test's Start sweeps the child's folder.
	tmp, err := os.MkdirTemp("", "tgc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	dir, pidfd, cg := startKilledChild(t, "^TestKill9ThenGC$", tmp)
	base := filepath.Join(tmp, "toritest-"+strconv.Itoa(os.Geteuid()))
	swept, err := harness.SweepLeftovers(context.Background(), torirt.Options{Root: t.TempDir(), Log: zerolog.Nop()}, base, false)
	if err != nil {
		t.Fatal(err)
	}
	procDir := filepath.Dir(dir)
	if len(swept) != 1 || swept[0].Path != procDir || len(swept[0].Instances) != 1 ||
		!strings.Contains(swept[0].String(), "test process folder "+procDir) {
		t.Errorf("gc's sweep reports %v; want the folder %s and its one instance", swept, procDir)
	}
	assertGone(t, procDir, pidfd, cg)
}

// killedChild is the child test binary: it starts a capsule, says where,
// and waits to be killed.
func killedChild(t *testing.T) {
	c := toritest.Start(t, "testdata/hello")
	pid, err := c.Pid("hello")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("CAPSULE %s %d\n", c.Dir(), pid)
	time.Sleep(time.Hour)
}

// startKilledChild runs this test binary's test run as a child that starts
// a capsule (with TMPDIR tmp, "" for ours), kills it with SIGKILL once the
// capsule runs, and checks what the kernel alone removed: the capsule's
// processes and its overlay. It returns the child's Start folder, a pidfd
// of the service and the capsule's cgroups, for the sweep to remove.
func startKilledChild(t *testing.T, run, tmp string) (string, int, []string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", run, "-test.v")
	cmd.Env = append(os.Environ(), "TORITEST_CHILD=1")
	if tmp != "" {
		cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "CAPSULE %s %d", &dir, &pid); err == nil {
			break
		}
	}
	if dir == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the child test binary did not start its capsule")
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pidfd) })
	cg := cgroupDirs(t, pid)
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The kernel alone ends the capsule's processes: no Start has run yet.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); err != nil || n != 1 {
		t.Fatalf("the capsule's service outlived the killed test binary by 10 s (poll %d, %v)", n, err)
	}
	if !exists(dir) {
		t.Fatalf("%s is gone before any sweep; the test checks nothing", dir)
	}
	// The app's overlay lived in the capsule's mount namespace: it went
	// with the capsule's last process, before any sweep.
	if mountsUnder(t, dir) {
		t.Errorf("the overlay outlived the capsule: mounts under %s before any sweep", dir)
	}
	return dir, pidfd, cg
}

// An archive is installed into the Start's own root; an installed name is
// looked up under WithRoot and nothing is written there.
func TestStartArchiveAndInstalledName(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	res, err := release.Build(t.Context(), release.BuildOptions{FromDir: "testdata/hello", Manifest: "testdata/hello/capsule.yml",
		OutputDir: out, BuildSHA: "0123456789abcdef0123456789abcdef01234567"})
	if err != nil {
		t.Fatal(err)
	}
	c := toritest.Start(t, res.Path)
	if b, err := c.Exec("hello", "sh", "-c", "echo $TORI_RELEASE $TORI_BUILD_SHA"); err != nil || string(b) != res.Digest+" "+res.BuildSHA+"\n" {
		t.Fatalf("from the archive: %q, %v; want the release %s", b, err, res.Digest)
	}
	root := t.TempDir()
	store, err := release.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Install(t.Context(), res.Path); err != nil {
		t.Fatal(err)
	}
	c2 := toritest.Start(t, "hello", toritest.WithRoot(root))
	if b, err := c2.Exec("hello", "sh", "-c", "echo $TORI_RELEASE"); err != nil || string(b) != res.Digest+"\n" {
		t.Fatalf("by name: %q, %v", b, err)
	}
	if d, _ := filepath.Glob(filepath.Join(root, "instances", "*")); len(d) > 0 {
		t.Fatalf("Start wrote instances into the source root: %v", d)
	}
}

// A volume the manifest declares is refused unless the test allows it, as
// an operator would with --allow-volume; WithAllowVolume does.
func TestManifestVolumeNeedsAllowing(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dir := app(t, "mvol", "  svc:\n    command: sleep 3600\n")
	m := filepath.Join(dir, "capsule.yml")
	b, _ := os.ReadFile(m)
	if err := os.WriteFile(m, append(b, []byte("volumes: [\""+data+":/data\"]\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, _ := startFailing(t, dir); !strings.Contains(msg, "not allowed on this host") {
		t.Fatalf("a manifest volume nobody allowed: %s", msg)
	}
	c := toritest.Start(t, dir, toritest.WithAllowVolume(data))
	if _, err := c.Exec("svc", "touch", "/data/ok"); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(data, "ok")) {
		t.Fatal("the allowed volume is not bound")
	}
}
