//go:build linux

package hostcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/runtime/hostfacts"
)

// cgProber stands in for the cgroup filesystem (see cgroups.Prober).
type cgProber struct {
	files    map[string]string
	children map[string][]string // dirs where a child cgroup can be made, with its files
}

func (p cgProber) ReadFile(path string) ([]byte, error) {
	if s, ok := p.files[path]; ok {
		return []byte(s), nil
	}
	return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
}

func (p cgProber) ProbeChild(dir string) ([]string, error) {
	if f, ok := p.children[dir]; ok {
		return f, nil
	}
	return nil, &fs.PathError{Op: "mkdir", Path: dir + "/tori-probe-1-0", Err: fs.ErrPermission}
}

const hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridSelf = "8:pids:/\n7:blkio:/\n6:freezer:/\n4:memory:/process_api/x\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"

func hybridHost(t *testing.T) *cgroups.Host {
	t.Helper()
	p := cgProber{
		files: map[string]string{"/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"},
		children: map[string][]string{
			"/sys/fs/cgroup/cpu":                  {"cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"},
			"/sys/fs/cgroup/cpuacct":              {"cpuacct.usage"},
			"/sys/fs/cgroup/cpuset":               {"cpuset.cpus", "cpuset.mems"},
			"/sys/fs/cgroup/memory/process_api/x": {"memory.limit_in_bytes", "memory.soft_limit_in_bytes"},
			"/sys/fs/cgroup/pids":                 {"pids.max"},
			"/sys/fs/cgroup/blkio":                {"blkio.throttle.read_bps_device"},
			"/sys/fs/cgroup/freezer":              {"freezer.state"},
			"/sys/fs/cgroup/unified":              {"cgroup.procs"},
		},
	}
	h, err := cgroups.DetectFrom(strings.NewReader(hybridMountinfo), strings.NewReader(hybridSelf), p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// unifiedHost is a cgroup-v2-only host where our cgroup is /tori; controllers are those its parent gave us, and
// delegated says whether we can make children.
func unifiedHost(t *testing.T, controllers string, delegated bool) *cgroups.Host {
	t.Helper()
	p := cgProber{files: map[string]string{
		"/sys/fs/cgroup/tori/cgroup.controllers":     controllers,
		"/sys/fs/cgroup/tori/cgroup.subtree_control": controllers,
	}}
	if delegated {
		p.children = map[string][]string{"/sys/fs/cgroup/tori": {"cgroup.freeze", "cgroup.procs"}}
	}
	mi := "17 15 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
	h, err := cgroups.DetectFrom(strings.NewReader(mi), strings.NewReader("0::/tori\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func legacyHost(t *testing.T) *cgroups.Host {
	t.Helper()
	mi := "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
	p := cgProber{children: map[string][]string{"/sys/fs/cgroup/memory": {"memory.limit_in_bytes"}}}
	h, err := cgroups.DetectFrom(strings.NewReader(mi), strings.NewReader("4:memory:/\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fakeEnv is a healthy root host with a hybrid cgroup layout and python3 3.10.12 in the capsule's PATH.
func fakeEnv(t *testing.T) hostEnv {
	t.Helper()
	sys := t.TempDir()
	writeExec(t, filepath.Join(sys, "python3"), "#!/bin/sh\necho 3.10.12\n")
	h := hybridHost(t)
	return hostEnv{
		kernelRelease: func() (string, error) { return "6.1.0-26-amd64", nil },
		euid:          func() int { return 0 },
		overlayCheck:  func(string) error { return nil },
		scratchDir:    "/tmp",
		detect:        func() (*cgroups.Host, error) { return h, nil },
		systemPath:    sys,
		pythonVersion: func(string) (string, error) { return "3.10.12", nil },
	}
}

func writeExec(t *testing.T, path, script string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func find(t *testing.T, fs []Finding, check string) Finding {
	t.Helper()
	for _, f := range fs {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no %q finding in %+v", check, fs)
	return Finding{}
}

func checks(fs []Finding) string {
	var names []string
	for _, f := range fs {
		names = append(names, f.Check)
	}
	return strings.Join(names, " ")
}

func TestCheckHostOrder(t *testing.T) {
	e := fakeEnv(t)
	state := t.TempDir()
	got := checks(e.check(HostOptions{StateDir: state, Python: "3.10"}))
	want := "kernel root overlay cgroup-mode limit/CPUQuota limit/CPUWeight limit/MemoryMax limit/MemoryHigh " +
		"limit/IOWeight limit/TasksMax limit/AllowedCPUs cgroup-delegation state-dir python3"
	if got != want {
		t.Errorf("checks =\n%s\nwant\n%s", got, want)
	}
	// Only the directives asked for, in the fixed order, then unknown ones; no python3 when none is asked.
	fs := e.check(HostOptions{StateDir: state, Directives: []string{"MemoryMax", "Bogus", "CPUQuota"}})
	got = checks(fs)
	want = "kernel root overlay cgroup-mode limit/CPUQuota limit/MemoryMax limit/Bogus cgroup-delegation state-dir"
	if got != want {
		t.Errorf("checks =\n%s\nwant\n%s", got, want)
	}
	if f := find(t, fs, "limit/Bogus"); f.Status != StatusWarn || !strings.Contains(f.Message, `"Bogus"`) {
		t.Errorf("unknown directive: %+v", f)
	}
	for _, f := range fs {
		if f.Message == "" || f.Status != StatusPass && f.Hint == "" {
			t.Errorf("finding without a message or, not passing, a hint: %+v", f)
		}
	}
}

func TestCheckKernel(t *testing.T) {
	tests := []struct {
		release string
		err     error
		status  Status
		msg     string
	}{
		{"4.14.0-1-amd64", nil, StatusFail, "kernel 4.14.0-1-amd64 is older than 4.18"},
		{"4.18.0-553.el8_10.x86_64", nil, StatusWarn, "need 5.11"},
		{"5.10.0-28-amd64", nil, StatusWarn, "overlay mounts inside user namespaces"},
		{"5.11.0", nil, StatusPass, "kernel 5.11.0"},
		{"6.18.44-fc-v657", nil, StatusPass, "kernel 6.18.44-fc-v657"},
		{"5.4rc2", nil, StatusWarn, "user namespaces"},
		{"garbage", nil, StatusWarn, `kernel release "garbage"`},
		{"", errors.New("uname: operation not permitted"), StatusFail, "uname: operation not permitted"},
	}
	for _, tt := range tests {
		e := fakeEnv(t)
		e.kernelRelease = func() (string, error) { return tt.release, tt.err }
		f := e.checkKernel()
		if f.Status != tt.status || !strings.Contains(f.Message, tt.msg) {
			t.Errorf("%q: %+v, want %s with %q", tt.release, f, tt.status, tt.msg)
		}
	}
}

func TestCheckRoot(t *testing.T) {
	e := fakeEnv(t)
	if f := e.checkRoot(); f.Status != StatusPass {
		t.Errorf("root: %+v", f)
	}
	e.euid = func() int { return 1000 }
	f := e.checkRoot()
	if f.Status != StatusWarn || !strings.Contains(f.Message, "uid 1000") || !strings.Contains(f.Hint, "run as root to run capsules") {
		t.Errorf("uid 1000: %+v", f)
	}
}

func TestCheckOverlay(t *testing.T) {
	mountErr := func(op string, errno unix.Errno) error {
		return &overlay.MountError{Op: op, Source: "overlay", Target: "/tmp/x/merged", FSType: "overlay", Data: "lowerdir=/tmp/x/lower", Err: errno}
	}
	tests := []struct {
		err    error
		status Status
		msg    string
		hint   string
	}{
		{nil, StatusPass, "overlay works", ""},
		{fmt.Errorf("%w: /proc/filesystems lists overlay, but as uid 1000 a test mount was not tried", overlay.ErrNeedRoot), StatusWarn, "uid 1000", "as root"},
		{fmt.Errorf("%w: /proc/filesystems does not list overlay", overlay.ErrNotSupported), StatusFail, "does not list overlay", "modprobe overlay"},
		{mountErr("mount", unix.EPERM), StatusFail, "lowerdir=/tmp/x/lower", "CAP_SYS_ADMIN"},
		{mountErr("umount", unix.EBUSY), StatusFail, "/tmp/x/merged", "findmnt /tmp/x/merged"},
		{mountErr("mount", unix.ELOOP), StatusFail, "too many levels", "dmesg"},
	}
	for _, tt := range tests {
		e := fakeEnv(t)
		e.overlayCheck = func(dir string) error {
			if dir != "/tmp" {
				t.Errorf("overlay check under %q, want the scratch dir /tmp", dir)
			}
			return tt.err
		}
		f := e.checkOverlay()
		if f.Status != tt.status || !strings.Contains(f.Message, tt.msg) || !strings.Contains(f.Hint, tt.hint) {
			t.Errorf("%v: %+v, want %s, message with %q, hint with %q", tt.err, f, tt.status, tt.msg, tt.hint)
		}
	}
}

func TestCheckCgroupMode(t *testing.T) {
	tests := []struct {
		name   string
		host   *cgroups.Host
		err    error
		status Status
		msg    string
	}{
		{"hybrid", hybridHost(t), nil, StatusPass, `hybrid: limits go through cgroup v1 (cpu, cpuacct, cpuset, memory, pids, blkio, freezer); cgroup2 at /sys/fs/cgroup/unified offers only "hugetlb"`},
		{"unified", unifiedHost(t, "cpu memory pids", true), nil, StatusPass, "unified: cgroup v2 is used (mounted at /sys/fs/cgroup)"},
		{"legacy", legacyHost(t), nil, StatusPass, "legacy: cgroup v1 only"},
		{"none", nil, fmt.Errorf("detect cgroups: %w", cgroups.ErrNoCgroups), StatusFail, "no cgroup filesystem mounted"},
	}
	for _, tt := range tests {
		f := checkCgroupMode(tt.host, tt.err)
		if f.Status != tt.status || !strings.Contains(f.Message, tt.msg) {
			t.Errorf("%s: %+v, want %s with %q", tt.name, f, tt.status, tt.msg)
		}
	}
}

func TestCheckLimits(t *testing.T) {
	tests := []struct {
		name      string
		host      *cgroups.Host
		euid      int
		directive string
		status    Status
		msg       string
		hint      string
	}{
		{"hybrid MemoryMax", hybridHost(t), 0, "MemoryMax", StatusPass, "enforced by cgroup v1 memory.limit_in_bytes", ""},
		{"hybrid MemoryHigh", hybridHost(t), 0, "MemoryHigh", StatusWarn, "memory.soft_limit_in_bytes", "set MemoryMax"},
		{"hybrid IOWeight", hybridHost(t), 0, "IOWeight", StatusWarn, "neither blkio.weight nor blkio.bfq.weight", "bfq"},
		{"hybrid CPUWeight", hybridHost(t), 0, "CPUWeight", StatusPass, "shares = weight*1024/100", ""},
		{"unified MemoryHigh", unifiedHost(t, "cpu memory pids", true), 0, "MemoryHigh", StatusPass, "enforced by cgroup v2 memory.high", ""},
		{"unified, cpu not given", unifiedHost(t, "memory pids", true), 0, "CPUQuota", StatusWarn, "cpu is not in /sys/fs/cgroup/tori/cgroup.controllers",
			"echo +cpu > /sys/fs/cgroup/cgroup.subtree_control"},
		{"unified, not delegated, root", unifiedHost(t, "memory", false), 0, "MemoryMax", StatusWarn, "cannot create a child cgroup under /sys/fs/cgroup/tori", "writable"},
		{"unified, not delegated, user", unifiedHost(t, "memory", false), 1000, "MemoryMax", StatusWarn, "cannot create a child cgroup", "Delegate=yes"},
		{"legacy, no cpu hierarchy", legacyHost(t), 0, "CPUQuota", StatusWarn, "no cgroup hierarchy provides the cpu controller", "mount"},
	}
	for _, tt := range tests {
		e := fakeEnv(t)
		e.euid = func() int { return tt.euid }
		fs := e.checkLimits(tt.host, nil, []string{tt.directive})
		if len(fs) != 1 {
			t.Fatalf("%s: %d findings, want 1", tt.name, len(fs))
		}
		f := fs[0]
		if f.Check != "limit/"+tt.directive || f.Status != tt.status || !strings.Contains(f.Message, tt.msg) || !strings.Contains(f.Hint, tt.hint) {
			t.Errorf("%s: %+v\nwant %s, message with %q, hint with %q", tt.name, f, tt.status, tt.msg, tt.hint)
		}
	}
	// Detection failed: every directive is reported, as not checkable.
	fs := fakeEnv(t).checkLimits(nil, cgroups.ErrNoCgroups, nil)
	if len(fs) != len(cgroups.Directives) || fs[0].Status != StatusWarn {
		t.Errorf("after a detection error: %+v", fs)
	}
}

func TestCheckDelegation(t *testing.T) {
	tests := []struct {
		name   string
		host   *cgroups.Host
		err    error
		status Status
		msg    string
	}{
		{"hybrid, all", hybridHost(t), nil, StatusPass, "memory (v1 /sys/fs/cgroup/memory/process_api/x)"},
		{"unified, some", unifiedHost(t, "memory pids", true), nil, StatusWarn, "not for cpu: cpu is not in"},
		{"unified, none", unifiedHost(t, "memory pids", false), nil, StatusFail, "for any controller"},
		{"detection failed", nil, cgroups.ErrNoCgroups, StatusFail, "detection failed"},
	}
	for _, tt := range tests {
		f := fakeEnv(t).checkDelegation(tt.host, tt.err)
		if f.Check != "cgroup-delegation" || f.Status != tt.status || !strings.Contains(f.Message, tt.msg) {
			t.Errorf("%s: %+v, want %s with %q", tt.name, f, tt.status, tt.msg)
		}
	}
}

func TestCheckStateDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		status     Status
		msg        string
	}{
		{"exists", dir, StatusPass, "exists and is writable"},
		{"to be created", filepath.Join(dir, "a", "b", "state"), StatusPass, "it can be created (" + dir + " is writable)"},
		{"a file", file, StatusFail, "exists but is not a directory"},
		{"under a file", filepath.Join(file, "state"), StatusFail, "not a directory"},
	}
	for _, tt := range tests {
		f := checkStateDir(tt.path)
		if f.Status != tt.status || !strings.Contains(f.Message, tt.msg) || !strings.Contains(f.Message, tt.path) {
			t.Errorf("%s: %+v, want %s with %q", tt.name, f, tt.status, tt.msg)
		}
		if f.Status != StatusPass && !strings.Contains(f.Hint, "TORI_STATE_ROOT") {
			t.Errorf("%s: hint %q", tt.name, f.Hint)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("the write test left files in %s: %v", dir, left)
	}
}

// A read-only mount is what permission bits do not show to root: only a real write finds it.
func TestCheckStateDirReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a read-only tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tori-test", dir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Fatalf("mount read-only tmpfs on %s: %v", dir, err)
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}()
	for _, p := range []string{dir, filepath.Join(dir, "state")} {
		f := checkStateDir(p)
		if f.Status != StatusFail || !strings.Contains(f.Message, "read-only file system") {
			t.Errorf("%s on a read-only mount: %+v", p, f)
		}
	}
}

func TestCheckPython(t *testing.T) {
	tests := []struct {
		wanted, have string
		status       Status
		msg, hint    string
	}{
		{"3.10", "3.10.12", StatusPass, "capsule declares 3.10, host has 3.10.12", ""},
		{"3.10", "3.11.2", StatusWarn, "capsule declares 3.10, host has no python3.10 but 3.11.2", `declare python: "3.11"`},
		{"3.12", "3.11.2", StatusFail, "older or another major version", "install Python 3.12"},
		{"3.10", "4.0.1", StatusFail, "another major", "install"},
		{"3.10", "2.7.18", StatusFail, "another major", "install"},
		{"3.10.4", "3.10.12", StatusPass, "host has 3.10.12", ""},
		{"3", "3.11.2", StatusFail, `"3" is not a version like 3.10`, "MAJOR.MINOR"},
		{"3.10", "Python 3.10", StatusFail, "cannot read", "CPython"},
	}
	for _, tt := range tests {
		e := fakeEnv(t)
		var ran string
		e.pythonVersion = func(bin string) (string, error) { ran = bin; return tt.have, nil }
		f := e.checkPython(tt.wanted)
		if f.Check != "python3" || f.Status != tt.status || !strings.Contains(f.Message, tt.msg) || !strings.Contains(f.Hint, tt.hint) {
			t.Errorf("want %s, have %s: %+v\nwant %s, message with %q, hint with %q", tt.wanted, tt.have, f, tt.status, tt.msg, tt.hint)
		}
		if ran != "" && ran != filepath.Join(e.systemPath, "python3") {
			t.Errorf("ran %s, want the python3 of the capsule's PATH %s", ran, e.systemPath)
		}
	}

	// Missing from the system folders, present on the caller's PATH (a pyenv shim, say): fail, and say so.
	e := fakeEnv(t)
	e.systemPath = t.TempDir() + ":" + t.TempDir()
	shims := t.TempDir()
	writeExec(t, filepath.Join(shims, "python3"), "#!/bin/sh\necho 3.10.0\n")
	e.callerPath = shims
	f := e.checkPython("3.10")
	if f.Status != StatusFail || f.Hint != "apt-get install python3" || !strings.Contains(f.Message, filepath.Join(shims, "python3")+", is not visible to capsules") {
		t.Errorf("missing python3: %+v", f)
	}

	// The interpreter fails.
	e = fakeEnv(t)
	e.pythonVersion = func(string) (string, error) { return "", errors.New("exit status 1: boom") }
	if f := e.checkPython("3.10"); f.Status != StatusFail || !strings.Contains(f.Message, "boom") {
		t.Errorf("failing python3: %+v", f)
	}
}

func TestLookPathIn(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(a, "python3"), nil, 0o644); err != nil { // not executable
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(b, "x"), 0o755); err != nil { // a directory
		t.Fatal(err)
	}
	writeExec(t, filepath.Join(b, "python3"), "#!/bin/sh\n")
	got, err := hostfacts.LookPathIn("python3", a+"::"+b)
	if err != nil || got != filepath.Join(b, "python3") {
		t.Errorf("lookPathIn = %q, %v; want %s", got, err, filepath.Join(b, "python3"))
	}
	if _, err := hostfacts.LookPathIn("x", b); err == nil || !strings.Contains(err.Error(), "x not found in "+b) {
		t.Errorf("a directory is not a program: err = %v", err)
	}
}

func TestPythonVersionRunner(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	writeExec(t, good, "#!/bin/sh\n[ \"$1\" = -c ] || exit 9\necho 3.10.4\n")
	bad := filepath.Join(dir, "bad")
	writeExec(t, bad, "#!/bin/sh\necho 'ModuleNotFoundError: no sys' >&2\nexit 1\n")
	slow := filepath.Join(dir, "slow")
	writeExec(t, slow, "#!/bin/sh\nexec sleep 10\n")
	run := hostfacts.PythonVersionRunner(300 * time.Millisecond)

	if v, err := run(good); err != nil || v != "3.10.4" {
		t.Errorf("good: %q, %v", v, err)
	}
	if _, err := run(bad); err == nil || !strings.Contains(err.Error(), "ModuleNotFoundError") || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad: err = %v, want the program and its stderr", err)
	}
	start := time.Now()
	if _, err := run(slow); err == nil || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Errorf("slow: err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow took %s despite a 300ms timeout", d)
	}
}

func TestWorstStatus(t *testing.T) {
	p, w, f := Finding{Status: StatusPass}, Finding{Status: StatusWarn}, Finding{Status: StatusFail}
	for _, tt := range []struct {
		fs   []Finding
		want Status
	}{{nil, StatusPass}, {[]Finding{p, p}, StatusPass}, {[]Finding{p, w}, StatusWarn}, {[]Finding{w, f, p}, StatusFail}} {
		if got := WorstStatus(tt.fs); got != tt.want {
			t.Errorf("WorstStatus(%v) = %s, want %s", tt.fs, got, tt.want)
		}
	}
}

func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == magic
}

// TestCheckHostLive runs every check on this host (as root it mounts a throwaway overlay and creates and
// removes empty child cgroups beneath our own).
func TestCheckHostLive(t *testing.T) {
	fs := CheckHost(HostOptions{StateDir: filepath.Join(t.TempDir(), "state"), Python: "3.11"})
	for _, f := range fs {
		t.Logf("%-18s %-4s %s | %s", f.Check, f.Status, f.Message, f.Hint)
	}
	f := find(t, fs, "cgroup-mode")
	if !isFS("/sys/fs/cgroup/unified", unix.CGROUP2_SUPER_MAGIC) || !isFS("/sys/fs/cgroup/memory", unix.CGROUP_SUPER_MAGIC) {
		t.Skipf("not a hybrid host (no cgroup2 at /sys/fs/cgroup/unified beside a v1 memory hierarchy); cgroup-mode says %q", f.Message)
	}
	if f.Status != StatusPass || !strings.HasPrefix(f.Message, "hybrid: limits go through cgroup v1") {
		t.Errorf("on a hybrid host the cgroup finding is %+v", f)
	}
	if os.Geteuid() == 0 {
		if f := find(t, fs, "overlay"); f.Status != StatusPass {
			t.Errorf("as root on a host with overlay: %+v", f)
		}
		if f := find(t, fs, "limit/MemoryMax"); f.Status != StatusPass || !strings.Contains(f.Message, "memory.limit_in_bytes") {
			t.Errorf("MemoryMax on a hybrid host as root: %+v", f)
		}
	}
}
