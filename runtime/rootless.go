//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	sysuser "github.com/moby/sys/user"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/specs"
)

// Without root (SPEC §3): limits need a cgroup v2 subtree delegated to the
// user, with the controllers the limits use enabled. tori-run never uses
// cgroup v1 without root (its files cannot be handed to a user safely), and
// never lets a limit go silently: libcontainer's RootlessCgroups ignores
// cgroup errors, so a capsule that asks for a limit a user cannot get is
// refused here, before anything is made, with the exact missing piece.

// ErrRootlessLimits is a capsule whose limits a non-root user cannot get.
var ErrRootlessLimits = errors.New("limits need a cgroup v2 subtree delegated to you")

// wantedDirectives lists the resource directives a capsule asks for:
// capsule-wide (with a slice over them) and per service.
func wantedDirectives(m *specs.Manifest, slice string) ([]string, error) {
	res := m.Resources
	if slice != "" {
		over, err := specs.LoadSlice(slice)
		if err != nil {
			return nil, err
		}
		res = res.Override(over)
	}
	out := res.Directives()
	for _, s := range m.Services {
		for _, d := range s.Resources.Directives() {
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// rootlessDelegation says, for each controller, what a non-root user lacks
// to use it in its cgroup v2 subtree: nil when nothing.
type rootlessDelegation struct {
	uid      int
	mount    string // the cgroup2 mount, "" if none
	dir      string // our own v2 cgroup's folder
	enabled  []string
	v1       map[cgroups.Controller]string // controllers bound to v1: their mount
	notWrite []string                      // files of dir we cannot write, with their owner
	err      error                         // cgroup detection failed
}

func detectRootlessDelegation() rootlessDelegation {
	d := rootlessDelegation{uid: os.Geteuid(), v1: map[cgroups.Controller]string{}}
	h, err := cgroups.Detect()
	if err != nil {
		d.err = err
		return d
	}
	for _, ci := range h.Controllers {
		if ci.Version == 1 {
			d.v1[ci.Name] = ci.Mount
		}
	}
	if h.UnifiedMount == "" || h.UnifiedPath == "" {
		return d
	}
	d.mount, d.enabled = h.UnifiedMount, h.UnifiedControllers
	d.dir = filepath.Join(h.UnifiedMount, h.UnifiedPath)
	for _, p := range []string{d.dir, filepath.Join(d.dir, "cgroup.procs"), filepath.Join(d.dir, "cgroup.subtree_control")} {
		if unix.Access(p, unix.W_OK) != nil {
			owner := "?"
			var st unix.Stat_t
			if unix.Stat(p, &st) == nil {
				owner = strconv.Itoa(int(st.Uid))
				if u, err := user.LookupId(owner); err == nil {
					owner = u.Username
				}
			}
			d.notWrite = append(d.notWrite, fmt.Sprintf("%s (owned by %s)", p, owner))
		}
	}
	return d
}

// missing says what the directive lacks here, "" when nothing.
func (d rootlessDelegation) missing(directive string) string {
	c := directiveControllers[directive]
	switch {
	case d.err != nil:
		return fmt.Sprintf("%s: cgroups cannot be detected: %v", directive, d.err)
	case d.mount == "":
		return fmt.Sprintf("%s needs the %s controller in a cgroup v2 subtree delegated to uid %d, and no cgroup2 filesystem is mounted", directive, c, d.uid)
	case !slices.Contains(d.enabled, string(c)):
		why := fmt.Sprintf("%s/cgroup.controllers lists %q", d.dir, strings.Join(d.enabled, " "))
		if m, ok := d.v1[c]; ok {
			why += fmt.Sprintf("; the %s controller is bound to the cgroup v1 hierarchy at %s, which tori-run does not use without root (a v1 cgroup cannot be delegated to a user safely)", c, m)
		}
		return fmt.Sprintf("%s needs the %s controller in a cgroup v2 subtree delegated to uid %d: %s", directive, c, d.uid, why)
	case len(d.notWrite) > 0:
		return fmt.Sprintf("%s needs the %s controller in a cgroup v2 subtree delegated to uid %d: not writable by you: %s", directive, c, d.uid, strings.Join(d.notWrite, ", "))
	}
	return ""
}

var directiveControllers = map[string]cgroups.Controller{
	cgroups.CPUQuota: cgroups.CPU, cgroups.CPUWeight: cgroups.CPU, cgroups.MemoryMax: cgroups.Memory,
	cgroups.MemoryHigh: cgroups.Memory, cgroups.IOWeight: cgroups.IO, cgroups.TasksMax: cgroups.PIDs,
	cgroups.AllowedCPUs: cgroups.CPUSet,
}

// fix is how a user gets a delegated subtree.
func (d rootlessDelegation) fix(controllers []string) string {
	name := strconv.Itoa(d.uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	ctl := strings.Join(controllers, " ")
	plus := "+" + strings.Join(controllers, " +")
	var b strings.Builder
	if len(d.v1) > 0 {
		fmt.Fprintf(&b, "this host binds controllers to cgroup v1: boot it with cgroup v2 only (kernel command line systemd.unified_cgroup_hierarchy=1, or cgroup_no_v1=all without systemd); then ")
	}
	fmt.Fprintf(&b, "run tori-run inside a cgroup v2 subtree delegated to %s with %s enabled. ", name, ctl)
	fmt.Fprintf(&b, "With systemd: systemd-run --user --scope -p Delegate=yes tori-run ... (the user manager delegates memory and pids by default; "+
		"for cpu, cpuset or io: sudo systemctl edit user@.service, add [Service] Delegate=cpu cpuset io memory pids, log in again). ")
	fmt.Fprintf(&b, "Without systemd, as root: mkdir /sys/fs/cgroup/tori-%[1]s; echo '%[2]s' > /sys/fs/cgroup/cgroup.subtree_control; "+
		"chown -R %[1]s /sys/fs/cgroup/tori-%[1]s; then, as %[1]s, echo $$ > /sys/fs/cgroup/tori-%[1]s/cgroup.procs and start tori-run from that shell.", name, plus)
	return b.String()
}

// checkRootlessLimits refuses, for a non-root user, a capsule that asks for
// a limit this host does not let the user enforce; limited says it asks for
// some (and, without an error, that the user's subtree can hold them).
func checkRootlessLimits(m *specs.Manifest, slice string) (limited bool, _ error) {
	wanted, err := wantedDirectives(m, slice)
	if err != nil || len(wanted) == 0 {
		return false, err
	}
	d := detectRootlessDelegation()
	var miss, ctls []string
	for _, w := range wanted {
		if s := d.missing(w); s != "" {
			miss = append(miss, s)
			if c := string(directiveControllers[w]); !slices.Contains(ctls, c) {
				ctls = append(ctls, c)
			}
		}
	}
	if len(miss) == 0 {
		return true, nil
	}
	return true, fmt.Errorf("%s: capsule %s asks for %s, which uid %d cannot enforce: %w.\n  - %s\nFix: %s\ntori-run does not run a capsule without a limit it asks for",
		m.Source, m.Name, strings.Join(wanted, ", "), d.uid, ErrRootlessLimits, strings.Join(miss, "\n  - "), d.fix(ctls))
}

// RootlessFindings are validate --host's findings for a non-root user
// (runtime/hostcheck).
func RootlessFindings(kernel hostfacts.KernelVersion, kernelErr error, wanted []string) []Finding {
	var fs []Finding
	// User namespaces.
	f := Finding{Check: "rootless/userns", Status: StatusPass, Message: "unprivileged user namespaces are allowed"}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		f.Status, f.Message = StatusFail, "/proc/sys/user/max_user_namespaces is 0: no user namespaces"
		f.Hint = "as root: sysctl -w user.max_user_namespaces=15000"
	} else if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		f.Status, f.Message = StatusFail, "/proc/sys/kernel/unprivileged_userns_clone is 0: unprivileged user namespaces are off"
		f.Hint = "as root: sysctl -w kernel.unprivileged_userns_clone=1"
	} else if b, err := os.ReadFile("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && strings.TrimSpace(string(b)) == "1" {
		f.Status, f.Message = StatusFail, "AppArmor restricts unprivileged user namespaces (/proc/sys/kernel/apparmor_restrict_unprivileged_userns is 1, as on Ubuntu 24.04)"
		f.Hint = "give tori-run an AppArmor profile with `userns,` (see /etc/apparmor.d/), or as root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
	}
	fs = append(fs, f)
	// Overlay in a user namespace.
	f = Finding{Check: "rootless/overlay", Status: StatusPass, Message: "the kernel mounts OverlayFS inside user namespaces (5.11+)"}
	if kernelErr != nil || kernel.Less(hostfacts.UserNSOverlay) {
		f.Status, f.Message = StatusFail, fmt.Sprintf("kernel %s: OverlayFS inside a user namespace needs 5.11 or newer", kernel)
		f.Hint = "upgrade the kernel, or run capsules as root"
	}
	fs = append(fs, f)
	// Subordinate ids.
	fs = append(fs, subIDFinding())
	// Limits.
	d := detectRootlessDelegation()
	f = Finding{Check: "rootless/cgroup"}
	var have []string
	for _, c := range []string{"cpu", "cpuset", "io", "memory", "pids"} {
		if slices.Contains(d.enabled, c) && len(d.notWrite) == 0 {
			have = append(have, c)
		}
	}
	var miss, ctls []string
	for _, w := range wanted {
		if s := d.missing(w); s != "" {
			miss = append(miss, s)
			ctls = append(ctls, string(directiveControllers[w]))
		}
	}
	switch {
	case len(miss) > 0:
		f.Status, f.Message = StatusFail, "capsules asking for these limits are refused: "+strings.Join(miss, "; ")
		f.Hint = d.fix(ctls)
	case len(have) == 0:
		f.Status = StatusWarn
		f.Message = fmt.Sprintf("no cgroup v2 subtree is delegated to uid %d: capsules without limits run; capsules with limits are refused (%s)", d.uid, d.missing(cgroups.MemoryMax))
		f.Hint = d.fix([]string{"memory", "pids"})
	default:
		f.Status, f.Message = StatusPass, fmt.Sprintf("cgroup v2 subtree %s is delegated to uid %d with %s", d.dir, d.uid, strings.Join(have, " "))
	}
	return append(fs, f)
}

// subIDFinding reports which mapping a capsule run by this user gets.
func subIDFinding() Finding {
	f := Finding{Check: "rootless/subids", Status: StatusPass}
	m := rootlessIDMaps()
	f.Message = m.describe()
	if !m.ranges && m.why != "" {
		f.Status, f.Hint = StatusWarn, m.hint
	}
	return f
}

// The mapping of a capsule's user namespace, without root. The user is
// root inside (container id 0); when /etc/subuid and /etc/subgid give the
// user ranges and newuidmap/newgidmap are installed, those ranges follow
// it as container ids 1, 2, ... (podman's layout: uid 1000 inside is the
// range's start + 999 on the host). libcontainer runs newuidmap and
// newgidmap (its nsexec writes uid_map itself for the one id it may map,
// and calls the setuid tool for anything more); without ranges only the
// user is mapped, and a capsule that runs as another user is refused.
type idMaps struct {
	uids, gids []rspec.LinuxIDMapping
	ranges     bool   // subordinate ranges are mapped
	why        string // without ranges: why not
	hint       string // without ranges: how to get them
}

const (
	subUIDFile = "/etc/subuid"
	subGIDFile = "/etc/subgid"
	// maxIDRanges bounds the lines of a uid_map (the kernel takes 340).
	maxIDRanges = 300
)

func rootlessIDMaps() idMaps {
	uid, gid := os.Geteuid(), os.Getegid()
	m := idMaps{
		uids: []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(uid), Size: 1}},
		gids: []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(gid), Size: 1}},
	}
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	m.hint = fmt.Sprintf("as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (and apt-get install uidmap for newuidmap and newgidmap)", name)
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			m.why = tool + " is not installed (package uidmap)"
			return m
		}
	}
	uids, why := subIDRanges(subUIDFile, name, uid)
	if why != "" {
		m.why = why
		return m
	}
	gids, why := subIDRanges(subGIDFile, name, gid)
	if why != "" {
		m.why = why
		return m
	}
	m.uids, m.gids, m.ranges, m.hint = append(m.uids, uids...), append(m.gids, gids...), true, ""
	return m
}

// subIDRanges are the ranges file gives the user (by name or uid), as
// container ids from 1 on; why says why there are none. A range holding the
// user's own id is left out: the kernel refuses overlapping ranges.
func subIDRanges(file, name string, own int) ([]rspec.LinuxIDMapping, string) {
	ids, err := sysuser.ParseSubIDFileFilter(file, func(s sysuser.SubID) bool {
		return s.Name == name || s.Name == strconv.Itoa(own)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, file + " does not exist"
	}
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", file, err)
	}
	var out []rspec.LinuxIDMapping
	next := int64(1)
	for _, s := range ids {
		if s.Count <= 0 || s.SubID < 0 || s.SubID+s.Count > 1<<32-1 || next+s.Count > 1<<32-1 ||
			(int64(own) >= s.SubID && int64(own) < s.SubID+s.Count) || len(out) == maxIDRanges {
			continue
		}
		out = append(out, rspec.LinuxIDMapping{ContainerID: uint32(next), HostID: uint32(s.SubID), Size: uint32(s.Count)})
		next += s.Count
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("%s has no range for %s", file, name)
	}
	return out, ""
}

// describe says which mapping capsules get.
func (m idMaps) describe() string {
	if !m.ranges {
		s := fmt.Sprintf("capsules map uid %d (you) to root inside the capsule, and no other id: %s", m.uids[0].HostID, m.why)
		return s + "; a capsule with user: other than root is refused"
	}
	r := func(ms []rspec.LinuxIDMapping) string {
		var parts []string
		for _, x := range ms[1:] {
			parts = append(parts, fmt.Sprintf("%d-%d -> %d-%d", x.ContainerID, x.ContainerID+x.Size-1, x.HostID, x.HostID+x.Size-1))
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("capsules map uid %d (you) to root inside, and through newuidmap/newgidmap uids %s, gids %s (%s, %s)",
		m.uids[0].HostID, r(m.uids), r(m.gids), subUIDFile, subGIDFile)
}

// maps reports whether the capsule's ids (the manifest's user) are mapped.
func (m idMaps) maps(uid, gid uint32) bool {
	in := func(ms []rspec.LinuxIDMapping, id uint32) bool {
		return slices.ContainsFunc(ms, func(x rspec.LinuxIDMapping) bool { return id >= x.ContainerID && id-x.ContainerID < x.Size })
	}
	return in(m.uids, uid) && in(m.gids, gid)
}
