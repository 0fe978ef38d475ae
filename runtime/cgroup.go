//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/specs"
)

// Every cgroup of an instance is made here, from its plan, during Create:
// the capsule's (with the capsule's limits) before the container starts,
// then, once the init runs in it, the init's own leaf (cgroup v2) and every
// service's (with its limits). A service start only looks its cgroup up;
// adopt loads them again. Teardown is here too.

// createCgroups makes the capsule's cgroup with the plan's limits.
func (i *Instance) createCgroups() error {
	// Another instance's teardown removes the shared tori/ parent when it
	// looks empty; if that happens between our making it and making our
	// group in it, the parent is gone (ENOENT): make both again. Once our
	// group exists, the parent cannot be removed.
	var g *cgroups.Group
	var unenforced []string
	var err error
	for try := 0; ; try++ {
		g, unenforced, err = cgroups.Create(i.host, "", i.plan.Cgroup, toCgroupResources(i.plan.Resources))
		if err == nil || try == 4 || !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("capsule cgroup: %w", err)
	}
	i.group = g
	i.warnUnenforced("", unenforced)
	return nil
}

// createInitCgroup moves the init, on cgroup v2, out of the capsule's
// cgroup into a leaf of its own, so that the capsule's cgroup holds no
// processes and can enable controllers for the services' cgroups. The
// cgroup namespace stays rooted at the capsule's cgroup, so the init may
// start services in their leaves. v1 has no "no internal processes" rule:
// the init stays in the capsule's cgroup, and a move (which costs an RCU
// grace period on v1) is saved.
func (i *Instance) createInitCgroup() error {
	if i.host.Mode != cgroups.Unified {
		return nil
	}
	ig, _, err := i.group.Child("init", cgroups.Resources{})
	if err != nil {
		return fmt.Errorf("init cgroup: %w", err)
	}
	i.initGroup = ig
	pid, err := i.initProc.Pid()
	if err != nil {
		return err
	}
	if err := ig.MoveProcess(pid); err != nil {
		return fmt.Errorf("moving the init into its cgroup: %w", err)
	}
	return nil
}

// createServiceCgroups makes every service's cgroup under the capsule's,
// with the service's limits (none without cgroups: rootless.go).
func (i *Instance) createServiceCgroups() error {
	if i.group == nil {
		return nil
	}
	for _, s := range i.plan.Services {
		g, unenforced, err := i.group.Child(s.Cgroup, toCgroupResources(s.Resources))
		if err != nil {
			return fmt.Errorf("cgroup of service %s: %w", s.Name, err)
		}
		i.warnUnenforced(s.Name, unenforced)
		i.svcMu.Lock()
		i.services[s.Name] = g
		i.svcMu.Unlock()
	}
	return nil
}

func (i *Instance) warnUnenforced(service string, limits []string) {
	for _, u := range limits {
		ev := i.Log.Warn().Str("limit", u)
		if service != "" {
			ev = ev.Str(FieldService, service)
		}
		ev.Msg("limit not enforced on this host")
	}
}

// madeGroup returns the cgroup of a service, or nil.
func (i *Instance) madeGroup(name string) *cgroups.Group {
	i.svcMu.Lock()
	defer i.svcMu.Unlock()
	return i.services[name]
}

// serviceGroup loads the cgroup of a service the init runs (adopt).
func (i *Instance) serviceGroup(name string) (*cgroups.Group, error) {
	s := i.plan.Service(name)
	if s == nil {
		return nil, fmt.Errorf("the init runs %q, which the manifest does not name", name)
	}
	g, err := cgroups.Load(i.host, filepath.Join(i.group.Path(), s.Cgroup))
	if err != nil {
		return nil, err
	}
	i.svcMu.Lock()
	i.services[name] = g
	i.svcMu.Unlock()
	return g, nil
}

// removeGroup kills and removes a capsule's cgroup, then the default
// "tori" parent when no other instance uses it (rmdir refuses while it has
// children, which is exactly the test). A --cgroup-parent is the operator's
// and stays.
func (i *Instance) removeGroup(g *cgroups.Group) error {
	return killAndRemove(g, i.opts.CgroupParent == "")
}

func killAndRemove(g *cgroups.Group, removeParent bool) error {
	dirs := g.Dirs()
	if err := g.Kill(); err != nil {
		return err
	}
	if err := g.Destroy(); err != nil {
		return err
	}
	if removeParent {
		for _, d := range dirs {
			removeIfEmpty(filepath.Dir(d))
		}
	}
	return nil
}

// removeIfEmpty removes an empty cgroup folder. A folder that still holds
// another instance's cgroup is not empty, and is left at once: cgroup v1
// answers rmdir of such a parent with EBUSY, not ENOTEMPTY, so waiting for it
// cost every run beside another capsule 10 s (50 tries in each hierarchy).
// Only when no child is left is EBUSY retried a few times, since on v1 a
// removed child is torn down asynchronously.
func removeIfEmpty(dir string) {
	delay := time.Millisecond
	for deadline := time.Now().Add(time.Second); ; { // under load v1 takes its time
		if hasSubdir(dir) {
			return
		}
		err := unix.Rmdir(dir)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return
		}
		time.Sleep(delay) // the release is usually done within a millisecond or two
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// hasSubdir tells whether a cgroup folder has a child cgroup.
func hasSubdir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() {
			return true
		}
	}
	return false
}

func toCgroupResources(r specs.Resources) cgroups.Resources {
	var out cgroups.Resources
	if r.CPUQuota != nil {
		v := float64(*r.CPUQuota)
		out.CPUQuotaPercent = &v
	}
	out.CPUWeight = r.CPUWeight
	out.IOWeight = r.IOWeight
	size := func(s *specs.Size) *int64 {
		if s == nil {
			return nil
		}
		v := int64(-1)
		if !s.Infinity {
			v = int64(s.Bytes)
		}
		return &v
	}
	out.MemoryMax, out.MemoryHigh = size(r.MemoryMax), size(r.MemoryHigh)
	if r.TasksMax != nil {
		v := int64(-1)
		if !r.TasksMax.Infinity {
			v = int64(r.TasksMax.N)
		}
		out.TasksMax = &v
	}
	if r.AllowedCPUs != nil {
		out.AllowedCPUs = r.AllowedCPUs.String()
	}
	return out
}
