package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// ErrNoCgroups is returned by Detect and DetectFrom when no cgroup filesystem (v1 or v2) is mounted.
var ErrNoCgroups = errors.New("no cgroup filesystem mounted")

// Mode is the way the host's cgroup hierarchies are arranged.
type Mode int

const (
	// Unified: only cgroup2 is mounted (usually at /sys/fs/cgroup); every controller is a v2 controller.
	Unified Mode = iota + 1
	// Hybrid: cgroup2 is mounted (usually at /sys/fs/cgroup/unified) beside v1 hierarchies that hold the
	// resource controllers; limits go through v1.
	Hybrid
	// Legacy: only cgroup v1 hierarchies are mounted.
	Legacy
)

// String returns "unified (v2)", "hybrid (v1 + v2)" or "legacy (v1)".
func (m Mode) String() string {
	switch m {
	case Unified:
		return "unified (v2)"
	case Hybrid:
		return "hybrid (v1 + v2)"
	case Legacy:
		return "legacy (v1)"
	}
	return "unknown (" + strconv.Itoa(int(m)) + ")"
}

// Controller is the name tori-run uses for a resource controller. Where cgroup v1 and v2 differ, the v2 name is
// used: IO is the v2 "io" controller and the v1 "blkio" one.
type Controller string

// The controllers tori-run cares about, in the order Host.Controllers lists them.
const (
	CPU     Controller = "cpu"
	CPUAcct Controller = "cpuacct"
	CPUSet  Controller = "cpuset"
	Memory  Controller = "memory"
	PIDs    Controller = "pids"
	IO      Controller = "io"
	Freezer Controller = "freezer"
)

// Controllers lists the controllers Detect reports on, in order.
var Controllers = []Controller{CPU, CPUAcct, CPUSet, Memory, PIDs, IO, Freezer}

// v1Name is the name of c in a cgroup v1 hierarchy (mount options and /proc/self/cgroup).
func (c Controller) v1Name() string {
	if c == IO {
		return "blkio"
	}
	return string(c)
}

// ControllerInfo says where a controller lives on this host and whether tori-run can use it.
type ControllerInfo struct {
	Name Controller
	// Version is 1 or 2: the cgroup version whose hierarchy provides the controller; 0 when none does.
	Version int
	// KernelName is what the kernel calls it there: "blkio" for IO on v1; on v2 "cpu.stat" for CPUAcct (basic
	// CPU accounting is in every v2 cgroup) and "cgroup.freeze" for Freezer (a core v2 feature, kernel 5.2+).
	KernelName string
	// Mount is the mount point of the hierarchy, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup.
	Mount string
	// Path is our own cgroup in that hierarchy, as /proc/self/cgroup gives it, e.g. /process_api/<id>.
	Path string
	// Dir is the directory of our own cgroup: Mount joined with Path (less the mount's root). Capsule cgroups
	// are created beneath it.
	Dir string
	// Usable: the hierarchy is mounted, we are in it, and (v2) the controller is listed in our
	// cgroup.controllers.
	Usable bool
	// Delegated: Usable, and a child cgroup could be created (and removed) under Dir.
	Delegated bool
	// SubtreeEnabled (v2 only): the controller is already listed in Dir's cgroup.subtree_control, so children
	// have its interface files. When false but Delegated, the runtime must enable it, which the kernel only
	// allows once no process is left in Dir itself.
	SubtreeEnabled bool
	// ChildFiles are the names of the files a fresh child cgroup under Dir had (nil when no child could be made).
	// In v1 they show which optional interfaces the kernel has (cpu.cfs_quota_us, blkio.bfq.weight, ...).
	ChildFiles []string
	// Reason explains why the controller is not Usable or not Delegated; empty when it is both.
	Reason string
}

// HasChildFile reports whether a child cgroup under Dir had the named interface file.
func (ci ControllerInfo) HasChildFile(name string) bool {
	return slices.Contains(ci.ChildFiles, name)
}

// Host is what Detect found out about the host's cgroups.
type Host struct {
	Mode Mode
	// UnifiedMount is the cgroup2 mount point ("" when cgroup2 is not mounted).
	UnifiedMount string
	// UnifiedPath is our own cgroup in the v2 hierarchy (the "0::" line of /proc/self/cgroup).
	UnifiedPath string
	// UnifiedControllers is what our v2 cgroup's cgroup.controllers lists (e.g. only "hugetlb" on a hybrid
	// host whose other controllers are bound to v1).
	UnifiedControllers []string
	// Controllers has one entry per element of the package variable Controllers, in that order.
	Controllers []ControllerInfo
	// Disks are the block devices behind mounted filesystems with their active I/O scheduler: proportional IO
	// weights (IOWeight) only apply on disks whose scheduler is bfq (or cfq before Linux 5.0).
	Disks []Disk
	// Hierarchies are the mounted hierarchies we are in, one entry each: every v1 hierarchy (with or without a
	// controller tori-run uses, named ones such as name=systemd too) in /proc/self/cgroup order, then cgroup2. A
	// Group exists in each of them, as libcontainer's cgroup managers create theirs.
	Hierarchies []Hierarchy

	// delegated is set by EnsureDelegation once the v2 base holds no process and has its controllers enabled.
	delegated bool
}

// Hierarchy is one mounted cgroup hierarchy and our own cgroup in it.
type Hierarchy struct {
	// Version is 1 or 2.
	Version int
	// Controllers are what a v1 hierarchy carries, as /proc/self/cgroup names them ("cpu", "cpuacct",
	// "name=systemd"); nil for cgroup2.
	Controllers []string
	// Mount is where the hierarchy is mounted; Root is the cgroup shown there (mountinfo's root, usually "/").
	Mount, Root string
	// Path is our own cgroup in the hierarchy; Dir is its directory.
	Path, Dir string
}

// dirOf returns the directory of cgroup p (absolute, as in /proc/self/cgroup) in the hierarchy, and false when
// p is outside what the mount shows.
func (hi Hierarchy) dirOf(p string) (string, bool) {
	return ownDir(&mountinfo.Info{Root: hi.Root, Mountpoint: hi.Mount}, p)
}

// Disk is a block device behind a mounted filesystem.
type Disk struct {
	Dev       string // MAJOR:MINOR
	Source    string // as mountinfo gives it, e.g. /dev/vda
	Mount     string // its first mount point
	Scheduler string // the active scheduler (the bracketed one in queue/scheduler); "" if unreadable
}

// Controller returns the entry for c, and false if c is not one Detect reports on.
func (h *Host) Controller(c Controller) (ControllerInfo, bool) {
	for _, ci := range h.Controllers {
		if ci.Name == c {
			return ci, true
		}
	}
	return ControllerInfo{}, false
}

// Prober is how detection touches the cgroup filesystem, so tests can stand in for the kernel.
type Prober interface {
	// ReadFile returns the contents of a file such as cgroup.controllers or cgroup.subtree_control.
	ReadFile(path string) ([]byte, error)
	// ProbeChild creates a uniquely named child cgroup in dir, lists the names of the files in it, removes
	// it and returns those names. An error means we cannot create cgroups there: dir is not delegated to us.
	ProbeChild(dir string) ([]string, error)
}

// Detect inspects the live host: /proc/self/mountinfo, /proc/self/cgroup and the cgroup filesystems. It
// creates and removes one empty child cgroup beneath our own cgroup in each hierarchy, and changes nothing else.
func Detect() (*Host, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer mi.Close()
	cg, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer cg.Close()
	return DetectFrom(mi, cg, OSProber{})
}

// procCgroup is one line of /proc/self/cgroup: "hierarchy-ID:controller-list:path".
type procCgroup struct {
	id          int
	controllers []string // empty for the v2 line "0::/path"
	path        string
}

func parseProcCgroup(r io.Reader) ([]procCgroup, error) {
	var out []procCgroup
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" {
			continue
		}
		parts := strings.SplitN(text, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: %q is not ID:CONTROLLERS:PATH", line, text)
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: hierarchy ID %q: %w", line, parts[0], err)
		}
		pc := procCgroup{id: id, path: parts[2]}
		if parts[1] != "" {
			pc.controllers = strings.Split(parts[1], ",")
		}
		out = append(out, pc)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	return out, nil
}

// v1Controllers are the controllers a cgroup v1 hierarchy can carry; other tokens in its mount options (rw,
// name=systemd, xattr, ...) are options.
var v1Controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio",
	"blkio", "perf_event", "hugetlb", "pids", "rdma", "misc", "debug"}

func mountControllers(m *mountinfo.Info) []string {
	var out []string
	for opt := range strings.SplitSeq(m.VFSOptions, ",") {
		if slices.Contains(v1Controllers, opt) {
			out = append(out, opt)
		}
	}
	return out
}

// ownDir returns the directory of cgroup p in hierarchy mount m, or false when p is outside what m shows
// (m is a bind mount of a sub-tree that does not contain p).
func ownDir(m *mountinfo.Info, p string) (string, bool) {
	root := path.Clean(m.Root)
	p = path.Clean("/" + p)
	if root == "/" {
		return path.Join(m.Mountpoint, p), true
	}
	if p == root {
		return m.Mountpoint, true
	}
	if rel, ok := strings.CutPrefix(p, root+"/"); ok {
		return path.Join(m.Mountpoint, rel), true
	}
	return "", false
}

// pickMount returns the first mount among ms that shows cgroup p, preferring one of the whole hierarchy.
func pickMount(ms []*mountinfo.Info, p string) (*mountinfo.Info, string) {
	var best *mountinfo.Info
	var bestDir string
	for _, m := range ms {
		dir, ok := ownDir(m, p)
		if !ok {
			continue
		}
		if best == nil || (m.Root == "/" && best.Root != "/") {
			best, bestDir = m, dir
		}
	}
	return best, bestDir
}

// DetectFrom is Detect with its inputs given: mountinfo in /proc/self/mountinfo format, selfCgroup in
// /proc/self/cgroup format, and probe to read cgroup files and test delegation.
func DetectFrom(mountinfoText io.Reader, selfCgroup io.Reader, probe Prober) (*Host, error) {
	mounts, err := mountinfo.GetMountsFromReader(mountinfoText, nil)
	if err != nil {
		return nil, fmt.Errorf("parse mountinfo: %w", err)
	}
	procs, err := parseProcCgroup(selfCgroup)
	if err != nil {
		return nil, err
	}

	var v2Mounts []*mountinfo.Info
	v1Mounts := map[string][]*mountinfo.Info{} // v1 controller name -> mounts of its hierarchy
	hasV1 := false
	for _, m := range mounts {
		if m.FSType != "cgroup" && m.FSType != "cgroup2" {
			continue
		}
		if m.FSType == "cgroup2" {
			v2Mounts = append(v2Mounts, m)
			continue
		}
		for _, c := range mountControllers(m) {
			v1Mounts[c] = append(v1Mounts[c], m)
			hasV1 = true
		}
	}

	h := &Host{}
	switch {
	case len(v2Mounts) > 0 && !hasV1:
		h.Mode = Unified
	case len(v2Mounts) > 0 && hasV1:
		h.Mode = Hybrid
	case hasV1:
		h.Mode = Legacy
	default:
		return nil, fmt.Errorf("%w: mountinfo lists no cgroup2 mount and no cgroup v1 hierarchy with a controller", ErrNoCgroups)
	}

	d := detector{probe: probe, probed: map[string]probeResult{}}

	// The v2 hierarchy, if mounted: find our cgroup in it and what it offers.
	var v2 v2State
	if len(v2Mounts) > 0 {
		v2 = d.detectV2(h, v2Mounts, procs)
	}

	for _, c := range Controllers {
		if ms := v1Mounts[c.v1Name()]; len(ms) > 0 {
			h.Controllers = append(h.Controllers, d.detectV1(c, ms, procs))
			continue
		}
		if len(v2Mounts) > 0 {
			h.Controllers = append(h.Controllers, d.v2Controller(c, h, v2))
			continue
		}
		h.Controllers = append(h.Controllers, ControllerInfo{
			Name:   c,
			Reason: fmt.Sprintf("no cgroup v1 hierarchy is mounted with the %s controller and cgroup2 is not mounted", c.v1Name()),
		})
	}
	h.Disks = disks(mounts, probe)
	h.Hierarchies = hierarchies(procs, v1ByHierarchy(mounts), v2Mounts)
	return h, nil
}

// v1ByHierarchy groups the v1 mounts by the set of controllers (and name=) they carry, which identifies a
// hierarchy: the key is the sorted, comma-joined set.
func v1ByHierarchy(mounts []*mountinfo.Info) map[string][]*mountinfo.Info {
	out := map[string][]*mountinfo.Info{}
	for _, m := range mounts {
		if m.FSType != "cgroup" {
			continue
		}
		set := mountControllers(m)
		for opt := range strings.SplitSeq(m.VFSOptions, ",") {
			if strings.HasPrefix(opt, "name=") {
				set = append(set, opt)
			}
		}
		if len(set) == 0 {
			continue
		}
		slices.Sort(set)
		key := strings.Join(set, ",")
		out[key] = append(out[key], m)
	}
	return out
}

// hierarchies lists the hierarchies of /proc/self/cgroup that are mounted and show our cgroup, v1 in
// /proc/self/cgroup order, then cgroup2.
func hierarchies(procs []procCgroup, v1 map[string][]*mountinfo.Info, v2 []*mountinfo.Info) []Hierarchy {
	var out []Hierarchy
	var unified *Hierarchy
	for _, pc := range procs {
		var ms []*mountinfo.Info
		version := 1
		if pc.id == 0 && len(pc.controllers) == 0 {
			ms, version = v2, 2
		} else {
			set := slices.Clone(pc.controllers)
			slices.Sort(set)
			ms = v1[strings.Join(set, ",")]
		}
		m, dir := pickMount(ms, pc.path)
		if m == nil {
			continue
		}
		hi := Hierarchy{Version: version, Mount: m.Mountpoint, Root: path.Clean(m.Root), Path: path.Clean("/" + pc.path), Dir: dir}
		if version == 2 {
			unified = &hi
			continue
		}
		hi.Controllers = slices.Clone(pc.controllers)
		out = append(out, hi)
	}
	if unified != nil {
		out = append(out, *unified)
	}
	return out
}

// disks lists the block devices behind mounts (major number not 0), once each, with their active scheduler,
// read from /sys/dev/block/MAJ:MIN/queue/scheduler (a partition's queue is its disk's: ../queue).
func disks(mounts []*mountinfo.Info, probe Prober) []Disk {
	var out []Disk
	seen := map[string]bool{}
	for _, m := range mounts {
		if m.Major == 0 || !strings.HasPrefix(m.Source, "/dev/") {
			continue
		}
		dev := fmt.Sprintf("%d:%d", m.Major, m.Minor)
		if seen[dev] {
			continue
		}
		seen[dev] = true
		d := Disk{Dev: dev, Source: m.Source, Mount: m.Mountpoint}
		for _, p := range []string{"/sys/dev/block/" + dev + "/queue/scheduler", "/sys/dev/block/" + dev + "/../queue/scheduler"} {
			if b, err := probe.ReadFile(p); err == nil {
				d.Scheduler = activeScheduler(string(b))
				break
			}
		}
		out = append(out, d)
	}
	return out
}

// activeScheduler returns the bracketed name in a queue/scheduler file: "none [mq-deadline] bfq" -> mq-deadline.
func activeScheduler(s string) string {
	for f := range strings.FieldsSeq(s) {
		if name, ok := strings.CutPrefix(f, "["); ok {
			return strings.TrimSuffix(name, "]")
		}
	}
	return strings.TrimSpace(s) // a single scheduler may be shown without brackets
}

type probeResult struct {
	files []string
	err   error
}

type detector struct {
	probe  Prober
	probed map[string]probeResult // dir -> result; co-mounted v1 controllers share one probe
}

func (d *detector) probeChild(dir string) ([]string, error) {
	if r, ok := d.probed[dir]; ok {
		return r.files, r.err
	}
	files, err := d.probe.ProbeChild(dir)
	d.probed[dir] = probeResult{files, err}
	return files, err
}

func (d *detector) detectV1(c Controller, ms []*mountinfo.Info, procs []procCgroup) ControllerInfo {
	name := c.v1Name()
	ci := ControllerInfo{Name: c, Version: 1, KernelName: name, Mount: ms[0].Mountpoint}
	var own *procCgroup
	for i := range procs {
		if slices.Contains(procs[i].controllers, name) {
			own = &procs[i]
			break
		}
	}
	if own == nil {
		ci.Reason = fmt.Sprintf("%s is mounted at %s but /proc/self/cgroup has no line for it", name, ci.Mount)
		return ci
	}
	ci.Path = own.path
	m, dir := pickMount(ms, own.path)
	if m == nil {
		ci.Reason = fmt.Sprintf("our %s cgroup %s is outside every mount of that hierarchy (first: %s, root %s)",
			name, own.path, ms[0].Mountpoint, ms[0].Root)
		return ci
	}
	ci.Mount, ci.Dir, ci.Usable = m.Mountpoint, dir, true
	files, err := d.probeChild(dir)
	if err != nil {
		ci.Reason = fmt.Sprintf("cannot create a child cgroup under %s: %v", dir, err)
		return ci
	}
	ci.ChildFiles, ci.Delegated = files, true
	return ci
}

type v2State struct {
	dir         string
	reason      string // why the v2 hierarchy cannot be used at all
	subtree     []string
	childFiles  []string
	childErr    error
	canReadFile func(string) bool
}

func (d *detector) detectV2(h *Host, ms []*mountinfo.Info, procs []procCgroup) v2State {
	var st v2State
	h.UnifiedMount = ms[0].Mountpoint
	var own *procCgroup
	for i := range procs {
		if procs[i].id == 0 && len(procs[i].controllers) == 0 {
			own = &procs[i]
			break
		}
	}
	if own == nil {
		st.reason = fmt.Sprintf("cgroup2 is mounted at %s but /proc/self/cgroup has no \"0::\" line", h.UnifiedMount)
		return st
	}
	h.UnifiedPath = own.path
	m, dir := pickMount(ms, own.path)
	if m == nil {
		st.reason = fmt.Sprintf("our cgroup2 cgroup %s is outside every cgroup2 mount (first: %s, root %s)",
			own.path, ms[0].Mountpoint, ms[0].Root)
		return st
	}
	h.UnifiedMount = m.Mountpoint
	st.dir = dir
	ctrl, err := d.probe.ReadFile(path.Join(dir, "cgroup.controllers"))
	if err != nil {
		st.reason = fmt.Sprintf("cannot read %s: %v", path.Join(dir, "cgroup.controllers"), err)
		return st
	}
	h.UnifiedControllers = strings.Fields(string(ctrl))
	if sub, err := d.probe.ReadFile(path.Join(dir, "cgroup.subtree_control")); err == nil {
		st.subtree = strings.Fields(string(sub))
	}
	st.childFiles, st.childErr = d.probeChild(dir)
	st.canReadFile = func(name string) bool {
		_, err := d.probe.ReadFile(path.Join(dir, name))
		return err == nil
	}
	return st
}

func (d *detector) v2Controller(c Controller, h *Host, st v2State) ControllerInfo {
	ci := ControllerInfo{Name: c, Version: 2, KernelName: string(c), Mount: h.UnifiedMount, Path: h.UnifiedPath, Dir: st.dir}
	if st.reason != "" {
		ci.Reason = st.reason
		return ci
	}
	switch c {
	case CPUAcct:
		// No cpuacct controller in v2: every cgroup has usage in cpu.stat.
		ci.KernelName = "cpu.stat"
		ci.Usable = true
	case Freezer:
		// The v2 freezer is the core file cgroup.freeze (kernel 5.2+), absent from the root cgroup.
		ci.KernelName = "cgroup.freeze"
		ci.Usable = slices.Contains(st.childFiles, "cgroup.freeze") || st.canReadFile("cgroup.freeze")
		if !ci.Usable {
			ci.Reason = fmt.Sprintf("no cgroup.freeze under %s: the kernel has no cgroup v2 freezer (needs 5.2+)", st.dir)
			return ci
		}
	default:
		if !slices.Contains(h.UnifiedControllers, string(c)) {
			ci.Reason = fmt.Sprintf("%s is not in %s (%q): it is bound to a cgroup v1 hierarchy, disabled, or not delegated by the parent",
				c, path.Join(st.dir, "cgroup.controllers"), strings.Join(h.UnifiedControllers, " "))
			return ci
		}
		ci.Usable = true
		ci.SubtreeEnabled = slices.Contains(st.subtree, string(c))
	}
	if st.childErr != nil {
		ci.Reason = fmt.Sprintf("cannot create a child cgroup under %s: %v", st.dir, st.childErr)
		return ci
	}
	ci.ChildFiles, ci.Delegated = st.childFiles, true
	return ci
}
