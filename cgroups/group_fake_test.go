package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	lib "github.com/opencontainers/cgroups"
)

// The cgroup v2 logic that this hybrid host cannot exercise for real (EnsureDelegation, enabling controllers
// for children, where groups go) runs here against a fake cgroup2 tree in a temporary directory: the Host
// says where cgroup2 is mounted, so the package goes there. The kernel side is stood in for by files the test
// writes (a fake cgroup.procs does not empty itself when a process moves). What remains for the v2 guest
// (make test-vm): everything in group_live_test.go, which runs there on cgroup v2.

type fakeV2 struct {
	mount string
	own   string // our cgroup, as in /proc/self/cgroup
	h     *Host
}

// newFakeV2 builds <tmp>/cg mounted as cgroup2, our cgroup own with files, and detects a Host from it.
func newFakeV2(t *testing.T, own string, files map[string]string) *fakeV2 {
	t.Helper()
	f := &fakeV2{mount: filepath.Join(t.TempDir(), "cg"), own: own}
	for name, content := range files {
		p := filepath.Join(f.mount, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mi := "17 1 0:26 / " + f.mount + " rw,nosuid - cgroup2 cgroup2 rw\n"
	h, err := DetectFrom(strings.NewReader(mi), strings.NewReader("0::"+own+"\n"), OSProber{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Mode != Unified || len(h.Hierarchies) != 1 {
		t.Fatalf("fake tree detected as %v with %+v", h.Mode, h.Hierarchies)
	}
	f.h = h
	return f
}

func (f *fakeV2) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.mount, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var self = strconv.Itoa(os.Getpid())

func TestEnsureDelegationMovesOnlyUs(t *testing.T) {
	f := newFakeV2(t, "/work", map[string]string{
		"work/cgroup.controllers":     "cpuset cpu io memory pids\n",
		"work/cgroup.subtree_control": "memory\n",
		"work/cgroup.procs":           self + "\n",
		// The kernel makes a new cgroup's files; the fake has them already.
		"work/supervisor/cgroup.procs": "",
	})
	if _, _, err := Create(f.h, "", "tori/x", Resources{}); !errors.Is(err, ErrNotDelegated) {
		t.Errorf("Create before EnsureDelegation = %v, want ErrNotDelegated", err)
	}
	if err := EnsureDelegation(f.h); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "work/supervisor/cgroup.procs"); got != self {
		t.Errorf("supervisor/cgroup.procs = %q, want our pid %s", got, self)
	}
	if got := f.read(t, "work/cgroup.subtree_control"); got != "+cpuset +cpu +io +pids" {
		t.Errorf("subtree_control written %q, want the controllers not yet enabled", got)
	}
	if !f.h.delegated {
		t.Error("Host not marked delegated")
	}

	// Groups nest under <own>; Path is absolute on v2.
	g, err := newGroup(f.h, "tori/x")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g.Dirs()[""], filepath.Join(f.mount, "work/tori/x"); got != want {
		t.Errorf("dir = %s, want %s", got, want)
	}
	if got := g.Path(); got != "/work/tori/x" {
		t.Errorf("Path = %q, want /work/tori/x", got)
	}

	// A Host detected again after the move sees us in <own>/supervisor: the groups are the same.
	again := newFakeV2(t, "/work/supervisor", map[string]string{"work/supervisor/cgroup.controllers": "cpu\n"})
	g2, err := newGroup(again.h, "tori/x")
	if err != nil {
		t.Fatal(err)
	}
	if g2.Path() != "/work/tori/x" {
		t.Errorf("after the move, Path = %q, want /work/tori/x", g2.Path())
	}
}

func TestEnsureDelegationRefusesOthers(t *testing.T) {
	f := newFakeV2(t, "/session.scope", map[string]string{
		"session.scope/cgroup.controllers":     "cpu memory pids\n",
		"session.scope/cgroup.subtree_control": "",
		"session.scope/cgroup.procs":           "1\n" + self + "\n",
	})
	err := EnsureDelegation(f.h)
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("err = %v, want ErrNotEmpty", err)
	}
	for _, w := range []string{"1 (", "--cgroup-parent", "pid " + self} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(f.mount, "session.scope", SupervisorLeaf)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("supervisor leaf made although we refused: %v", err)
	}
	if got := f.read(t, "session.scope/cgroup.subtree_control"); got != "" {
		t.Errorf("subtree_control changed to %q", got)
	}
	if f.h.delegated {
		t.Error("Host marked delegated")
	}
}

func TestEnsureDelegationRoot(t *testing.T) {
	// The root cgroup (a guest without systemd) may hold processes and enable controllers: no move.
	f := newFakeV2(t, "/", map[string]string{
		"cgroup.controllers":     "cpu memory\n",
		"cgroup.subtree_control": "",
		"cgroup.procs":           "1\n" + self + "\n",
	})
	if err := EnsureDelegation(f.h); err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, "cgroup.subtree_control"); got != "+cpu +memory" {
		t.Errorf("subtree_control = %q", got)
	}
	g, err := newGroup(f.h, "tori/x")
	if err != nil {
		t.Fatal(err)
	}
	if g.Path() != "/tori/x" || g.Dirs()[""] != filepath.Join(f.mount, "tori/x") {
		t.Errorf("group %q at %v", g.Path(), g.Dirs())
	}
}

func TestGroupPaths(t *testing.T) {
	const own = "/process_api/16944ddd4595db97467f7194a438c26f"
	h := detectFixture(t, "hybrid-host", hybridProber())
	var keys []string
	for _, hi := range h.Hierarchies {
		keys = append(keys, strings.Join(hi.Controllers, ","))
	}
	if got := strings.Join(keys, " "); got != "name=systemd pids blkio freezer devices memory cpuset cpuacct cpu " {
		t.Errorf("hierarchies %q", got)
	}
	g, err := newGroup(h, "tori/x")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"memory": "/sys/fs/cgroup/memory" + own + "/tori/x", "cpu": "/sys/fs/cgroup/cpu/tori/x",
		"name=systemd": "/sys/fs/cgroup/systemd/tori/x", "": "/sys/fs/cgroup/unified/tori/x",
	}
	for k, w := range want {
		if got := g.Dirs()[k]; got != w {
			t.Errorf("Dirs()[%q] = %q, want %q", k, got, w)
		}
	}
	if g.Path() != "tori/x" || g.Version() != 1 {
		t.Errorf("Path %q version %d, want relative tori/x on v1", g.Path(), g.Version())
	}
	// --cgroup-parent: absolute, from the root of each hierarchy.
	g, err = newGroup(h, "/tori/x")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Dirs()["memory"]; got != "/sys/fs/cgroup/memory/tori/x" {
		t.Errorf("absolute: memory dir %s", got)
	}
	for _, bad := range []string{"../x", "tori/../../x", "a//b", ""} {
		if _, err := newGroup(h, bad); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}

	// Legacy host with cpu and cpuacct co-mounted: one directory, named by both.
	h = detectFixture(t, "legacy-v1", legacyProber())
	g, err = newGroup(h, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Dirs()["cpu,cpuacct"]; got != "/sys/fs/cgroup/cpu,cpuacct/system.slice/tori.service/svc" {
		t.Errorf("co-mounted dir %q (all: %v)", got, g.Dirs())
	}
}

func TestSettings(t *testing.T) {
	v1 := &Group{host: detectFixture(t, "hybrid-host", hybridProber()), version: 1}
	v2 := &Group{host: detectFixture(t, "unified-guest", unifiedProber("cpuset cpu io memory pids", "")), version: 2}
	r := Resources{CPUQuotaPercent: ptr(80.0), CPUWeight: ptr(uint64(200)), MemoryMax: ptr(int64(-1)),
		MemoryHigh: ptr(int64(1 << 20)), IOWeight: ptr(uint64(100)), TasksMax: ptr(int64(-1)), AllowedCPUs: "0-1"}
	for _, tt := range []struct {
		g    *Group
		want map[string]lib.Resources
	}{
		{v1, map[string]lib.Resources{
			CPUQuota: {CpuQuota: 80000, CpuPeriod: 100000}, CPUWeight: {CpuShares: 2048}, MemoryMax: {Memory: -1},
			MemoryHigh: {MemoryReservation: 1 << 20}, IOWeight: {BlkioWeight: 500}, AllowedCPUs: {CpusetCpus: "0-1"},
		}},
		{v2, map[string]lib.Resources{
			CPUQuota: {CpuQuota: 80000, CpuPeriod: 100000}, CPUWeight: {CpuWeight: 200}, MemoryMax: {Memory: -1},
			AllowedCPUs: {CpusetCpus: "0-1"},
		}},
	} {
		ss, err := tt.g.settings(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) != 7 {
			t.Fatalf("v%d: %d settings", tt.g.version, len(ss))
		}
		for _, s := range ss {
			w, ok := tt.want[s.directive]
			if !ok {
				continue
			}
			if s.res.CpuQuota != w.CpuQuota || s.res.CpuPeriod != w.CpuPeriod || s.res.CpuShares != w.CpuShares ||
				s.res.CpuWeight != w.CpuWeight || s.res.Memory != w.Memory || s.res.MemoryReservation != w.MemoryReservation ||
				s.res.BlkioWeight != w.BlkioWeight || s.res.CpusetCpus != w.CpusetCpus {
				t.Errorf("v%d %s: %+v, want %+v", tt.g.version, s.directive, s.res, w)
			}
			if s.directive == TasksMax && *s.res.PidsLimit != -1 {
				t.Errorf("TasksMax: %d", *s.res.PidsLimit)
			}
		}
		if tt.g.version == 2 {
			for _, s := range ss {
				switch s.directive {
				case MemoryHigh:
					if s.res.Unified["memory.high"] != "1048576" {
						t.Errorf("v2 MemoryHigh: %v", s.res.Unified)
					}
				case IOWeight:
					if s.res.Unified["io.weight"] != "default 100" {
						t.Errorf("v2 IOWeight: %v", s.res.Unified)
					}
				}
				if !s.enforced {
					t.Errorf("v2 %s not enforced: %s", s.directive, s.note)
				}
			}
		}
	}
	for _, bad := range []Resources{{CPUQuotaPercent: ptr(0.0)}, {CPUWeight: ptr(uint64(0))}, {MemoryMax: ptr(int64(0))},
		{TasksMax: ptr(int64(-2))}, {IOWeight: ptr(uint64(10001))}} {
		if _, err := v1.settings(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestWriteErrorNamesValueAndFile(t *testing.T) {
	dir := t.TempDir()
	err := writeBeneath(dir, dir, "cpu.max", "80000 100000") // no such file
	if err == nil || !strings.Contains(err.Error(), `"80000 100000"`) || !strings.Contains(err.Error(), filepath.Join(dir, "cpu.max")) {
		t.Errorf("err = %v", err)
	}
	if _, err := openBeneath(dir, dir, "../../etc/passwd", os.O_RDONLY); err == nil {
		t.Error("opened a file outside the mount")
	}
	e := &WriteError{Value: "1", File: "/sys/fs/cgroup/x/cgroup.kill", Err: os.ErrPermission}
	if e.Error() != `failed to write "1" to /sys/fs/cgroup/x/cgroup.kill: permission denied` || !errors.Is(e, os.ErrPermission) {
		t.Errorf("WriteError: %v", e)
	}
}
