package hostcheck

import (
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostfacts"
)

// The findings' vocabulary is runtime's (its confinement and rootless
// checks produce findings too); these names let callers use this package
// alone.
type (
	Finding = runtime.Finding
	Status  = runtime.Status
)

const (
	StatusPass = runtime.StatusPass
	StatusWarn = runtime.StatusWarn
	StatusFail = runtime.StatusFail

	// SystemPath is where a capsule on the host layer finds its python3.
	SystemPath = hostfacts.SystemPath
)

// WorstStatus returns the most severe status among fs: fail over warn over pass (pass for none).
func WorstStatus(fs []Finding) Status { return runtime.WorstStatus(fs) }

// HostOptions says what CheckHost checks the host for.
type HostOptions struct {
	// StateDir is where capsule state lives (TORI_STATE_ROOT); empty means DefaultStateRoot.
	StateDir string
	// Python is the version the manifest wants ("3.10"); empty if it asks none, and then python3 is not checked.
	Python string
	// Directives are the resource directives the manifest sets (CPUQuota, MemoryMax, ...); empty reports all.
	Directives []string
}
