//go:build !linux

package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	goruntime "runtime"

	"github.com/tori-run/tori-run/specs"
)

// ErrNeedLinux is what the commands that run capsules return on other
// systems: capsules are Linux namespaces, cgroups and OverlayFS mounts.
// Building and validating capsules work everywhere.
var ErrNeedLinux = errors.New("running capsules needs Linux (namespaces, cgroups, OverlayFS)")

// NeedLinux says that command cannot run here, and what can.
func NeedLinux(command string) error {
	return fmt.Errorf("tori-run %s: %w; this is %s/%s. Here, tori-run build, validate, spec and version work; copy the archive to a Linux host and run it there",
		command, ErrNeedLinux, goruntime.GOOS, goruntime.GOARCH)
}

// MaybeInit does nothing off Linux: there is no container init to run.
func MaybeInit() {}

// Options off Linux: only what validate and spec read (no capsule runs
// here).
type Options struct {
	Root      string
	RunDir    string
	StateRoot string
}

func seccompSupportFinding() Finding {
	return Finding{Check: "seccomp", Status: StatusFail, Message: "seccomp filters are applied on the Linux host that runs the capsule",
		Hint: "run tori-run validate --host there"}
}

// confinementFinding off Linux names the filter the capsule asks for; the
// capabilities and the filter itself are checked on the Linux host.
func confinementFinding(m *specs.Manifest) Finding {
	mode := m.Seccomp
	if mode == "" {
		mode = "default"
	}
	return Finding{Check: "confinement", Status: StatusPass, File: m.Source,
		Message: "seccomp " + mode + "; the capabilities and the filter are checked on the Linux host (validate --host)"}
}

// checkSeccompProfile off Linux checks that the profile is in the app and
// is JSON; libseccomp compiles it on the Linux host.
func checkSeccompProfile(m *specs.Manifest, app fs.FS) error {
	body, err := fs.ReadFile(app, m.Seccomp)
	if err != nil {
		return fmt.Errorf("the profile %s: %w", m.Seccomp, err)
	}
	if !json.Valid(body) {
		return fmt.Errorf("the profile %s is not JSON (moby's seccomp profile format)", m.Seccomp)
	}
	return nil
}
