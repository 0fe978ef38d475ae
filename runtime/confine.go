//go:build linux

package runtime

import (
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	libseccomp "github.com/opencontainers/runc/libcontainer/seccomp"

	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// capsuleCaps is the capability set of a capsule on this host
// (plan.Capabilities from the kernel's last capability).
func capsuleCaps(m *specs.Manifest) ([]string, error) {
	f, err := hostFacts(nil, "", "")
	if err != nil {
		return nil, err
	}
	return plan.Capabilities(m, f)
}

// SeccompMode says which system call filter a capsule gets, for validate,
// spec and status: "default" (tori-run's profile), "unconfined", or
// "profile FILE".
func SeccompMode(m *specs.Manifest) string { return plan.SeccompMode(m) }

// SeccompBuiltIn says whether this binary can apply a system call filter
// (built with -tags seccomp and libseccomp).
func SeccompBuiltIn() bool { return libseccomp.Enabled }

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
		if !slices.Contains(plan.DefaultCaps, a) {
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
	f, err := hostFacts(nil, "", "")
	if err != nil {
		return err
	}
	return plan.CheckProfile(m, body, f)
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
