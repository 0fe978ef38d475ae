package cgroups

import (
	"strings"
	"testing"
)

type wantLimit struct {
	version  int
	file     string
	enforced bool
	note     string // a substring of Note
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		prober  *fakeProber
		want    map[string]wantLimit
	}{
		{
			name: "this host: hybrid, v1 limits, no blkio weight", fixture: "hybrid-host", prober: hybridProber(),
			want: map[string]wantLimit{
				CPUQuota:    {1, "cpu.cfs_quota_us+cpu.cfs_period_us", true, "cpu.cfs_period_us=100000"},
				CPUWeight:   {1, "cpu.shares", true, "shares = weight*1024/100"},
				MemoryMax:   {1, "memory.limit_in_bytes", true, "/sys/fs/cgroup/memory/process_api/"},
				MemoryHigh:  {1, "memory.soft_limit_in_bytes", false, "no equivalent of memory.high"},
				IOWeight:    {1, "blkio.weight", false, "neither blkio.weight nor blkio.bfq.weight exists in a child cgroup of /sys/fs/cgroup/blkio"},
				TasksMax:    {1, "pids.max", true, "/sys/fs/cgroup/pids"},
				AllowedCPUs: {1, "cpuset.cpus", true, "cpuset.mems"},
			},
		},
		{
			name: "v2-only guest", fixture: "unified-guest",
			prober: unifiedProber("cpuset cpu io memory hugetlb pids rdma misc", "cpu memory"),
			want: map[string]wantLimit{
				CPUQuota:    {2, "cpu.max", true, "quota and period"},
				CPUWeight:   {2, "cpu.weight", true, "as is"},
				MemoryMax:   {2, "memory.max", true, "hard limit"},
				MemoryHigh:  {2, "memory.high", true, "throttle"},
				IOWeight:    {2, "io.weight", true, "io.cost"},
				TasksMax:    {2, "pids.max", true, "pids is not yet in /sys/fs/cgroup/tori.slice/cgroup.subtree_control"},
				AllowedCPUs: {2, "cpuset.cpus", true, "subset"},
			},
		},
		{
			name: "v2-only guest, only memory delegated by the parent", fixture: "unified-guest",
			prober: unifiedProber("memory", "memory"),
			want: map[string]wantLimit{
				CPUQuota:   {2, "cpu.max", false, "cpu.max needs the cpu controller: cpu is not in /sys/fs/cgroup/tori.slice/cgroup.controllers"},
				MemoryMax:  {2, "memory.max", true, "hard limit"},
				MemoryHigh: {2, "memory.high", true, "throttle"},
				IOWeight:   {2, "io.weight", false, "io is not in"},
			},
		},
		{
			name: "v2-only guest, cannot create cgroups", fixture: "unified-guest",
			prober: &fakeProber{files: unifiedProber("cpu memory", "").files},
			want: map[string]wantLimit{
				MemoryMax: {2, "memory.max", false, "cannot create a child cgroup under /sys/fs/cgroup/tori.slice"},
			},
		},
		{
			name: "legacy v1 with cfq", fixture: "legacy-v1", prober: legacyProber(),
			want: map[string]wantLimit{
				CPUQuota:   {1, "cpu.cfs_quota_us+cpu.cfs_period_us", true, "/sys/fs/cgroup/cpu,cpuacct/system.slice/tori.service"},
				MemoryHigh: {1, "memory.soft_limit_in_bytes", false, "global"},
				IOWeight:   {1, "blkio.weight", true, "IOWeight*500/100"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := detectFixture(t, tt.fixture, tt.prober)
			got := Limits(h)
			if len(got) != len(Directives) {
				t.Fatalf("%d limits, want %d", len(got), len(Directives))
			}
			for i, l := range got {
				if l.Directive != Directives[i] {
					t.Errorf("Limits[%d] = %s, want %s", i, l.Directive, Directives[i])
				}
				if l.Note == "" {
					t.Errorf("%s has no note", l.Directive)
				}
				w, ok := tt.want[l.Directive]
				if !ok {
					continue
				}
				if l.Version != w.version || l.File != w.file || l.Enforced != w.enforced || !strings.Contains(l.Note, w.note) {
					t.Errorf("%s = v%d %q enforced=%v %q\nwant v%d %q enforced=%v note containing %q",
						l.Directive, l.Version, l.File, l.Enforced, l.Note, w.version, w.file, w.enforced, w.note)
				}
			}
		})
	}
}

func TestLimitsBFQ(t *testing.T) {
	p := hybridProber()
	p.children["/sys/fs/cgroup/blkio"] = []string{"blkio.bfq.weight", "cgroup.procs", "tasks"}
	// This host: the bfq policy is loaded (the file exists) but the disk's scheduler is not bfq.
	l := Limits(detectFixture(t, "hybrid-host", p))[4]
	if l.Directive != IOWeight || l.Enforced || l.File != "blkio.bfq.weight" || !strings.Contains(l.Note, "/dev/vda 254:0 (/): none") {
		t.Errorf("IOWeight, bfq loaded but unused = %+v, want not enforced, naming /dev/vda and its scheduler", l)
	}
	p.files["/sys/dev/block/254:0/queue/scheduler"] = "none mq-deadline kyber [bfq]\n"
	l = Limits(detectFixture(t, "hybrid-host", p))[4]
	if !l.Enforced || l.File != "blkio.bfq.weight" || !strings.Contains(l.Note, "/dev/vda 254:0 (/): bfq") {
		t.Errorf("IOWeight with bfq on /dev/vda = %+v, want enforced by blkio.bfq.weight", l)
	}
}

func TestLimitsNoCFSBandwidth(t *testing.T) {
	p := hybridProber()
	p.children["/sys/fs/cgroup/cpu"] = []string{"cgroup.procs", "cpu.shares", "tasks"}
	h := detectFixture(t, "hybrid-host", p)
	l := Limits(h)[0]
	if l.Directive != CPUQuota || l.Enforced || !strings.Contains(l.Note, "CONFIG_CFS_BANDWIDTH") {
		t.Errorf("CPUQuota without cfs files = %+v", l)
	}
}

func TestConversions(t *testing.T) {
	for _, tt := range []struct{ weight, shares, blkio uint64 }{
		{1, 10, 10}, {100, 1024, 500}, {200, 2048, 1000}, {10000, 102400, 1000}, {0, 2, 10},
	} {
		if got := CPUWeightToShares(tt.weight); got != tt.shares {
			t.Errorf("CPUWeightToShares(%d) = %d, want %d", tt.weight, got, tt.shares)
		}
		if got := IOWeightToBlkio(tt.weight); got != tt.blkio {
			t.Errorf("IOWeightToBlkio(%d) = %d, want %d", tt.weight, got, tt.blkio)
		}
	}
	if got := CPUQuotaToMicros(80); got != 80000 {
		t.Errorf("CPUQuotaToMicros(80) = %d", got)
	}
	if got := CPUQuotaToMicros(250); got != 250000 {
		t.Errorf("CPUQuotaToMicros(250) = %d", got)
	}
}
