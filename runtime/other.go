//go:build !linux

package runtime

import (
	"errors"
	"fmt"
	goruntime "runtime"
)

// ErrNeedLinux is what the commands that run capsules return on other
// systems: capsules are Linux namespaces, cgroups and OverlayFS mounts.
// Building and validating capsules work everywhere.
var ErrNeedLinux = errors.New("running capsules needs Linux (namespaces, cgroups, OverlayFS)")

// NeedLinux says that command cannot run here, and what can.
func NeedLinux(command string) error {
	return fmt.Errorf("tori-run %s: %w; this is %s/%s. Here, tori-run build, validate and version work; copy the archive to a Linux host and run it there",
		command, ErrNeedLinux, goruntime.GOOS, goruntime.GOARCH)
}

// MaybeInit does nothing off Linux: there is no container init to run.
func MaybeInit() {}

// CheckHost on other systems reports that capsules run only on Linux.
func CheckHost(HostOptions) []Finding {
	return []Finding{{Check: "host", Status: StatusFail,
		Message: fmt.Sprintf("this is %s/%s: capsules run only on Linux (namespaces, cgroups, OverlayFS); the host checks need the Linux host that will run the capsule", goruntime.GOOS, goruntime.GOARCH),
		Hint:    "run tori-run validate --host on that Linux host; the manifest, app and archive checks above hold here too"}}
}
