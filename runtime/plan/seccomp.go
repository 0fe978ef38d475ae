package plan

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/moby/profiles/seccomp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/specs"
)

// moby-seccomp-default.json is moby/profiles/seccomp v0.3.0's default.json,
// the file its generate.go writes from DefaultProfile() (Apache-2.0, The
// Moby Authors). That function and LoadProfile are Linux-only and read the
// running kernel; the plan must compile for any host and from stated facts,
// so it carries the profile as data and converts it below. The Linux test
// TestDefaultProfileIsMobys fails when moby's profile and this copy differ.
//
//go:embed moby-seccomp-default.json
var mobyDefault []byte

// DefaultProfile is moby's default seccomp profile (a fresh copy).
func DefaultProfile() (*seccomp.Seccomp, error) {
	var p seccomp.Seccomp
	if err := json.Unmarshal(mobyDefault, &p); err != nil {
		return nil, fmt.Errorf("moby's default seccomp profile: %w", err)
	}
	return &p, nil
}

// Seccomp is the capsule's filter in the runtime-spec form: nil with
// seccomp: unconfined; the profile the manifest names (profile: its body,
// moby's JSON format); else tori-run's default, moby's profile made
// stricter:
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
//     service through a trampoline (capinit.ExecCommand,
//     runtime/capinit/trampoline_linux.go) that adds one
//     more filter, clone3 -> ENOSYS, before it execs the service: no
//     service can call clone3 either way.
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
func Seccomp(m *specs.Manifest, profile []byte, caps []string, initClone3 bool, f Facts) (*rspec.LinuxSeccomp, error) {
	if m.Seccomp == specs.SeccompUnconfined {
		return nil, nil
	}
	if m.Seccomp != "" {
		var p seccomp.Seccomp
		if err := json.Unmarshal(profile, &p); err != nil {
			return nil, fmt.Errorf("%s: seccomp: the profile %s: decoding it: %w (expected moby's JSON format, as docker run --security-opt seccomp=FILE reads)", m.Source, m.Seccomp, err)
		}
		sc, err := convertProfile(&p, caps, f)
		if err != nil {
			return nil, fmt.Errorf("%s: seccomp: the profile %s: %w (expected moby's JSON format, as docker run --security-opt seccomp=FILE reads)", m.Source, m.Seccomp, err)
		}
		if sc == nil {
			return nil, fmt.Errorf("%s: seccomp: the profile %s has no defaultAction and no syscalls; write seccomp: unconfined to run without a filter", m.Source, m.Seccomp)
		}
		return sc, nil
	}
	p, err := DefaultProfile()
	if err != nil {
		return nil, err
	}
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
	return convertProfile(p, caps, f)
}

// CheckProfile converts the profile the manifest names as a start would
// (validate's check).
func CheckProfile(m *specs.Manifest, profile []byte, f Facts) error {
	caps, err := Capabilities(m, f)
	if err != nil {
		return err
	}
	_, err = Seccomp(m, profile, caps, f.Cgroup == CgroupV2, f)
	return err
}

// libseccomp's names of the architectures, by GOARCH (moby's goToNative
// and nativeToSeccomp, joined).
var archOf = map[string]struct {
	native string
	arch   rspec.Arch
}{
	"386": {"x86", rspec.ArchX86}, "amd64": {"amd64", rspec.ArchX86_64}, "arm": {"arm", rspec.ArchARM},
	"arm64": {"arm64", rspec.ArchAARCH64}, "loong64": {"loongarch64", rspec.ArchLOONGARCH64},
	"mips64": {"mips64", rspec.ArchMIPS64}, "mips64p32": {"mips64n32", rspec.ArchMIPS64N32},
	"mips64le": {"mipsel64", rspec.ArchMIPSEL64}, "mips64p32le": {"mips3l64n32", rspec.ArchMIPSEL64N32},
	"mipsle": {"mipsel", rspec.ArchMIPSEL}, "ppc": {"ppc", rspec.ArchPPC}, "ppc64": {"ppc64", rspec.ArchPPC64},
	"ppc64le": {"ppc64le", rspec.ArchPPC64LE}, "riscv64": {"riscv64", rspec.ArchRISCV64},
	"s390": {"s390", rspec.ArchS390}, "s390x": {"s390x", rspec.ArchS390X},
}

// convertProfile is moby's setupSeccomp (seccomp_linux.go, v0.3.0) with
// the architecture and the kernel taken from the facts instead of the
// running host: the rules are kept whose arches, capabilities (of caps)
// and minimum kernel match.
func convertProfile(config *seccomp.Seccomp, caps []string, f Facts) (*rspec.LinuxSeccomp, error) {
	if config.DefaultAction == "" && len(config.Syscalls) == 0 {
		return nil, nil
	}
	if len(config.Architectures) != 0 && len(config.ArchMap) != 0 {
		return nil, errors.New("both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'")
	}
	if len(config.LinuxSeccomp.Syscalls) != 0 {
		return nil, errors.New("the LinuxSeccomp.Syscalls field should be empty")
	}
	kernel, err := ParseKernel(f.Kernel)
	if err != nil {
		return nil, err
	}
	atLeast := func(v *seccomp.KernelVersion) bool {
		return !kernel.Less(KernelVersion{int(v.Kernel), int(v.Major)})
	}
	out := config.LinuxSeccomp
	a := archOf[f.arch()]
	for _, am := range config.ArchMap {
		if a.arch != "" && am.Arch == a.arch {
			out.Architectures = append(out.Architectures, am.Arch)
			out.Architectures = append(out.Architectures, am.SubArches...)
			break
		}
	}
	arch := a.native
rules:
	for _, call := range config.Syscalls {
		if call.Name != "" { //nolint:staticcheck // old profiles name one syscall in name:, as moby reads them
			if len(call.Names) != 0 {
				return nil, errors.New("both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'")
			}
			call.Names = []string{call.Name} //nolint:staticcheck // as above
		}
		if ex := call.Excludes; ex != nil {
			if slices.Contains(ex.Arches, arch) {
				continue rules
			}
			for _, c := range ex.Caps {
				if slices.Contains(caps, c) {
					continue rules
				}
			}
			if ex.MinKernel != nil && atLeast(ex.MinKernel) {
				continue rules
			}
		}
		if in := call.Includes; in != nil {
			if len(in.Arches) > 0 && !slices.Contains(in.Arches, arch) {
				continue rules
			}
			for _, c := range in.Caps {
				if !slices.Contains(caps, c) {
					continue rules
				}
			}
			if in.MinKernel != nil && !atLeast(in.MinKernel) {
				continue rules
			}
		}
		out.Syscalls = append(out.Syscalls, call.LinuxSyscall)
	}
	return &out, nil
}
