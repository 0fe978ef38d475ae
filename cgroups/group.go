package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	lib "github.com/opencontainers/cgroups"
	libfs "github.com/opencontainers/cgroups/fs"
	libfs2 "github.com/opencontainers/cgroups/fs2"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups/spawn"
)

// Sentinel errors, wrapped with %w: test them with errors.Is.
var (
	// ErrNotExist: the group does not exist in any hierarchy (Load).
	ErrNotExist = fs.ErrNotExist
	// ErrNotEmpty: processes remain where none may (Destroy, Kill, EnsureDelegation, Child).
	ErrNotEmpty = errors.New("cgroup has processes")
	// ErrNotDelegated: on cgroup v2, our own cgroup cannot enable controllers for children (EnsureDelegation
	// was not called, or failed).
	ErrNotDelegated = errors.New("cgroup not delegated")
)

// SupervisorLeaf is the leaf cgroup EnsureDelegation moves tori-run into on cgroup v2. A process whose v2
// cgroup is <X>/supervisor nests its groups under <X>.
const SupervisorLeaf = "supervisor"

// Resources are limits in kernel-neutral units; nil (or "") is "not set". The caller converts from the systemd
// directives of the manifest; the comments give the files written on cgroup v2 and v1.
type Resources struct {
	// CPUQuotaPercent: 80 = 0.8 CPU. v2 cpu.max "80000 100000"; v1 cpu.cfs_period_us 100000 and
	// cpu.cfs_quota_us 80000.
	CPUQuotaPercent *float64
	// CPUWeight: 1..10000. v2 cpu.weight; v1 cpu.shares = CPUWeightToShares(weight).
	CPUWeight *uint64
	// MemoryMax: bytes, -1 for no limit. v2 memory.max; v1 memory.limit_in_bytes.
	MemoryMax *int64
	// MemoryHigh: bytes, -1 for no limit. v2 memory.high. v1 has no equivalent: memory.soft_limit_in_bytes is
	// written as a hint and the directive is reported as not enforced.
	MemoryHigh *int64
	// IOWeight: 1..10000. v2 io.weight ("default N"); v1 blkio.bfq.weight or blkio.weight =
	// IOWeightToBlkio(weight), which only disks using bfq (cfq before 5.0) obey.
	IOWeight *uint64
	// TasksMax: processes and threads, -1 for no limit. pids.max.
	TasksMax *int64
	// AllowedCPUs: a CPU list such as "0-1". cpuset.cpus (v1 also gets cpuset.mems from its parent).
	AllowedCPUs string
}

// Group is one cgroup: on cgroup v1 the same path in each hierarchy, on v2 one directory. It is used by one
// goroutine at a time.
type Group struct {
	host    *Host
	path    string // as given to Create or Load, cleaned: relative (under our own) or absolute
	version int    // 1: limits through v1 hierarchies (legacy and hybrid hosts); 2: unified
	dirs    []groupDir
}

// groupDir is the group's directory in one hierarchy.
type groupDir struct {
	Hierarchy
	dir string
}

// key names the hierarchy for Dirs and for opencontainers/cgroups: "cpu,cpuacct", "name=systemd", "" for v2.
func (d groupDir) key() string {
	return strings.Join(d.Controllers, ",")
}

func (d groupDir) has(controller string) bool {
	return slices.Contains(d.Controllers, controller)
}

// validPath checks a cgroup path given by a caller (spawn.ValidPath).
func validPath(p string) error { return spawn.ValidPath(p) }

// newGroup works out where cgroup path p is in every hierarchy. A relative p nests under our own cgroup
// (per hierarchy on v1; on v2 under the base EnsureDelegation prepared); an absolute one starts at the root
// of each hierarchy. Nothing is touched.
func newGroup(h *Host, p string) (*Group, error) {
	if err := validPath(p); err != nil {
		return nil, err
	}
	g := &Group{host: h, path: path.Clean(p), version: 1}
	if h.Mode == Unified {
		g.version = 2
	}
	for _, hi := range h.Hierarchies {
		if g.version == 2 && hi.Version != 2 {
			continue
		}
		cg := g.path
		if !path.IsAbs(cg) {
			cg = path.Join(hi.base(), cg)
		}
		dir, ok := hi.dirOf(cg)
		if !ok {
			return nil, fmt.Errorf("cgroup %s is outside the part of the hierarchy mounted at %s (root %s)", cg, hi.Mount, hi.Root)
		}
		g.dirs = append(g.dirs, groupDir{Hierarchy: hi, dir: dir})
	}
	if len(g.dirs) == 0 {
		return nil, fmt.Errorf("cgroup %s: %w: no mounted hierarchy shows our own cgroup", p, ErrNoCgroups)
	}
	return g, nil
}

// base is the cgroup our groups nest under: our own, or on v2 the parent of the SupervisorLeaf we live in.
func (hi Hierarchy) base() string {
	if hi.Version == 2 && path.Base(hi.Path) == SupervisorLeaf {
		return path.Dir(hi.Path)
	}
	return hi.Path
}

// Create makes the cgroup <base>/<parent>/<name> (a relative parent, or "" for our own cgroup itself; an
// absolute parent such as "/tori" is taken from the root of each hierarchy, as --cgroup-parent) and writes
// the limits of r. name may hold several elements ("tori/<instance>"). A group that exists already is reused
// and its limits written again.
//
// Limits this host cannot enforce are not an error: they come back as "Directive=value: why" lines, for the
// caller to report. On cgroup v2 with a relative path, EnsureDelegation must have been called.
func Create(h *Host, parent, name string, r Resources) (*Group, []string, error) {
	g, err := newGroup(h, path.Join(parent, name))
	if err != nil {
		return nil, nil, err
	}
	if g.version == 2 && !path.IsAbs(g.path) && !h.delegated && g.dirs[0].base() != "/" {
		return nil, nil, fmt.Errorf("cgroup %s: %w: call EnsureDelegation first (our cgroup %s may hold processes, so it cannot enable controllers for children)",
			g.dirs[0].dir, ErrNotDelegated, g.dirs[0].base())
	}
	unenforced, err := g.create(r)
	if err != nil {
		return nil, nil, err
	}
	return g, unenforced, nil
}

// Load returns the existing group at cgroup path p (as Create was given it: parent and name joined), to kill
// and remove what an earlier run left. The error wraps ErrNotExist when p exists in no hierarchy.
func Load(h *Host, p string) (*Group, error) {
	g, err := newGroup(h, p)
	if err != nil {
		return nil, err
	}
	for _, d := range g.dirs {
		if _, err := os.Stat(d.dir); err == nil {
			return g, nil
		}
	}
	return nil, fmt.Errorf("cgroup %s (%s): %w", p, g.dirs[0].dir, ErrNotExist)
}

// Child creates (or reuses) the group name directly beneath g with limits r, e.g. a service's leaf.
//
// On cgroup v2 it first enables g's controllers in g's cgroup.subtree_control, which the kernel allows only
// while g holds no process: when g has processes, a child without limits is still made (so that they can be
// moved into it) and a child with limits is an error wrapping ErrNotEmpty.
func (g *Group) Child(name string, r Resources) (*Group, []string, error) {
	if strings.Contains(name, "/") {
		return nil, nil, fmt.Errorf("child cgroup name %q: must be one path element", name)
	}
	c, err := newGroup(g.host, path.Join(g.path, name))
	if err != nil {
		return nil, nil, err
	}
	unenforced, err := c.create(r)
	if err != nil {
		return nil, nil, err
	}
	return c, unenforced, nil
}

func (r Resources) any() bool {
	return r.CPUQuotaPercent != nil || r.CPUWeight != nil || r.MemoryMax != nil || r.MemoryHigh != nil ||
		r.IOWeight != nil || r.TasksMax != nil || r.AllowedCPUs != ""
}

// Path is the group's cgroup path for libcontainer's CgroupsPath. On v1 it is relative, as given to Create:
// libcontainer nests it under the caller's own cgroup in each hierarchy, as this package does (our own cgroup
// differs per hierarchy, so no absolute path would do). On v2 it is absolute: libcontainer nests a relative
// v2 path under the PARENT of the caller's cgroup, which EnsureDelegation changes, so only an absolute path
// is unambiguous there.
func (g *Group) Path() string {
	if g.version == 2 {
		d := g.dirs[0]
		if path.IsAbs(g.path) {
			return g.path
		}
		return path.Join(d.base(), g.path)
	}
	return g.path
}

// Version is 2 on a unified host, else 1 (limits through v1 hierarchies, even if cgroup2 is mounted beside).
func (g *Group) Version() int { return g.version }

// Dirs maps each hierarchy to the group's directory there, for diagnostics and tests. Keys are the v1
// controllers of the hierarchy as /proc/self/cgroup lists them ("cpu,cpuacct", "memory", "name=systemd") and
// "" for cgroup2.
func (g *Group) Dirs() map[string]string {
	out := make(map[string]string, len(g.dirs))
	for _, d := range g.dirs {
		out[d.key()] = d.dir
	}
	return out
}

func (g *Group) String() string {
	return g.dirs[0].dir
}

// manager returns the opencontainers/cgroups manager of the group: fs (v1, every hierarchy, cgroup2 too on
// a hybrid host) or fs2.
func (g *Group) manager(res *lib.Resources) (lib.Manager, error) {
	if res == nil {
		res = &lib.Resources{}
	}
	res.SkipDevices = true // device rules are libcontainer's business, for the capsule as a whole
	cfg := &lib.Cgroup{Path: g.path, Resources: res}
	if g.version == 2 {
		return libfs2.NewManager(cfg, g.dirs[0].dir)
	}
	paths := map[string]string{}
	for _, d := range g.dirs {
		if d.Version == 2 {
			paths[""] = d.dir // the library joins cgroup2 on hybrid hosts under this key
			continue
		}
		for _, c := range d.Controllers {
			paths[c] = d.dir
		}
	}
	return libfs.NewManager(cfg, paths)
}

// create makes the group's directories and writes r. On failure it removes the directories it made.
func (g *Group) create(r Resources) (unenforced []string, err error) {
	var made []string // directories that did not exist, parents first
	for _, d := range g.dirs {
		for p := d.dir; p != d.Mount && p != "/" && p != "."; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			made = append(made, p)
		}
	}
	slices.SortFunc(made, func(a, b string) int { return len(a) - len(b) })
	defer func() {
		if err != nil {
			for _, p := range slices.Backward(made) {
				_ = rmdirRetry(p)
			}
		}
	}()
	m, err := g.manager(nil)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g, err)
	}
	if g.version == 2 {
		if err := g.createV2(r.any()); err != nil {
			return nil, err
		}
		return g.set(m, r)
	}
	for _, d := range g.dirs {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
	}
	// Apply(-1) creates nothing more here, but it initialises cpuset.cpus and cpuset.mems of new cpuset
	// cgroups from their parents, else no task could join them.
	if err := m.Apply(-1); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", g, err)
	}
	return g.set(m, r)
}

// createV2 makes the group's directory and its missing parents, enabling every available controller in the
// cgroup.subtree_control of each parent from our base (the hierarchy's root for an absolute path) down.
//
// It does not use the library's fs2 Apply for this: when a parent holds processes, that one enables the
// controllers one by one ignoring errors, so the threaded ones (cpu, cpuset, pids) get enabled in a cgroup
// with processes, which makes it a thread root; the new child is then "domain invalid", and the library
// turns it "threaded", after which the parent can never enable memory or io again (EOPNOTSUPP). Seen in
// the v2 guest with the runtime's own sequence (init still in the capsule's cgroup when its leaf is made).
// Here enabling is all or nothing: a parent with processes fails with EBUSY and stays a plain domain. That
// is an error (wrapping ErrNotEmpty) unless it is the direct parent and the group needs no controller
// (limits false), so a leaf can still be made to move those processes into.
func (g *Group) createV2(limits bool) error {
	d := g.dirs[0]
	start := d.base()
	if path.IsAbs(g.path) {
		start = "/"
	}
	cg := path.Join(start, g.path)
	if path.IsAbs(g.path) {
		cg = g.path
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(cg, start), "/")
	parts := strings.Split(rel, "/")
	cur := start
	for i, p := range parts {
		dir, ok := d.dirOf(cur)
		if !ok {
			return fmt.Errorf("create cgroup %s: %s is outside the cgroup2 mount %s", g.path, cur, d.Mount)
		}
		if err := enableSubtree(d.Mount, dir); err != nil {
			if !errors.Is(err, ErrNotEmpty) || limits || i != len(parts)-1 {
				return fmt.Errorf("create cgroup %s: %w", g.path, err)
			}
		}
		cur = path.Join(cur, p)
		dir, _ = d.dirOf(cur)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup: %w", err)
		}
	}
	return nil
}

// setting is one directive to write: its display, the resources for the library, and the controller it needs.
type setting struct {
	directive, value string
	controller       Controller
	res              lib.Resources
	enforced         bool
	note             string
}

func (g *Group) settings(r Resources) ([]setting, error) {
	var out []setting
	v2 := g.version == 2
	add := func(directive, value string, res lib.Resources) {
		out = append(out, setting{directive: directive, value: value, controller: directiveController[directive], res: res})
	}
	if p := r.CPUQuotaPercent; p != nil {
		if *p <= 0 {
			return nil, fmt.Errorf("CPUQuota=%g%%: must be above 0", *p)
		}
		add(CPUQuota, strconv.FormatFloat(*p, 'g', -1, 64)+"%", lib.Resources{CpuQuota: CPUQuotaToMicros(*p), CpuPeriod: CFSPeriodMicros})
	}
	if w := r.CPUWeight; w != nil {
		if *w < 1 || *w > 10000 {
			return nil, fmt.Errorf("CPUWeight=%d: must be 1..10000", *w)
		}
		res := lib.Resources{CpuShares: CPUWeightToShares(*w)}
		if v2 {
			res = lib.Resources{CpuWeight: *w}
		}
		add(CPUWeight, strconv.FormatUint(*w, 10), res)
	}
	if m := r.MemoryMax; m != nil {
		if *m < -1 || *m == 0 {
			return nil, fmt.Errorf("MemoryMax=%d: must be bytes above 0, or -1 for no limit", *m)
		}
		add(MemoryMax, bytesValue(*m), lib.Resources{Memory: *m})
	}
	if m := r.MemoryHigh; m != nil {
		if *m < -1 || *m == 0 {
			return nil, fmt.Errorf("MemoryHigh=%d: must be bytes above 0, or -1 for no limit", *m)
		}
		res := lib.Resources{MemoryReservation: *m} // v1: memory.soft_limit_in_bytes, a hint
		if v2 {
			res = lib.Resources{Unified: map[string]string{"memory.high": maxValue(*m)}}
		}
		add(MemoryHigh, bytesValue(*m), res)
	}
	if w := r.IOWeight; w != nil {
		if *w < 1 || *w > 10000 {
			return nil, fmt.Errorf("IOWeight=%d: must be 1..10000", *w)
		}
		res := lib.Resources{BlkioWeight: uint16(IOWeightToBlkio(*w))}
		if v2 {
			res = lib.Resources{Unified: map[string]string{"io.weight": "default " + strconv.FormatUint(*w, 10)}}
		}
		add(IOWeight, strconv.FormatUint(*w, 10), res)
	}
	if t := r.TasksMax; t != nil {
		if *t < -1 || *t == 0 {
			return nil, fmt.Errorf("TasksMax=%d: must be above 0, or -1 for no limit", *t)
		}
		v := *t
		add(TasksMax, maxValue(*t), lib.Resources{PidsLimit: &v})
	}
	if r.AllowedCPUs != "" {
		add(AllowedCPUs, r.AllowedCPUs, lib.Resources{CpusetCpus: r.AllowedCPUs})
	}
	for i := range out {
		ls := limit(g.host, out[i].directive)
		out[i].enforced, out[i].note = ls.Enforced, ls.Note
	}
	return out, nil
}

func bytesValue(b int64) string {
	if b == -1 {
		return "infinity"
	}
	return strconv.FormatInt(b, 10)
}

func maxValue(v int64) string {
	if v == -1 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// set writes each directive of r on its own, so that an error says which one failed (the library's error
// names the file and the value), and lists the directives this host does not enforce.
func (g *Group) set(m lib.Manager, r Resources) ([]string, error) {
	ss, err := g.settings(r)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g, err)
	}
	var unenforced []string
	var controllers []string
	if g.version == 2 && len(ss) > 0 {
		s, err := readBeneath(g.dirs[0].Mount, g.dirs[0].dir, "cgroup.controllers")
		if err != nil {
			return nil, err
		}
		controllers = strings.Fields(s)
	}
	for _, s := range ss {
		write := s.enforced
		if g.version == 1 && !s.enforced {
			ls := limit(g.host, s.directive)
			ci, _ := g.host.Controller(s.controller)
			// MemoryHigh becomes a soft limit (a hint); an IOWeight file that exists is written even when no
			// disk uses a proportional scheduler, so that it works if one is switched to bfq.
			write = ci.Usable && ci.Delegated &&
				(s.directive == MemoryHigh || (s.directive == IOWeight && ci.HasChildFile(ls.File)))
		}
		if !s.enforced {
			unenforced = append(unenforced, fmt.Sprintf("%s=%s: %s", s.directive, s.value, s.note))
		}
		if !write {
			continue
		}
		if g.version == 2 && !slices.Contains(controllers, string(s.controller)) {
			return nil, fmt.Errorf("%s=%s: the %s controller is not enabled for %s (its cgroup.controllers: %q): it must be in the parent's cgroup.subtree_control, which the kernel allows only while the parent holds no processes",
				s.directive, s.value, s.controller, g, strings.Join(controllers, " "))
		}
		if err := m.Set(&s.res); err != nil {
			return nil, fmt.Errorf("%s=%s in cgroup %s: %w", s.directive, s.value, g.path, err)
		}
	}
	return unenforced, nil
}

// MoveProcess moves process pid (and all its threads) into the group, writing it to cgroup.procs in every
// hierarchy. Used for processes that exist already, such as a container's init placed by libcontainer; a
// new process should be started in the group (StartIn), never moved after it started.
func (g *Group) MoveProcess(pid int) error {
	for _, d := range g.dirs {
		if err := writeProcs(d.Mount, d.dir, pid); err != nil {
			return fmt.Errorf("move pid %d into cgroup %s: %w", pid, g.path, err)
		}
	}
	return nil
}

// writeProcs writes pid to dir/cgroup.procs, retrying EINVAL (a task still being created) a few times.
func writeProcs(mount, dir string, pid int) error {
	var err error
	for range 5 {
		err = writeBeneath(mount, dir, "cgroup.procs", strconv.Itoa(pid))
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// Procs returns the pids of every process in the group or beneath it, in any hierarchy, sorted.
func (g *Group) Procs() ([]int, error) {
	var out []int
	var errs []error
	for _, d := range g.dirs {
		pids, err := treePids(d.Mount, d.dir)
		out = append(out, pids...)
		errs = append(errs, err)
	}
	slices.Sort(out)
	return slices.Compact(out), errors.Join(errs...)
}

// Destroy removes the group and every cgroup beneath it (deepest first) in every hierarchy. A group that does
// not exist (any more) is fine. It refuses, with an error wrapping ErrNotEmpty, while processes remain: Kill
// them first.
func (g *Group) Destroy() error {
	pids, err := g.Procs()
	if err != nil {
		return fmt.Errorf("destroy cgroup %s: %w", g.path, err)
	}
	if len(pids) > 0 {
		return fmt.Errorf("destroy cgroup %s: %w: %s", g.path, ErrNotEmpty, describePids(pids))
	}
	var errs []error
	for _, d := range g.dirs {
		// RemovePath removes sub-cgroups first and retries EBUSY (a cgroup whose last task is still exiting).
		if err := lib.RemovePath(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy cgroup %s: %w", g.path, err)
	}
	return nil
}

// Stats are usage figures of a group, its sub-groups included.
type Stats struct {
	MemoryCurrent uint64 // bytes: v2 memory.current, v1 memory.usage_in_bytes
	// MemoryPeak is the highest MemoryCurrent seen: v2 memory.peak (Linux 5.19+; 0 before), v1
	// memory.max_usage_in_bytes.
	MemoryPeak uint64
	// MemoryWorkingSet is MemoryCurrent less the inactive file cache (v2 inactive_file, v1
	// total_inactive_file of memory.stat): what cAdvisor calls the working set, what the kernel cannot
	// simply drop under pressure.
	MemoryWorkingSet uint64
	CPUUsage         time.Duration // v2 cpu.stat usage_usec, v1 cpuacct.usage
	Pids             uint64        // pids.current
	// ThrottledPeriods and ThrottledTime: how often and how long CPUQuota held the group back (cpu.stat
	// nr_throttled, and throttled_usec on v2 or throttled_time on v1).
	ThrottledPeriods uint64
	ThrottledTime    time.Duration
}

// Stats reads the group's usage through opencontainers/cgroups.
func (g *Group) Stats() (Stats, error) {
	m, err := g.manager(nil)
	if err != nil {
		return Stats{}, err
	}
	st, err := m.Stats(&lib.StatsOptions{Controllers: lib.CPU | lib.Memory | lib.Pids})
	if err != nil {
		return Stats{}, fmt.Errorf("stats of cgroup %s: %w", g, err)
	}
	inactive, ok := st.MemoryStats.Stats["total_inactive_file"] // v1, hierarchical
	if !ok {
		inactive = st.MemoryStats.Stats["inactive_file"] // v2
	}
	ws := st.MemoryStats.Usage.Usage
	if inactive < ws {
		ws -= inactive
	} else {
		ws = 0
	}
	return Stats{
		MemoryWorkingSet: ws,
		MemoryCurrent:    st.MemoryStats.Usage.Usage,
		MemoryPeak:       st.MemoryStats.Usage.MaxUsage,
		CPUUsage:         time.Duration(st.CpuStats.CpuUsage.TotalUsage),
		Pids:             st.PidsStats.Current,
		ThrottledPeriods: st.CpuStats.ThrottlingData.ThrottledPeriods,
		ThrottledTime:    time.Duration(st.CpuStats.ThrottlingData.ThrottledTime),
	}, nil
}

// OOMKills counts the processes the kernel's OOM killer killed in the group or beneath it: v2 oom_kill of
// memory.events (hierarchical; not "oom", which counts reaching the limit); v1 oom_kill of memory.oom_control
// (Linux 4.13+), summed over the group and its sub-groups because v1 counts only in the victim's own cgroup.
func (g *Group) OOMKills() (uint64, error) {
	if g.version == 2 {
		n, err := libfs2.OOMKillCount(g.dirs[0].dir)
		if err != nil {
			return 0, fmt.Errorf("oom_kill in %s/memory.events: %w", g, err)
		}
		return n, nil
	}
	var mem *groupDir
	for i := range g.dirs {
		if g.dirs[i].has("memory") {
			mem = &g.dirs[i]
		}
	}
	if mem == nil {
		return 0, fmt.Errorf("cgroup %s: no memory hierarchy is mounted", g.path)
	}
	dirs, err := subdirs(mem.dir)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, d := range dirs {
		n, err := libfs.OOMKillCount(d)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return 0, fmt.Errorf("oom_kill in %s/memory.oom_control (needs Linux 4.13+): %w", d, err)
		}
		total += n
	}
	return total, nil
}
