//go:build !linux

package hostcheck

import (
	"fmt"
	goruntime "runtime"

	"github.com/tori-run/tori-run/specs"
)

// CheckHost on other systems reports that capsules run only on Linux.
func CheckHost(HostOptions) []Finding {
	return []Finding{{Check: "host", Status: StatusFail,
		Message: fmt.Sprintf("this is %s/%s: capsules run only on Linux (namespaces, cgroups, OverlayFS); the host checks need the Linux host that will run the capsule", goruntime.GOOS, goruntime.GOARCH),
		Hint:    "run tori-run validate --host on that Linux host; the manifest, app and archive checks above hold here too"}}
}

// checkVolumesOnHost: volumes are the Linux host's to allow; CheckHost
// already says that the host checks need it.
func (r *Report) checkVolumesOnHost(*specs.Manifest, ValidateOptions) {}
