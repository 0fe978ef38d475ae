//go:build linux

package rootless

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/specs"
)

// Without root (SPEC §3): limits need a cgroup v2 subtree delegated to the
// user, with the controllers the limits use enabled. tori-run never uses
// cgroup v1 without root (its files cannot be handed to a user safely), and
// never lets a limit go silently: libcontainer's RootlessCgroups ignores
// cgroup errors, so a capsule that asks for a limit a user cannot get is
// refused here, before anything is made, with the exact missing piece.

// ErrLimits is a capsule whose limits a non-root user cannot get.
var ErrLimits = errors.New("limits need a cgroup v2 subtree delegated to you")

// WantedDirectives lists the resource directives a capsule asks for:
// capsule-wide (with a slice over them) and per service.
func WantedDirectives(m *specs.Manifest, slice string) ([]string, error) {
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

// delegation says, for each controller, what a non-root user lacks to use
// it in its cgroup v2 subtree: nil when nothing.
type delegation struct {
	uid      int
	mount    string // the cgroup2 mount, "" if none
	dir      string // our own v2 cgroup's folder
	enabled  []string
	v1       map[cgroups.Controller]string // controllers bound to v1: their mount
	notWrite []string                      // files of dir we cannot write, with their owner
	err      error                         // cgroup detection failed
}

func detectDelegation() delegation {
	d := delegation{uid: os.Geteuid(), v1: map[cgroups.Controller]string{}}
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
func (d delegation) missing(directive string) string {
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
func (d delegation) fix(controllers []string) string {
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

// CheckLimits refuses, for a non-root user, a capsule that asks for a limit
// this host does not let the user enforce; limited says it asks for some
// (and, without an error, that the user's subtree can hold them).
func CheckLimits(m *specs.Manifest, slice string) (limited bool, _ error) {
	wanted, err := WantedDirectives(m, slice)
	if err != nil || len(wanted) == 0 {
		return false, err
	}
	d := detectDelegation()
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
		m.Source, m.Name, strings.Join(wanted, ", "), d.uid, ErrLimits, strings.Join(miss, "\n  - "), d.fix(ctls))
}
