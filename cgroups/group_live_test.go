package cgroups

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests create real cgroups, each beneath the test process's own cgroup in every hierarchy, start
// processes in them, and remove both (t.Cleanup) whatever happens. They need root; on this hybrid host they
// exercise cgroup v1, in the cgroup-v2-only QEMU guest (make test-vm) cgroup v2, and both are asserted.

const helperEnv = "TORI_CGROUPS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "hog": // allocate and touch 200 MiB, 1 MiB at a time
		var keep [][]byte
		for range 200 {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println(len(keep), "MiB allocated")
		os.Exit(0)
	case "delegate": // as tori-run on v2: delegate our cgroup, make a group with a limit, wait for stdin EOF
		h, err := Detect()
		if err == nil {
			err = EnsureDelegation(h)
		}
		var g *Group
		if err == nil {
			g, _, err = Create(h, "", "tori/x", Resources{MemoryMax: ptr(int64(64 << 20))})
		}
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("OK", g.Path())
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(3)
}

// liveHost detects the host and prepares delegation, or skips.
func liveHost(t *testing.T) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups")
	}
	h, err := Detect()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	if err := EnsureDelegation(h); err != nil {
		t.Skipf("cannot delegate our cgroup: %v", err)
	}
	return h
}

func uniqueName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("tori-test-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))
}

// newTestGroup creates a uniquely named group under our own cgroup; cleanup kills what is in it, destroys
// it and checks that no directory is left.
func newTestGroup(t *testing.T, h *Host, r Resources) (*Group, []string) {
	t.Helper()
	g, unenforced, err := Create(h, "", uniqueName(), r)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { destroyTestGroup(t, g) })
	return g, unenforced
}

func destroyTestGroup(t *testing.T, g *Group) {
	t.Helper()
	if err := g.Kill(); err != nil {
		t.Errorf("cleanup Kill: %v", err)
	}
	if err := g.Destroy(); err != nil {
		t.Errorf("cleanup Destroy: %v", err)
	}
	for k, d := range g.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("hierarchy %q: %s left behind (%v)", k, d, err)
		}
	}
}

func readTrim(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func needCommands(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not found: %v", n, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// dirOf returns the group's directory in the hierarchy carrying controller ("" for cgroup2).
func dirOf(t *testing.T, g *Group, controller string) string {
	t.Helper()
	for _, d := range g.dirs {
		if (g.version == 2 || controller == "") && d.Version == 2 || d.has(controller) {
			return d.dir
		}
	}
	t.Fatalf("no hierarchy with %q in %v", controller, g.Dirs())
	return ""
}

func TestCreateWritesLimits(t *testing.T) {
	h := liveHost(t)
	r := Resources{CPUQuotaPercent: ptr(50.0), MemoryMax: ptr(int64(64 << 20)), TasksMax: ptr(int64(20)),
		CPUWeight: ptr(uint64(200)), AllowedCPUs: "0", MemoryHigh: ptr(int64(48 << 20))}
	g, unenforced := newTestGroup(t, h, r)
	t.Logf("dirs: %v; unenforced: %q", g.Dirs(), unenforced)
	var want map[string]string
	if g.Version() == 1 {
		want = map[string]string{
			dirOf(t, g, "cpu") + "/cpu.cfs_quota_us":         "50000",
			dirOf(t, g, "cpu") + "/cpu.cfs_period_us":        "100000",
			dirOf(t, g, "cpu") + "/cpu.shares":               "2048",
			dirOf(t, g, "memory") + "/memory.limit_in_bytes": "67108864",
			dirOf(t, g, "pids") + "/pids.max":                "20",
			dirOf(t, g, "cpuset") + "/cpuset.cpus":           "0",
			// MemoryHigh has no v1 equivalent: the soft limit is written as a hint.
			dirOf(t, g, "memory") + "/memory.soft_limit_in_bytes": "50331648",
		}
		if len(unenforced) == 0 || !strings.HasPrefix(unenforced[0], "MemoryHigh=50331648: ") {
			t.Errorf("unenforced = %q, want MemoryHigh reported", unenforced)
		}
		if mems := readTrim(t, dirOf(t, g, "cpuset")+"/cpuset.mems"); mems == "" {
			t.Errorf("cpuset.mems is empty: no task could join")
		}
	} else {
		d := dirOf(t, g, "")
		want = map[string]string{d + "/cpu.max": "50000 100000", d + "/memory.max": "67108864",
			d + "/pids.max": "20", d + "/cpu.weight": "200", d + "/cpuset.cpus": "0", d + "/memory.high": "50331648"}
		if len(unenforced) != 0 {
			t.Errorf("unenforced = %q, want none on v2", unenforced)
		}
	}
	for f, w := range want {
		if got := readTrim(t, f); got != w {
			t.Errorf("%s = %q, want %q", f, got, w)
		}
	}

	// Create again: the group is reused and the limits written again.
	if _, _, err := Create(h, "", g.Path(), Resources{TasksMax: ptr(int64(30))}); err != nil {
		t.Fatalf("Create of an existing group: %v", err)
	}
	if got := readTrim(t, dirOf(t, g, "pids")+"/pids.max"); got != "30" && g.Version() == 1 {
		t.Errorf("pids.max after second Create = %q, want 30", got)
	}

	// A value the kernel refuses: the error names the directive, the value and the file.
	_, _, err := g.Child("bad", Resources{AllowedCPUs: "99"})
	if err == nil {
		t.Fatal("AllowedCPUs=99 accepted")
	}
	for _, w := range []string{"AllowedCPUs=99", `"99"`, "cpuset.cpus"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(dirOf(t, g, "cpuset"), "bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Child left its directory: %v", err)
	}
}

// cgroupLines parses /proc/PID/cgroup into controller list -> path ("" for cgroup2).
func cgroupLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range strings.Split(readTrim(t, fmt.Sprintf("/proc/%d/cgroup", pid)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out
}

// wantIn checks that pid is in g in every hierarchy (on a hybrid host the v1 ones: SpawnFiles leaves the
// unified part out).
func wantIn(t *testing.T, g *Group, pid int) {
	t.Helper()
	lines := cgroupLines(t, pid)
	for _, d := range g.dirs {
		if d.Version == 2 && g.version == 1 {
			continue
		}
		rel, _ := filepath.Rel(d.Mount, d.dir)
		want := path.Join(d.Root, rel)
		if got := lines[d.key()]; got != want {
			t.Errorf("pid %d in %q hierarchy: %s, want %s", pid, d.key(), got, want)
		}
	}
}

func startIn(t *testing.T, g *Group, cmd *exec.Cmd, extra ...*os.File) {
	t.Helper()
	files, err := g.SpawnFiles()
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, extra...)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err := StartIn(g.Version(), files, cmd); err != nil {
		t.Fatalf("StartIn: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if len(extra) > 0 || g.version != 1 {
		return
	}
	// Hybrid: born in the v1 hierarchies alone, without clone3, which the capsule's filter refuses there.
	lines := cgroupLines(t, cmd.Process.Pid)
	for _, d := range g.dirs {
		rel, _ := filepath.Rel(d.Mount, d.dir)
		if got := lines[d.key()]; d.Version == 2 && got == path.Join(d.Root, rel) {
			t.Errorf("pid %d is in the cgroup2 part %s of a hybrid group: born there with clone3", cmd.Process.Pid, got)
		}
	}
}

func TestStartInBornInGroup(t *testing.T) {
	h := liveHost(t)
	needCommands(t, "sh", "sleep")
	before := readTrim(t, "/proc/self/cgroup")
	g, _ := newTestGroup(t, h, Resources{TasksMax: ptr(int64(50))})

	// Many starts: each must land in the group from its first instruction, and never leave one of our
	// threads (or our process) behind in the group.
	for i := range 10 {
		cmd := exec.Command("sleep", "30")
		startIn(t, g, cmd)
		wantIn(t, g, cmd.Process.Pid)
		if t.Failed() {
			t.Fatalf("start %d not in the group", i)
		}
	}
	pids, err := g.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 10 {
		t.Errorf("Procs = %v, want the 10 sleeps", pids)
	}
	for _, p := range pids {
		if p == os.Getpid() {
			t.Errorf("our own process is in the group")
		}
	}
	if after := readTrim(t, "/proc/self/cgroup"); after != before {
		t.Errorf("our cgroups changed:\n%s\nwas\n%s", after, before)
	}

	// Grandchildren are born where their parent is.
	sh := exec.Command("sh", "-c", "sleep 30 & sleep 30 & wait")
	startIn(t, g, sh)
	deadline := time.Now().Add(3 * time.Second)
	for {
		pids, _ = g.Procs()
		if len(pids) >= 13 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(pids) != 13 {
		t.Fatalf("Procs = %v, want 13 (10 sleeps, sh and its 2 sleeps)", pids)
	}
	for _, p := range pids {
		wantIn(t, g, p)
	}
}

func TestKill(t *testing.T) {
	h := liveHost(t)
	needCommands(t, "sh", "sleep")
	methods := map[string]func(g *Group) error{
		"Kill":             (*Group).Kill,
		"freeze+SIGKILL":   (*Group).killFrozen,
		"cgroup.kill (v2)": nil,
	}
	for name, kill := range methods {
		t.Run(name, func(t *testing.T) {
			g, _ := newTestGroup(t, h, Resources{})
			if kill == nil {
				// The v2 method, also on a hybrid host: the group has a cgroup2 part there.
				var v2 *groupDir
				for i := range g.dirs {
					if g.dirs[i].Version == 2 {
						v2 = &g.dirs[i]
					}
				}
				if v2 == nil {
					t.Skip("no cgroup2 hierarchy")
				}
				if _, err := os.Stat(v2.dir + "/cgroup.kill"); err != nil {
					t.Skipf("no cgroup.kill (Linux < 5.14): %v", err)
				}
				kill = func(g *Group) error { return g.killV2(*v2) }
			}
			// A tree that ignores SIGTERM: sh and two sleeps, one in a subshell (dash and busybox sh exec
			// the last command of a subshell, busybox also the main shell's: 2 or 3 processes).
			cmd := exec.Command("sh", "-c", `trap "" TERM; (trap "" TERM; sleep 1000) & sleep 1000`)
			var extra []*os.File
			if name == "cgroup.kill (v2)" && g.Version() == 1 {
				// Hybrid: SpawnFiles leaves the cgroup2 part out; put the tree there too, by hand.
				v2 := g.dirs[slices.IndexFunc(g.dirs, func(d groupDir) bool { return d.Version == 2 })]
				d, err := DetachedDir(v2.Mount, v2.dir)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				extra = append(extra, d)
			}
			startIn(t, g, cmd, extra...)
			var pids []int
			for range 300 {
				if pids, _ = g.Procs(); len(pids) >= 2 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			if pids, _ = g.Procs(); len(pids) < 2 {
				t.Fatalf("Procs = %v, want 2 or 3", pids)
			}
			start := time.Now()
			if err := kill(g); err != nil {
				t.Fatalf("kill: %v", err)
			}
			t.Logf("%d processes killed in %v", len(pids), time.Since(start))
			if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Errorf("direct child ended with %v, want killed", err)
			}
			if left, _ := g.Procs(); len(left) != 0 {
				t.Errorf("Procs after kill = %v", left)
			}
			for _, p := range pids {
				if p == cmd.Process.Pid {
					continue
				}
				// The others were reparented to init (or a subreaper), which reaps them when it will: dead
				// is gone or a zombie.
				alive := func() bool {
					st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
					return err == nil && !bytes.Contains(st, []byte(") Z ")) && !bytes.Contains(st, []byte(") X "))
				}
				for i := 0; alive() && i < 100; i++ {
					time.Sleep(10 * time.Millisecond)
				}
				if alive() {
					t.Errorf("pid %d still alive", p)
				}
			}
		})
	}
}

func TestTasksMaxEnforced(t *testing.T) {
	h := liveHost(t)
	needCommands(t, "sh", "sleep", "seq")
	g, _ := newTestGroup(t, h, Resources{TasksMax: ptr(int64(10))})
	var stderr bytes.Buffer
	cmd := exec.Command("sh", "-c", `for i in $(seq 50); do sleep 5 & done; wait`)
	cmd.Stderr = &stderr
	startIn(t, g, cmd)
	pidsDir := dirOf(t, g, "pids")
	peak := 0
	for range 100 {
		n, _ := strconv.Atoi(readTrim(t, pidsDir+"/pids.current"))
		peak = max(peak, n)
		time.Sleep(5 * time.Millisecond)
	}
	events := readTrim(t, pidsDir+"/pids.events")
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	forkFailures := strings.Count(stderr.String(), "fork")
	t.Logf("pids.current peak %d; pids.events %q; %d fork failures reported by sh", peak, events, forkFailures)
	if peak > 10 || peak < 5 {
		t.Errorf("pids.current peaked at %d, want 5..10 with pids.max 10", peak)
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(events, "max ")); n == 0 {
		t.Errorf("pids.events = %q: the kernel refused no fork", events)
	}
	if forkFailures == 0 {
		t.Errorf("sh reported no fork failure: %q", stderr.String())
	}
}

func TestMemoryMaxOOMKill(t *testing.T) {
	h := liveHost(t)
	g, _ := newTestGroup(t, h, Resources{MemoryMax: ptr(int64(32 << 20))})
	svc, _, err := g.Child("svc", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=hog")
	var out bytes.Buffer
	cmd.Stdout = &out
	startIn(t, svc, cmd)
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v (%q), want SIGKILL by the OOM killer", err, out.String())
	}
	// Counted in the service's group, and (summed on v1, hierarchical on v2) in the capsule's.
	for _, gg := range []*Group{svc, g} {
		n, err := gg.OOMKills()
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 {
			t.Errorf("OOMKills of %s = %d, want >= 1", gg.Path(), n)
		}
	}
	st, err := svc.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hog killed by %v; memory peak %d KiB (limit %d KiB)", ws.Signal(), st.MemoryPeak>>10, 32<<10)
	// The kernel's usage counters are batched per CPU (v1 documents usage_in_bytes as fuzzy) and the peak also
	// counts page tables and kernel memory charged while the hog was dying: 34.3 MiB was seen in the v2 guest.
	// The kill above is the proof; this only catches a limit that was not applied at all.
	if st.MemoryPeak > 36<<20 {
		t.Errorf("memory peak %d above the 32 MiB limit", st.MemoryPeak)
	}
}

func TestStatsThrottleAndDestroy(t *testing.T) {
	h := liveHost(t)
	needCommands(t, "sh")
	g, _ := newTestGroup(t, h, Resources{CPUQuotaPercent: ptr(20.0)})
	svc, _, err := g.Child("svc", Resources{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	start := time.Now()
	startIn(t, svc, cmd)
	time.Sleep(800 * time.Millisecond)
	st, err := g.Stats()
	wall := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %v: %+v", wall, st)
	if st.CPUUsage <= 0 || st.Pids < 1 || st.MemoryCurrent == 0 {
		t.Errorf("stats %+v: want CPU usage, pids and memory", st)
	}
	if st.ThrottledPeriods == 0 || st.ThrottledTime == 0 {
		t.Errorf("not throttled under CPUQuota=20%%: %+v", st)
	}
	if limit := wall/5 + 100*time.Millisecond; st.CPUUsage > limit {
		t.Errorf("CPU usage %v above 20%% of %v", st.CPUUsage, wall)
	}

	if err := g.Destroy(); !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("Destroy with a process in a child = %v, want ErrNotEmpty naming pid %d", err, cmd.Process.Pid)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := g.Destroy(); err != nil {
		t.Fatalf("Destroy after Kill: %v", err)
	}
	for _, d := range svc.Dirs() {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("child %s left", d)
		}
	}
	if err := g.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestChildMoveLoad(t *testing.T) {
	h := liveHost(t)
	needCommands(t, "sleep")
	g, _ := newTestGroup(t, h, Resources{MemoryMax: ptr(int64(256 << 20))})
	// As the runtime does: a process placed in the capsule's group (here by us) moves into the init leaf,
	// then a service leaf with limits is made.
	cmd := exec.Command("sleep", "30")
	startIn(t, g, cmd)
	initG, _, err := g.Child("init", Resources{})
	if err != nil {
		t.Fatalf("Child(init) while the parent holds a process: %v", err)
	}
	if g.Version() == 2 {
		if _, _, err := g.Child("svc", Resources{TasksMax: ptr(int64(5))}); !errors.Is(err, ErrNotEmpty) {
			t.Errorf("Child with limits under a parent with processes = %v, want ErrNotEmpty", err)
		}
	}
	if err := initG.MoveProcess(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	wantIn(t, initG, cmd.Process.Pid)
	svc, _, err := g.Child("svc", Resources{TasksMax: ptr(int64(5))})
	if err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, dirOf(t, svc, "pids")+"/pids.max"); got != "5" {
		t.Errorf("svc pids.max = %q", got)
	}

	l, err := Load(h, g.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(l.Dirs()) != fmt.Sprint(g.Dirs()) {
		t.Errorf("Load dirs %v, Create dirs %v", l.Dirs(), g.Dirs())
	}
	if pids, _ := l.Procs(); len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Errorf("loaded group's Procs = %v, want [%d]", pids, cmd.Process.Pid)
	}
	if _, err := Load(h, uniqueName()); !errors.Is(err, ErrNotExist) {
		t.Errorf("Load of a missing group = %v, want ErrNotExist", err)
	}
}

// TestEnsureDelegationV2 runs tori-run's v2 start-up in a helper process placed in a cgroup of its own (only
// the v2 guest can: on v1 EnsureDelegation has nothing to do).
func TestEnsureDelegationV2(t *testing.T) {
	h := liveHost(t)
	if h.Mode != Unified {
		t.Skipf("cgroup v2 only (host is %v); runs in the guest of make test-vm", h.Mode)
	}
	run := func(t *testing.T, g *Group) (*exec.Cmd, string, io.WriteCloser) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=delegate")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		startIn(t, g, cmd)
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		return cmd, strings.TrimSpace(line), stdin
	}

	t.Run("alone: moves itself into supervisor", func(t *testing.T) {
		g, _ := newTestGroup(t, h, Resources{})
		cmd, line, stdin := run(t, g)
		defer stdin.Close()
		if want := "OK " + g.Path() + "/tori/x"; line != want {
			t.Fatalf("helper said %q, want %q", line, want)
		}
		if got := cgroupLines(t, cmd.Process.Pid)[""]; got != g.Path()+"/"+SupervisorLeaf {
			t.Errorf("helper in %s, want %s/%s", got, g.Path(), SupervisorLeaf)
		}
		d := dirOf(t, g, "")
		if got := readTrim(t, d+"/tori/x/memory.max"); got != "67108864" {
			t.Errorf("memory.max = %q", got)
		}
		if got := readTrim(t, d+"/cgroup.subtree_control"); !strings.Contains(got, "memory") {
			t.Errorf("subtree_control = %q", got)
		}
	})
	t.Run("with another process: refuses", func(t *testing.T) {
		needCommands(t, "sleep")
		g, _ := newTestGroup(t, h, Resources{})
		startIn(t, g, exec.Command("sleep", "30"))
		cmd, line, stdin := run(t, g)
		stdin.Close()
		if !strings.HasPrefix(line, "ERR ") || !strings.Contains(line, "--cgroup-parent") || !strings.Contains(line, "(sleep)") {
			t.Errorf("helper said %q, want an error naming the sleep and --cgroup-parent", line)
		}
		_ = cmd.Wait()
		if _, err := os.Stat(dirOf(t, g, "") + "/" + SupervisorLeaf); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("supervisor leaf made: %v", err)
		}
	})
}

// TestSpawnFilesLeadNowhere: a cgroup2 folder from SpawnFiles is a detached copy: ".." is itself, nothing
// above it (the host's "/") can be reached, its files cannot be written, and StartIn still places a child
// through it; a folder of the host's own mount is refused by Contained. This is the wall against a host
// folder fd reaching a capsule (runc's CVE-2024-21626 class).
func TestSpawnFilesLeadNowhere(t *testing.T) {
	h := liveHost(t)
	g, _ := newTestGroup(t, h, Resources{})
	files, err := g.SpawnFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	dirs := 0
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if _, err := unix.Openat(int(f.Fd()), "..", unix.O_RDONLY, 0); !errors.Is(err, unix.ENOTDIR) {
				t.Errorf("a tasks file must lead nowhere: openat(.., ..) = %v", err)
			}
			continue
		}
		dirs++
		if err := Contained(f); err != nil {
			t.Error(err)
		}
		for _, p := range []string{"../../../../../etc/passwd", "../../../../../proc/self/status"} {
			if fd, err := unix.Openat(int(f.Fd()), p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(fd)
				t.Errorf("opened %s from the cgroup folder fd", p)
			}
		}
		if fd, err := unix.Openat(int(f.Fd()), "cgroup.procs", unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
			t.Error("cgroup.procs of the detached copy is writable")
		}
	}
	if dirs == 0 && g.Version() == 2 {
		t.Fatal("no cgroup2 folder among the spawn files of a v2 group")
	}
	host, err := os.Open(h.Hierarchies[0].Mount)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if Contained(host) == nil {
		t.Errorf("Contained accepted %s, a folder of the host's mount", host.Name())
	}
	cmd := exec.Command("sleep", "30")
	startIn(t, g, cmd)
	wantIn(t, g, cmd.Process.Pid)
}

// BenchmarkSpawnFiles: what opening a group's spawn files costs per service start (on a hybrid host the
// cgroup2 folder's detached copy: open_tree, mount_setattr, openat).
func BenchmarkSpawnFiles(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates cgroups")
	}
	h, err := Detect()
	if err != nil {
		b.Skipf("no cgroups: %v", err)
	}
	if err := EnsureDelegation(h); err != nil {
		b.Skipf("cannot delegate our cgroup: %v", err)
	}
	g, err := newGroup(h, uniqueName())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := g.create(Resources{}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = g.Destroy() }()
	for b.Loop() {
		files, err := g.SpawnFiles()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			f.Close()
		}
	}
}

// TestOpenNamespacedStaysInside: names that climb, absolute names and a folder that is not on cgroup2 are
// refused.
func TestOpenNamespacedStaysInside(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "svc-a"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"../etc", "svc-a/../..", "/etc", "", "."} {
		if f, err := OpenNamespaced(dir, rel); err == nil {
			f.Close()
			t.Errorf("OpenNamespaced(%q) was accepted", rel)
		}
	}
	if f, err := OpenNamespaced(dir, "svc-a"); err == nil || !strings.Contains(err.Error(), "not a cgroup2 mount") {
		if f != nil {
			f.Close()
		}
		t.Errorf("a folder of a tmpfs: %v, want not cgroup2", err)
	}
}
