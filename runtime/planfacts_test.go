//go:build linux

package runtime

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/moby/profiles/seccomp"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// TestDefaultProfileIsMobys: the plan's copy of moby's default profile is
// what the moby module in go.mod has (refresh runtime/plan's JSON after
// upgrading it).
func TestDefaultProfileIsMobys(t *testing.T) {
	ours, err := plan.DefaultProfile()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(ours)
	b, _ := json.Marshal(seccomp.DefaultProfile())
	if string(a) != string(b) {
		t.Error("runtime/plan/moby-seccomp-default.json differs from seccomp.DefaultProfile(): copy the module's default.json again")
	}
}

// TestSeccompAsMoby: the plan converts a profile from the facts exactly as
// moby's LoadProfile does on this host: for the default filter with and
// without clone3, with ptrace granted, and for a profile file.
func TestSeccompAsMoby(t *testing.T) {
	f, err := hostFacts(nil, "/x", "")
	if err != nil {
		t.Fatal(err)
	}
	mobyOf := func(p *seccomp.Seccomp, caps []string) *rspec.LinuxSeccomp {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := seccomp.LoadProfile(string(b), &rspec.Spec{Process: &rspec.Process{Capabilities: &rspec.LinuxCapabilities{Bounding: caps}}})
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	// tori-run's changes to moby's default, made on moby's own types.
	stricter := func(clone3 bool) *seccomp.Seccomp {
		p := seccomp.DefaultProfile()
		for i := range p.ArchMap {
			p.ArchMap[i].SubArches = nil
		}
		p.Syscalls = slices.DeleteFunc(p.Syscalls, func(s *seccomp.Syscall) bool {
			if s.Includes != nil && s.Includes.MinKernel != nil && len(s.Includes.Caps) == 0 && slices.Contains(s.Names, "ptrace") {
				return true
			}
			return clone3 && slices.Equal(s.Names, []string{"clone3"})
		})
		if clone3 {
			p.Syscalls = append(p.Syscalls, &seccomp.Syscall{LinuxSyscall: rspec.LinuxSyscall{Names: []string{"clone3"}, Action: rspec.ActAllow}})
		}
		return p
	}
	m := &specs.Manifest{Source: "capsule.yml"}
	for _, tc := range []struct {
		name   string
		caps   []string
		clone3 bool
	}{
		{"default, v1", plan.DefaultCaps, false},
		{"default, v2", plan.DefaultCaps, true},
		{"with CAP_SYS_PTRACE and CAP_SYS_ADMIN", append(slices.Clone(plan.DefaultCaps), "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"), true},
		{"no capabilities", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := plan.Seccomp(m, nil, tc.caps, tc.clone3, f)
			if err != nil {
				t.Fatal(err)
			}
			if want := mobyOf(stricter(tc.clone3), tc.caps); !reflect.DeepEqual(got, want) {
				t.Errorf("the plan's filter differs from moby's LoadProfile: %d rules, want %d", len(got.Syscalls), len(want.Syscalls))
			}
		})
	}
	body, _ := json.Marshal(seccomp.DefaultProfile())
	pm := &specs.Manifest{Source: "capsule.yml", Seccomp: "p.json"}
	got, err := plan.Seccomp(pm, body, plan.DefaultCaps, true, f)
	if err != nil {
		t.Fatal(err)
	}
	if want := mobyOf(seccomp.DefaultProfile(), plan.DefaultCaps); !reflect.DeepEqual(got, want) {
		t.Error("a profile file: the plan's filter differs from moby's LoadProfile")
	}
}

// TestInitArg: the spec's process is the init entry.go dispatches on.
func TestInitArg(t *testing.T) {
	if plan.InitArg != capinit.InitCommand {
		t.Errorf("plan.InitArg %q, capinit.InitCommand %q", plan.InitArg, capinit.InitCommand)
	}
}
