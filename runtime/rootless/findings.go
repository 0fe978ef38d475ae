//go:build linux

package rootless

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/runtime/hostfacts"
)

// Status is a finding's outcome, with runtime.Status's values: runtime
// converts Findings into its own findings' vocabulary (runtime.Finding),
// which this package, below runtime, cannot import.
type Status string

const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Finding is one rootless host check, as validate --host prints it.
type Finding struct {
	Check   string
	Status  Status
	Message string
	Hint    string
}

// Findings are validate --host's findings for a non-root user: user
// namespaces, OverlayFS in them, the subordinate ids and the delegated
// cgroup v2 subtree for the directives wanted.
func Findings(kernel hostfacts.KernelVersion, kernelErr error, wanted []string) []Finding {
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
	d := detectDelegation()
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
	m := detectIDMaps()
	f.Message = m.describe()
	if !m.ranges && m.why != "" {
		f.Status, f.Hint = StatusWarn, m.hint
	}
	return f
}
