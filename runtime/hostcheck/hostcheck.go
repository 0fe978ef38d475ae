//go:build linux

package hostcheck

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostfacts"
)

// Kernel versions the kernel check compares with.
var (
	minKernel      = hostfacts.KernelVersion{Major: 4, Minor: 18} // the oldest tori-run supports
	userNSOverlay  = hostfacts.UserNSOverlay                      // overlay mounts inside user namespaces (rootless capsules)
	checkLimitName = "limit/"
)

// CheckHost inspects this host for running capsules and returns its findings in a fixed order: kernel, root,
// overlay, cgroup mode, one per resource directive, cgroup delegation, state dir, and python3 when
// opts.Python is set. It mounts a throwaway overlay (as root), creates and removes empty child cgroups
// beneath our own, writes and removes a temp file in the state dir (or its nearest existing parent), and runs
// python3 once; it changes nothing else.
func CheckHost(opts HostOptions) []Finding {
	return liveHost().check(opts)
}

// hostEnv is what the checks take from the host, so tests can feed fake kernels, cgroup modes and pythons.
type hostEnv struct {
	kernelRelease func() (string, error)
	euid          func() int
	overlayCheck  func(scratchDir string) error
	scratchDir    string
	detect        func() (*cgroups.Host, error)
	systemPath    string
	callerPath    string // $PATH, only to say when its python3 differs from the capsule's
	pythonVersion func(bin string) (string, error)
	rootless      func(hostfacts.KernelVersion, error, []string) []Finding // runtime.RootlessFindings (runtime/rootless); nil: not checked
}

func liveHost() hostEnv {
	return hostEnv{
		kernelRelease: func() (string, error) {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return "", fmt.Errorf("uname: %w", err)
			}
			return unix.ByteSliceToString(u.Release[:]), nil
		},
		euid:          os.Geteuid,
		overlayCheck:  overlay.Check,
		scratchDir:    os.TempDir(),
		detect:        cgroups.Detect,
		systemPath:    SystemPath,
		callerPath:    os.Getenv("PATH"),
		pythonVersion: hostfacts.PythonVersionRunner(5 * time.Second),
		rootless:      runtime.RootlessFindings,
	}
}

func (e hostEnv) check(opts HostOptions) []Finding {
	fs := []Finding{e.checkKernel(), e.checkRoot(), e.checkOverlay()}
	h, err := e.detect()
	fs = append(fs, checkCgroupMode(h, err))
	fs = append(fs, e.checkLimits(h, err, opts.Directives)...)
	fs = append(fs, e.checkDelegation(h, err))
	fs = append(fs, checkStateDir(cmp.Or(opts.StateDir, runtime.DefaultStateRoot)))
	if e.euid() != 0 && e.rootless != nil {
		rel, kerr := e.kernelRelease()
		kv, perr := hostfacts.ParseKernel(rel)
		fs = append(fs, runtime.RootlessFindings(kv, errors.Join(kerr, perr), opts.Directives)...)
	}
	if opts.Python != "" {
		fs = append(fs, e.checkPython(opts.Python))
	}
	return fs
}

func (e hostEnv) checkKernel() Finding {
	f := Finding{Check: "kernel"}
	release, err := e.kernelRelease()
	if err != nil {
		f.Status, f.Message = StatusFail, err.Error()
		return f
	}
	v, err := hostfacts.ParseKernel(release)
	switch {
	case err != nil:
		f.Status, f.Message = StatusWarn, err.Error()+"; cannot compare it with the "+minKernel.String()+" tori-run needs"
		f.Hint = "check `uname -r`"
	case v.Less(minKernel):
		f.Status = StatusFail
		f.Message = fmt.Sprintf("kernel %s is older than %s, the oldest tori-run supports", release, minKernel)
		f.Hint = "upgrade the kernel to " + minKernel.String() + " or newer (Debian 12 ships 6.1)"
	case v.Less(userNSOverlay):
		f.Status = StatusWarn
		f.Message = fmt.Sprintf("kernel %s: capsules run as root work, but overlay mounts inside user namespaces (rootless capsules) need %s", release, userNSOverlay)
		f.Hint = "run capsules as root, or upgrade the kernel to " + userNSOverlay.String() + " or newer"
	default:
		f.Status, f.Message = StatusPass, fmt.Sprintf("kernel %s (%s or newer)", release, userNSOverlay)
	}
	return f
}

func (e hostEnv) checkRoot() Finding {
	if uid := e.euid(); uid != 0 {
		return Finding{Check: "root", Status: StatusWarn,
			Message: fmt.Sprintf("running as uid %d, not root: the overlay and cgroup checks below are limited to what uid %d may do", uid, uid),
			Hint:    "run as root to run capsules (sudo tori-run ...)"}
	}
	return Finding{Check: "root", Status: StatusPass, Message: "running as root (uid 0)"}
}

func (e hostEnv) checkOverlay() Finding {
	f := Finding{Check: "overlay"}
	err := e.overlayCheck(e.scratchDir)
	var me *overlay.MountError
	switch {
	case err == nil:
		f.Status = StatusPass
		f.Message = "overlay works: mounted an overlay on a tmpfs under " + e.scratchDir + ", wrote through it, unmounted it"
	case errors.Is(err, overlay.ErrNeedRoot):
		f.Status, f.Message = StatusWarn, err.Error()
		f.Hint = "run `tori-run validate --host` as root for a real test mount"
	case errors.Is(err, overlay.ErrNotSupported):
		f.Status, f.Message = StatusFail, err.Error()
		f.Hint = "load the overlay module: modprobe overlay (and add overlay to /etc/modules to keep it)"
	case errors.As(err, &me) && errors.Is(err, unix.EPERM):
		f.Status, f.Message = StatusFail, err.Error()
		f.Hint = "mounting needs CAP_SYS_ADMIN in the host's user namespace; in a container, run it privileged or on the host"
	case errors.As(err, &me) && me.Op == "umount":
		f.Status, f.Message = StatusFail, err.Error()
		f.Hint = "something holds the test mount: check `findmnt " + me.Target + "`, unmount it and remove the directory"
	default:
		f.Status, f.Message = StatusFail, err.Error()
		f.Hint = "check `dmesg | grep -i overlay` for the kernel's reason; TMPDIR sets where the test mounts"
	}
	return f
}

func checkCgroupMode(h *cgroups.Host, err error) Finding {
	f := Finding{Check: "cgroup-mode"}
	if err != nil {
		f.Status, f.Message = StatusFail, "cannot detect cgroups: "+err.Error()
		f.Hint = "mount cgroup2 on /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup), or the v1 hierarchies"
		return f
	}
	f.Status = StatusPass
	switch h.Mode {
	case cgroups.Hybrid:
		var v1 []string
		for _, ci := range h.Controllers {
			if ci.Version == 1 {
				v1 = append(v1, ci.KernelName)
			}
		}
		f.Message = fmt.Sprintf("hybrid: limits go through cgroup v1 (%s); cgroup2 at %s offers only %q",
			strings.Join(v1, ", "), h.UnifiedMount, strings.Join(h.UnifiedControllers, " "))
	case cgroups.Unified:
		f.Message = "unified: cgroup v2 is used (mounted at " + h.UnifiedMount + ")"
	case cgroups.Legacy:
		f.Message = "legacy: cgroup v1 only; limits go through the v1 hierarchies"
	default:
		f.Status, f.Message = StatusFail, "unknown cgroup mode "+h.Mode.String()
	}
	return f
}

func (e hostEnv) checkLimits(h *cgroups.Host, detectErr error, wanted []string) []Finding {
	names := cgroups.Directives
	var unknown []string
	if len(wanted) > 0 {
		names = nil
		for _, d := range cgroups.Directives {
			if slices.Contains(wanted, d) {
				names = append(names, d)
			}
		}
		for _, d := range wanted {
			if !slices.Contains(cgroups.Directives, d) && !slices.Contains(unknown, d) {
				unknown = append(unknown, d)
			}
		}
	}
	var fs []Finding
	if detectErr != nil {
		for _, d := range names {
			fs = append(fs, Finding{Check: checkLimitName + d, Status: StatusWarn,
				Message: d + " cannot be checked: cgroup detection failed",
				Hint:    "fix the cgroup-mode finding first"})
		}
	} else {
		limits := cgroups.Limits(h)
		for _, d := range names {
			for _, l := range limits {
				if l.Directive == d {
					fs = append(fs, e.limitFinding(h, l))
				}
			}
		}
	}
	for _, d := range unknown {
		fs = append(fs, Finding{Check: checkLimitName + d, Status: StatusWarn,
			Message: fmt.Sprintf("unknown resource directive %q: host checks cover %s", d, strings.Join(cgroups.Directives, ", ")),
			Hint:    "check the directive's spelling against systemd.resource-control(5)"})
	}
	return fs
}

func (e hostEnv) limitFinding(h *cgroups.Host, l cgroups.LimitSupport) Finding {
	f := Finding{Check: checkLimitName + l.Directive}
	if l.Enforced {
		f.Status = StatusPass
		f.Message = fmt.Sprintf("%s is enforced by cgroup v%d %s: %s", l.Directive, l.Version, l.File, l.Note)
		return f
	}
	f.Status = StatusWarn
	f.Message = fmt.Sprintf("%s cannot be enforced here: %s", l.Directive, l.Note)
	ci, _ := h.Controller(l.Controller)
	switch {
	case l.Directive == cgroups.MemoryHigh && l.Version == 1:
		f.Hint = "set MemoryMax for a hard limit on this host; memory.high needs cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1)"
	case ci.Usable && !ci.Delegated:
		f.Hint = e.delegationHint()
	case !ci.Usable && ci.Version == 2 && ci.Dir != "":
		f.Hint = fmt.Sprintf("enable the %s controller for our cgroup: echo +%s > %s/cgroup.subtree_control, or let the service manager delegate it",
			ci.KernelName, ci.KernelName, path.Dir(ci.Dir))
	case !ci.Usable:
		f.Hint = fmt.Sprintf("mount the %s hierarchy (mount -t cgroup -o %s cgroup /sys/fs/cgroup/%s), or use a cgroup v2 host",
			l.Controller, ci.KernelName, ci.KernelName)
		if ci.KernelName == "" {
			f.Hint = fmt.Sprintf("mount cgroup2 on /sys/fs/cgroup, or a v1 hierarchy with the %s controller", l.Controller)
		}
	case l.Directive == cgroups.IOWeight:
		f.Hint = "use the bfq I/O scheduler on the capsule's disk (echo bfq > /sys/block/DEV/queue/scheduler), or drop IOWeight"
	case l.Directive == cgroups.CPUQuota:
		f.Hint = "this kernel has no CFS bandwidth control (CONFIG_CFS_BANDWIDTH); drop CPUQuota or use a kernel that has it"
	default:
		f.Hint = "drop " + l.Directive + " from the manifest, or run on a host where " + l.File + " exists"
	}
	return f
}

func (e hostEnv) delegationHint() string {
	if e.euid() != 0 {
		return "run as root, or start tori-run in a cgroup delegated to you (systemd-run --user -p Delegate=yes ...)"
	}
	return "make the cgroup filesystem writable here (a container may mount /sys/fs/cgroup read-only), or run on the host"
}

func (e hostEnv) checkDelegation(h *cgroups.Host, detectErr error) Finding {
	f := Finding{Check: "cgroup-delegation"}
	if detectErr != nil {
		f.Status, f.Message = StatusFail, "cannot check delegation: cgroup detection failed"
		f.Hint = "fix the cgroup-mode finding first"
		return f
	}
	var ok, bad []string
	for _, ci := range h.Controllers {
		if ci.Delegated {
			ok = append(ok, fmt.Sprintf("%s (v%d %s)", ci.Name, ci.Version, ci.Dir))
		} else {
			bad = append(bad, fmt.Sprintf("%s: %s", ci.Name, ci.Reason))
		}
	}
	switch {
	case len(ok) == 0:
		f.Status = StatusFail
		f.Message = "cannot create cgroups under our own for any controller: " + strings.Join(bad, "; ")
		f.Hint = e.delegationHint()
	case len(bad) > 0:
		f.Status = StatusWarn
		f.Message = "can create cgroups under our own for " + strings.Join(ok, ", ") + "; not for " + strings.Join(bad, "; ")
		f.Hint = "limits of the controllers not delegated cannot be enforced; see the limit findings"
	default:
		f.Status = StatusPass
		f.Message = "can create cgroups under our own for " + strings.Join(ok, ", ")
	}
	return f
}

// checkStateDir passes when dir is a writable directory, or does not exist yet but its nearest existing
// parent is a writable directory (so it can be created). Writability is tested by creating and removing a
// temp file, which catches read-only mounts that permission bits do not show.
func checkStateDir(dir string) Finding {
	f := Finding{Check: "state-dir"}
	hint := "create it (mkdir -p " + dir + ") as a user who can, or set TORI_STATE_ROOT to a folder you can write"
	st, err := os.Stat(dir)
	switch {
	case err == nil && !st.IsDir():
		f.Status, f.Message, f.Hint = StatusFail, fmt.Sprintf("state dir %s exists but is not a directory (%s)", dir, st.Mode().Type()), hint
	case err == nil:
		if werr := writeTest(dir); werr != nil {
			f.Status, f.Message, f.Hint = StatusFail, fmt.Sprintf("state dir %s exists but is not writable: %v", dir, werr), hint
		} else {
			f.Status, f.Message = StatusPass, "state dir "+dir+" exists and is writable"
		}
	case !errors.Is(err, os.ErrNotExist):
		f.Status, f.Message, f.Hint = StatusFail, fmt.Sprintf("state dir %s: %v", dir, err), hint
	default:
		parent, perr := nearestExisting(dir)
		switch {
		case perr != nil:
			f.Status, f.Message, f.Hint = StatusFail, fmt.Sprintf("state dir %s does not exist and %v", dir, perr), hint
		default:
			if werr := writeTest(parent); werr != nil {
				f.Status, f.Message, f.Hint = StatusFail, fmt.Sprintf("state dir %s does not exist and cannot be created: %s is not writable: %v", dir, parent, werr), hint
			} else {
				f.Status, f.Message = StatusPass, fmt.Sprintf("state dir %s does not exist yet; it can be created (%s is writable)", dir, parent)
			}
		}
	}
	return f
}

// nearestExisting returns the closest ancestor of dir that exists, which must be a directory.
func nearestExisting(dir string) (string, error) {
	p := filepath.Clean(dir)
	for {
		parent := filepath.Dir(p)
		if parent == p {
			return "", fmt.Errorf("no parent of %s exists", dir)
		}
		p = parent
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("its parent %s: %w", p, err)
		}
		if !st.IsDir() {
			return "", fmt.Errorf("its parent %s is not a directory", p)
		}
		return p, nil
	}
}

func writeTest(dir string) error {
	tmp, err := os.CreateTemp(dir, ".tori-write-test-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write([]byte("ok\n"))
	cerr := tmp.Close()
	rerr := os.Remove(tmp.Name())
	return errors.Join(werr, cerr, rerr)
}

func (e hostEnv) checkPython(wanted string) Finding {
	f := Finding{Check: "python3"}
	want, err := hostfacts.ParseVersion(wanted, false)
	if err != nil {
		f.Status, f.Message = StatusFail, "dependencies.python: "+err.Error()
		f.Hint = `write the version the capsule needs as MAJOR.MINOR, e.g. python: "3.11"`
		return f
	}
	// The .py rule (python.go): python3.X first, then python3.
	exact := fmt.Sprintf("python%d.%d", want[0], want[1])
	if bin, err := hostfacts.LookPathIn(exact, e.systemPath); err == nil {
		f.Status = StatusPass
		f.Message = fmt.Sprintf("capsule declares %s, host has %s; .py commands run with it", wanted, bin)
		return f
	}
	bin, err := hostfacts.LookPathIn("python3", e.systemPath)
	if err != nil {
		f.Status = StatusFail
		f.Message = fmt.Sprintf("capsule declares python %s, but the host's system folders have neither %s nor python3: %v", wanted, exact, err)
		if other, oerr := hostfacts.LookPathIn("python3", e.callerPath); oerr == nil {
			f.Message += fmt.Sprintf(" (the python3 on your $PATH, %s, is not visible to capsules)", other)
		}
		f.Hint = "apt-get install python3"
		return f
	}
	out, err := e.pythonVersion(bin)
	if err != nil {
		f.Status, f.Message = StatusFail, "cannot tell the version of "+bin+": "+err.Error()
		f.Hint = "check that " + bin + " runs: " + bin + " --version"
		return f
	}
	have, err := hostfacts.ParseVersion(out, true)
	if err != nil {
		f.Status, f.Message = StatusFail, fmt.Sprintf("%s printed a version tori-run cannot read: %v", bin, err)
		f.Hint = "check that " + bin + " is a CPython 3 interpreter"
		return f
	}
	switch {
	case have[0] == want[0] && have[1] == want[1]:
		f.Status = StatusPass
		f.Message = fmt.Sprintf("capsule declares %s, host has %s (%s)", wanted, out, bin)
	case have[0] == want[0] && have[1] > want[1]:
		f.Status = StatusWarn
		f.Message = fmt.Sprintf("capsule declares %s, host has no %s but %s (%s); .py commands run with it", wanted, exact, out, bin)
		f.Hint = fmt.Sprintf("a newer minor version usually runs %s code, but test the capsule with it, then declare python: \"%d.%d\"", wanted, have[0], have[1])
	default:
		f.Status = StatusFail
		f.Message = fmt.Sprintf("capsule declares %s, host has %s (%s), which is older or another major version", wanted, out, bin)
		f.Hint = fmt.Sprintf("install Python %s on the host (apt-get install python3 on a release that ships it), or declare the version the capsule really needs", wanted)
	}
	return f
}
