package cgroups

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProber stands in for the cgroup filesystem.
type fakeProber struct {
	files    map[string]string   // path -> contents
	children map[string][]string // dir -> files of a child cgroup; a dir not listed cannot have children
	probed   []string
}

func (f *fakeProber) ReadFile(path string) ([]byte, error) {
	if s, ok := f.files[path]; ok {
		return []byte(s), nil
	}
	return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
}

func (f *fakeProber) ProbeChild(dir string) ([]string, error) {
	f.probed = append(f.probed, dir)
	if files, ok := f.children[dir]; ok {
		return files, nil
	}
	return nil, &fs.PathError{Op: "mkdir", Path: dir + "/tori-probe-1-x", Err: fs.ErrPermission}
}

var (
	v1CPUFiles     = []string{"cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares", "tasks"}
	v1MemFiles     = []string{"cgroup.procs", "memory.limit_in_bytes", "memory.soft_limit_in_bytes", "tasks"}
	v1PIDsFiles    = []string{"cgroup.procs", "pids.max", "tasks"}
	v1CPUSetFiles  = []string{"cgroup.procs", "cpuset.cpus", "cpuset.mems", "tasks"}
	v1BlkioNoBFQ   = []string{"blkio.throttle.read_bps_device", "cgroup.procs", "tasks"}
	v1BlkioCFQ     = []string{"blkio.throttle.read_bps_device", "blkio.weight", "cgroup.procs", "tasks"}
	v1FreezerFiles = []string{"cgroup.procs", "freezer.state", "tasks"}
	v2ChildFiles   = []string{"cgroup.controllers", "cgroup.freeze", "cgroup.kill", "cgroup.procs", "cgroup.subtree_control", "cpu.stat"}
)

func hybridProber() *fakeProber {
	return &fakeProber{
		files: map[string]string{
			"/sys/fs/cgroup/unified/cgroup.controllers":     "hugetlb\n",
			"/sys/fs/cgroup/unified/cgroup.subtree_control": "\n",
			"/sys/dev/block/254:0/queue/scheduler":          "[none] mq-deadline kyber bfq\n",
		},
		children: map[string][]string{
			"/sys/fs/cgroup/cpu":     v1CPUFiles,
			"/sys/fs/cgroup/cpuacct": {"cgroup.procs", "cpuacct.usage", "tasks"},
			"/sys/fs/cgroup/cpuset":  v1CPUSetFiles,
			"/sys/fs/cgroup/memory/process_api/16944ddd4595db97467f7194a438c26f": v1MemFiles,
			"/sys/fs/cgroup/pids":    v1PIDsFiles,
			"/sys/fs/cgroup/blkio":   v1BlkioNoBFQ,
			"/sys/fs/cgroup/freezer": v1FreezerFiles,
			"/sys/fs/cgroup/unified": v2ChildFiles,
		},
	}
}

func unifiedProber(controllers, subtree string) *fakeProber {
	return &fakeProber{
		files: map[string]string{
			"/sys/fs/cgroup/tori.slice/cgroup.controllers":     controllers + "\n",
			"/sys/fs/cgroup/tori.slice/cgroup.subtree_control": subtree + "\n",
			"/sys/fs/cgroup/tori.slice/cgroup.freeze":          "0\n",
		},
		children: map[string][]string{"/sys/fs/cgroup/tori.slice": v2ChildFiles},
	}
}

func legacyProber() *fakeProber {
	own := "/system.slice/tori.service"
	return &fakeProber{
		// A partition's queue is its disk's: found through ../queue.
		files: map[string]string{"/sys/dev/block/253:0/../queue/scheduler": "noop deadline [cfq]\n"},
		children: map[string][]string{
			"/sys/fs/cgroup/cpu,cpuacct" + own: v1CPUFiles,
			"/sys/fs/cgroup/memory" + own:      v1MemFiles,
			"/sys/fs/cgroup/blkio" + own:       v1BlkioCFQ,
			"/sys/fs/cgroup/cpuset":            v1CPUSetFiles,
			"/sys/fs/cgroup/pids" + own:        v1PIDsFiles,
			"/sys/fs/cgroup/freezer":           v1FreezerFiles,
		},
	}
}

func detectFixture(t *testing.T, name string, p Prober) *Host {
	t.Helper()
	mi, err := os.Open(filepath.Join("testdata", name+".mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	cg, err := os.Open(filepath.Join("testdata", name+".cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	h, err := DetectFrom(mi, cg, p)
	if err != nil {
		t.Fatalf("DetectFrom(%s): %v", name, err)
	}
	return h
}

type wantCtl struct {
	version   int
	kernel    string
	mount     string
	path      string
	dir       string
	usable    bool
	delegated bool
}

func TestDetectFrom(t *testing.T) {
	const own = "/process_api/16944ddd4595db97467f7194a438c26f"
	tests := []struct {
		name         string
		fixture      string
		prober       *fakeProber
		mode         Mode
		unifiedMount string
		unifiedPath  string
		ctl          map[Controller]wantCtl
	}{
		{
			name: "this host: hybrid", fixture: "hybrid-host", prober: hybridProber(),
			mode: Hybrid, unifiedMount: "/sys/fs/cgroup/unified", unifiedPath: "/",
			ctl: map[Controller]wantCtl{
				CPU:     {1, "cpu", "/sys/fs/cgroup/cpu", "/", "/sys/fs/cgroup/cpu", true, true},
				CPUAcct: {1, "cpuacct", "/sys/fs/cgroup/cpuacct", "/", "/sys/fs/cgroup/cpuacct", true, true},
				CPUSet:  {1, "cpuset", "/sys/fs/cgroup/cpuset", "/", "/sys/fs/cgroup/cpuset", true, true},
				Memory:  {1, "memory", "/sys/fs/cgroup/memory", own, "/sys/fs/cgroup/memory" + own, true, true},
				PIDs:    {1, "pids", "/sys/fs/cgroup/pids", "/", "/sys/fs/cgroup/pids", true, true},
				IO:      {1, "blkio", "/sys/fs/cgroup/blkio", "/", "/sys/fs/cgroup/blkio", true, true},
				Freezer: {1, "freezer", "/sys/fs/cgroup/freezer", "/", "/sys/fs/cgroup/freezer", true, true},
			},
		},
		{
			name: "v2-only guest", fixture: "unified-guest",
			prober: unifiedProber("cpuset cpu io memory hugetlb pids rdma misc", "cpu memory"),
			mode:   Unified, unifiedMount: "/sys/fs/cgroup", unifiedPath: "/tori.slice",
			ctl: map[Controller]wantCtl{
				CPU:     {2, "cpu", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				CPUAcct: {2, "cpu.stat", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				CPUSet:  {2, "cpuset", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				Memory:  {2, "memory", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				PIDs:    {2, "pids", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				IO:      {2, "io", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				Freezer: {2, "cgroup.freeze", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
			},
		},
		{
			name: "v2-only guest, parent delegates only memory and pids", fixture: "unified-guest",
			prober: unifiedProber("memory pids", ""),
			mode:   Unified, unifiedMount: "/sys/fs/cgroup", unifiedPath: "/tori.slice",
			ctl: map[Controller]wantCtl{
				CPU:    {2, "cpu", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", false, false},
				Memory: {2, "memory", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, true},
				IO:     {2, "io", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", false, false},
			},
		},
		{
			name: "v2-only guest, not delegated", fixture: "unified-guest",
			prober: &fakeProber{files: unifiedProber("cpu memory pids", "").files},
			mode:   Unified, unifiedMount: "/sys/fs/cgroup", unifiedPath: "/tori.slice",
			ctl: map[Controller]wantCtl{
				CPU:     {2, "cpu", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, false},
				Freezer: {2, "cgroup.freeze", "/sys/fs/cgroup", "/tori.slice", "/sys/fs/cgroup/tori.slice", true, false},
			},
		},
		{
			name: "legacy v1, cpu and cpuacct co-mounted", fixture: "legacy-v1", prober: legacyProber(),
			mode: Legacy,
			ctl: map[Controller]wantCtl{
				CPU:     {1, "cpu", "/sys/fs/cgroup/cpu,cpuacct", "/system.slice/tori.service", "/sys/fs/cgroup/cpu,cpuacct/system.slice/tori.service", true, true},
				CPUAcct: {1, "cpuacct", "/sys/fs/cgroup/cpu,cpuacct", "/system.slice/tori.service", "/sys/fs/cgroup/cpu,cpuacct/system.slice/tori.service", true, true},
				CPUSet:  {1, "cpuset", "/sys/fs/cgroup/cpuset", "/", "/sys/fs/cgroup/cpuset", true, true},
				IO:      {1, "blkio", "/sys/fs/cgroup/blkio", "/system.slice/tori.service", "/sys/fs/cgroup/blkio/system.slice/tori.service", true, true},
				Freezer: {1, "freezer", "/sys/fs/cgroup/freezer", "/", "/sys/fs/cgroup/freezer", true, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := detectFixture(t, tt.fixture, tt.prober)
			if h.Mode != tt.mode {
				t.Errorf("Mode = %v, want %v", h.Mode, tt.mode)
			}
			if h.UnifiedMount != tt.unifiedMount || h.UnifiedPath != tt.unifiedPath {
				t.Errorf("unified = %q %q, want %q %q", h.UnifiedMount, h.UnifiedPath, tt.unifiedMount, tt.unifiedPath)
			}
			if len(h.Controllers) != len(Controllers) {
				t.Fatalf("%d controllers, want %d", len(h.Controllers), len(Controllers))
			}
			for i, ci := range h.Controllers {
				if ci.Name != Controllers[i] {
					t.Errorf("Controllers[%d] = %s, want %s", i, ci.Name, Controllers[i])
				}
			}
			for c, w := range tt.ctl {
				ci, ok := h.Controller(c)
				if !ok {
					t.Fatalf("no entry for %s", c)
				}
				got := wantCtl{ci.Version, ci.KernelName, ci.Mount, ci.Path, ci.Dir, ci.Usable, ci.Delegated}
				if got != w {
					t.Errorf("%s = %+v, want %+v (reason %q)", c, got, w, ci.Reason)
				}
				if (!ci.Usable || !ci.Delegated) && ci.Reason == "" {
					t.Errorf("%s is not usable/delegated but has no reason", c)
				}
			}
			// Co-mounted hierarchies are probed once; every probe is in one of our own cgroups.
			seen := map[string]bool{}
			for _, d := range tt.prober.probed {
				if seen[d] {
					t.Errorf("probed %s twice", d)
				}
				seen[d] = true
			}
		})
	}
}

func TestDetectFromReasons(t *testing.T) {
	h := detectFixture(t, "hybrid-host", hybridProber())
	// The v2 hierarchy of this host offers only hugetlb; controllers not found in v1 would say why.
	if got := strings.Join(h.UnifiedControllers, " "); got != "hugetlb" {
		t.Errorf("UnifiedControllers = %q, want hugetlb", got)
	}
	h = detectFixture(t, "unified-guest", unifiedProber("memory pids", ""))
	ci, _ := h.Controller(CPU)
	for _, want := range []string{"/sys/fs/cgroup/tori.slice/cgroup.controllers", `"memory pids"`} {
		if !strings.Contains(ci.Reason, want) {
			t.Errorf("cpu reason %q does not mention %s", ci.Reason, want)
		}
	}
	mem, _ := h.Controller(Memory)
	if mem.SubtreeEnabled {
		t.Errorf("memory SubtreeEnabled with empty subtree_control")
	}
}

func TestDetectFromErrors(t *testing.T) {
	tests := []struct {
		name, mountinfo, cgroup, want string
		is                            error
	}{
		{"no cgroup mounts", "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n", "0::/\n", "no cgroup2 mount", ErrNoCgroups},
		{"bad cgroup line", "17 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "garbage\n", `"garbage" is not ID:CONTROLLERS:PATH`, nil},
		{"bad hierarchy id", "17 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "x::/\n", `hierarchy ID "x"`, nil},
		{"bad mountinfo", "not mountinfo\n", "0::/\n", "parse mountinfo", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DetectFrom(strings.NewReader(tt.mountinfo), strings.NewReader(tt.cgroup), &fakeProber{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
		})
	}
}

// A container that sees a bind mount of its own sub-tree at /sys/fs/cgroup (mount root /docker/abc).
func TestDetectFromBindMountedSubtree(t *testing.T) {
	mi := "17 1 0:26 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"
	p := &fakeProber{
		files:    map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n"},
		children: map[string][]string{"/sys/fs/cgroup": v2ChildFiles},
	}
	h, err := DetectFrom(strings.NewReader(mi), strings.NewReader("0::/docker/abc\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	ci, _ := h.Controller(Memory)
	if ci.Dir != "/sys/fs/cgroup" || !ci.Delegated {
		t.Errorf("memory = %+v, want Dir /sys/fs/cgroup, delegated", ci)
	}
	// Our cgroup outside the mounted sub-tree: not usable, and the reason says where.
	h, err = DetectFrom(strings.NewReader(mi), strings.NewReader("0::/other\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	ci, _ = h.Controller(Memory)
	if ci.Usable || !strings.Contains(ci.Reason, "/other is outside every cgroup2 mount") {
		t.Errorf("memory = %+v, want unusable with a reason naming /other", ci)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Unified: "unified (v2)", Hybrid: "hybrid (v1 + v2)", Legacy: "legacy (v1)", 0: "unknown (0)"} {
		if got := m.String(); got != want {
			t.Errorf("Mode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}

func isFS(t *testing.T, path string, magic int64) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == magic
}

// TestDetectLive runs on the real host. It creates (and removes) one empty child cgroup beneath our own in
// each hierarchy.
func TestDetectLive(t *testing.T) {
	h, err := Detect()
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	for _, ci := range h.Controllers {
		t.Logf("%-8s v%d %-9s dir=%s usable=%v delegated=%v %s", ci.Name, ci.Version, ci.KernelName, ci.Dir, ci.Usable, ci.Delegated, ci.Reason)
	}
	for _, l := range Limits(h) {
		t.Logf("%-12s v%d %-36s enforced=%v: %s", l.Directive, l.Version, l.File, l.Enforced, l.Note)
	}
	if !isFS(t, "/sys/fs/cgroup/unified", unix.CGROUP2_SUPER_MAGIC) {
		t.Skipf("/sys/fs/cgroup/unified is not a cgroup2 mount: not a hybrid host (Detect says %v)", h.Mode)
	}
	if h.Mode != Hybrid {
		t.Fatalf("/sys/fs/cgroup/unified is cgroup2, Mode = %v, want %v", h.Mode, Hybrid)
	}
	if h.UnifiedMount != "/sys/fs/cgroup/unified" {
		t.Errorf("UnifiedMount = %q", h.UnifiedMount)
	}
	if isFS(t, "/sys/fs/cgroup/memory", unix.CGROUP_SUPER_MAGIC) {
		ci, _ := h.Controller(Memory)
		if ci.Version != 1 || ci.Mount != "/sys/fs/cgroup/memory" {
			t.Errorf("memory = v%d at %s, want v1 at /sys/fs/cgroup/memory", ci.Version, ci.Mount)
		}
		if os.Geteuid() == 0 && !ci.Delegated {
			t.Errorf("as root, memory not delegated: %s", ci.Reason)
		}
	}
}

func TestOSProberProbeChild(t *testing.T) {
	dir := t.TempDir() // a plain directory stands in for a cgroup: same mkdir/list/rmdir
	files, err := OSProber{}.ProbeChild(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Errorf("files = %v, want none in a plain dir", files)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("probe left %v in %s", left, dir)
	}
	if _, err := (OSProber{}).ProbeChild(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("probe of a missing dir: err = %v, want ErrNotExist", err)
	}
}

func TestActiveScheduler(t *testing.T) {
	for in, want := range map[string]string{
		"[none] mq-deadline kyber bfq\n": "none",
		"none mq-deadline kyber [bfq]\n": "bfq",
		"noop deadline [cfq]":            "cfq",
		"none\n":                         "none",
	} {
		if got := activeScheduler(in); got != want {
			t.Errorf("activeScheduler(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDisks(t *testing.T) {
	h := detectFixture(t, "hybrid-host", hybridProber())
	want := []Disk{{Dev: "254:0", Source: "/dev/vda", Mount: "/", Scheduler: "none"}}
	if len(h.Disks) != 1 || h.Disks[0] != want[0] {
		t.Errorf("Disks = %+v, want %+v", h.Disks, want)
	}
}
