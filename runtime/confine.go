//go:build linux

package runtime

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/capability"
	libseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/specs"
)

// defaultCaps is podman's default capability set (containers/common
// DefaultCapabilities): Docker's 14 without CAP_NET_RAW (raw and packet
// sockets: sniffing and spoofing on the host's network), CAP_MKNOD (device
// nodes) and CAP_AUDIT_WRITE.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
	"CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// capsuleCaps is the capability set of a capsule: the default, less what
// the manifest drops ("ALL": everything), plus what it adds. Each added name
// must be one this kernel has.
func capsuleCaps(m *specs.Manifest) ([]string, error) {
	var caps []string
	if !slices.Contains(m.Capabilities.Drop, "ALL") {
		for _, c := range defaultCaps {
			if !slices.Contains(m.Capabilities.Drop, c) {
				caps = append(caps, c)
			}
		}
	}
	last, err := capability.LastCap()
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's capabilities: %w", err)
	}
	for _, a := range m.Capabilities.Add {
		known := false
		for _, c := range capability.ListKnown() {
			if "CAP_"+strings.ToUpper(c.String()) == a {
				known = true
				if c > last {
					return nil, fmt.Errorf("%s: capabilities.add: this kernel has no %s (its last capability is CAP_%s); drop it from the manifest or run on a newer kernel",
						m.Source, a, strings.ToUpper(last.String()))
				}
			}
		}
		if !known {
			return nil, fmt.Errorf("%s: capabilities.add: unknown capability %s", m.Source, a)
		}
		if !slices.Contains(caps, a) {
			caps = append(caps, a)
		}
	}
	return caps, nil
}

// SeccompMode says which system call filter a capsule gets, for validate,
// spec and status: "default" (tori-run's profile), "unconfined", or
// "profile FILE".
func SeccompMode(m *specs.Manifest) string {
	switch m.Seccomp {
	case "":
		return "default"
	case specs.SeccompUnconfined:
		return specs.SeccompUnconfined
	}
	return "profile " + m.Seccomp
}

// capsuleSeccomp is the capsule's filter in the runtime-spec form: nil with
// seccomp: unconfined; the profile file in the app (moby's JSON format);
// else tori-run's default, moby's profile made stricter:
//
//   - ptrace, process_vm_readv/writev are refused (EPERM) unless the capsule
//     adds CAP_SYS_PTRACE. Moby allows them on kernels from 4.8 on, relying
//     on the kernel's ptrace checks; in a capsule every service runs as the
//     same uid, so that would let any service trace and read its siblings.
//
//   - clone3: moby answers it with ENOSYS (without CAP_SYS_ADMIN), so that
//     libc and Go fall back to clone(2), whose namespace flags the filter
//     can see and refuses; clone3 passes its flags in memory, where a
//     filter cannot look. So does tori-run on cgroup v1 and hybrid hosts,
//     where the init starts services without clone3 (v1 tasks files on a
//     locked thread; cgroups.SpawnFiles). On cgroup v2 (initClone3) the
//     init needs clone3(CLONE_INTO_CGROUP) to start a service born in its
//     cgroup, so this filter allows clone3, and the init starts every
//     service through a trampoline (capinit.ExecCommand, runtime/capinit/trampoline_linux.go)
//     that adds one more filter, clone3 -> ENOSYS, before it execs the
//     service: no service can call clone3 either way.
//
//   - Only the native architecture: moby's profile also admits the 32-bit
//     ABIs (x86 and x32 on amd64), whose system calls then kill the calling
//     thread. Besides the smaller attack surface (the compat syscall layer),
//     libseccomp builds a filter for one architecture instead of three: the
//     start of a capsule costs ~1.07x one without a filter instead of ~1.9x
//     (docs/PERFORMANCE.md). A capsule with 32-bit programs names a profile.
//
// libcontainer answers syscalls newer than the profile with ENOSYS (so
// programs fall back), and denials with EPERM, as runc does.
func capsuleSeccomp(m *specs.Manifest, appDir string, caps []string, initClone3 bool) (*rspec.LinuxSeccomp, error) {
	if m.Seccomp == specs.SeccompUnconfined {
		return nil, nil
	}
	rs := &rspec.Spec{Process: &rspec.Process{Capabilities: &rspec.LinuxCapabilities{Bounding: caps}}}
	if m.Seccomp != "" {
		file := filepath.Join(appDir, filepath.FromSlash(m.Seccomp))
		body, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: seccomp: cannot read the profile %s: %w", m.Source, m.Seccomp, err)
		}
		sc, err := seccomp.LoadProfile(string(body), rs)
		if err != nil {
			return nil, fmt.Errorf("%s: seccomp: the profile %s: %w (expected moby's JSON format, as docker run --security-opt seccomp=FILE reads)", m.Source, m.Seccomp, err)
		}
		if sc == nil {
			return nil, fmt.Errorf("%s: seccomp: the profile %s has no defaultAction and no syscalls; write seccomp: unconfined to run without a filter", m.Source, m.Seccomp)
		}
		return sc, nil
	}
	p := seccomp.DefaultProfile()
	for i := range p.ArchMap {
		p.ArchMap[i].SubArches = nil
	}
	p.Syscalls = slices.DeleteFunc(p.Syscalls, func(s *seccomp.Syscall) bool {
		kernelGated := s.Includes != nil && s.Includes.MinKernel != nil && len(s.Includes.Caps) == 0
		if kernelGated && slices.Contains(s.Names, "ptrace") {
			return true
		}
		return initClone3 && slices.Equal(s.Names, []string{"clone3"})
	})
	if initClone3 {
		p.Syscalls = append(p.Syscalls, &seccomp.Syscall{LinuxSyscall: rspec.LinuxSyscall{Names: []string{"clone3"}, Action: rspec.ActAllow}})
	}
	return seccompSetup(p, rs)
}

// seccompSetup converts a moby profile for this kernel and capability set.
func seccompSetup(p *seccomp.Seccomp, rs *rspec.Spec) (*rspec.LinuxSeccomp, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return seccomp.LoadProfile(string(b), rs)
}

// checkSeccompSupport fails when a filter is asked for but this tori-run was
// built without libseccomp: the capsule must not start unfiltered.
func checkSeccompSupport(m *specs.Manifest) error {
	if m.Seccomp == specs.SeccompUnconfined || libseccomp.Enabled {
		return nil
	}
	return fmt.Errorf("%s: this tori-run was built without seccomp support, so it cannot apply the capsule's system call filter (%s) and will not start it unfiltered: build it with -tags seccomp and libseccomp (make build does), or write seccomp: unconfined in the manifest to run without one",
		m.Source, SeccompMode(m))
}

// confinementFinding says what confines the capsule: its filter and its
// capabilities, and names each default the manifest weakens.
func confinementFinding(m *specs.Manifest) Finding {
	f := Finding{Check: "confinement", Status: StatusPass, File: m.Source}
	caps, err := capsuleCaps(m)
	if err != nil {
		f.Status, f.Message = StatusFail, err.Error()
		return f
	}
	var weaker []string
	if m.Seccomp == specs.SeccompUnconfined {
		weaker = append(weaker, "seccomp: unconfined (no system call filter)")
	}
	for _, a := range m.Capabilities.Add {
		if !slices.Contains(defaultCaps, a) {
			weaker = append(weaker, "adds "+a)
		}
	}
	short := make([]string, len(caps))
	for i, c := range caps {
		short[i] = strings.TrimPrefix(c, "CAP_")
	}
	f.Message = fmt.Sprintf("seccomp %s; capabilities %s", SeccompMode(m), strings.Join(short, " "))
	if len(caps) == 0 {
		f.Message = fmt.Sprintf("seccomp %s; no capabilities", SeccompMode(m))
	}
	if len(weaker) > 0 {
		f.Status = StatusWarn
		f.Message += "; weaker than the default: " + strings.Join(weaker, ", ")
		f.Hint = "each of these is the manifest's choice; drop it unless the capsule needs it"
	}
	return f
}

// checkSeccompProfile reads and converts the profile the manifest names
// from the app, as a start would.
func checkSeccompProfile(m *specs.Manifest, app fs.FS) error {
	body, err := fs.ReadFile(app, m.Seccomp)
	if err != nil {
		return fmt.Errorf("the profile %s: %w", m.Seccomp, err)
	}
	caps, err := capsuleCaps(m)
	if err != nil {
		return err
	}
	rs := &rspec.Spec{Process: &rspec.Process{Capabilities: &rspec.LinuxCapabilities{Bounding: caps}}}
	sc, err := seccomp.LoadProfile(string(body), rs)
	if err != nil {
		return fmt.Errorf("the profile %s: %w", m.Seccomp, err)
	}
	if sc == nil {
		return fmt.Errorf("the profile %s has no defaultAction and no syscalls", m.Seccomp)
	}
	return nil
}

// seccompSupportFinding says whether this tori-run can apply filters: built
// with libseccomp, on a kernel with seccomp filters.
func seccompSupportFinding() Finding {
	f := Finding{Check: "seccomp"}
	if !libseccomp.Enabled {
		f.Status = StatusFail
		f.Message = "this tori-run was built without seccomp support: it refuses every capsule that does not say seccomp: unconfined"
		f.Hint = "build it with make build (-tags seccomp, libseccomp-dev installed)"
		return f
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil && !strings.Contains(string(b), "\nSeccomp:") {
		f.Status = StatusFail
		f.Message = "this kernel has no seccomp (no Seccomp: line in /proc/self/status)"
		f.Hint = "use a kernel built with CONFIG_SECCOMP_FILTER (every distribution kernel is)"
		return f
	}
	major, minor, micro := libseccomp.Version()
	f.Status = StatusPass
	f.Message = fmt.Sprintf("seccomp filters are applied (libseccomp %d.%d.%d, linked in)", major, minor, micro)
	return f
}
