//go:build linux

package runtime

import (
	"time"

	"github.com/tori-run/tori-run/specs"
)

// What a caller that keeps instances across its own restarts (the daemon,
// runtime/daemon) needs beyond Create, Adopt and Destroy: each instance's
// record, the removal of an instance nobody can adopt, and how long a
// stop may take.

// InstanceRecord is what an instance's folder records of it
// (instance.json): its capsule, release, owner, cgroup and container.
type InstanceRecord = instanceRecord

// ReadInstanceRecord reads the record of the instance in dir.
func ReadInstanceRecord(dir string) (*InstanceRecord, error) { return readRecord(dir) }

// SweepInstance kills what is left of the instance in dir and removes its
// container, cgroups, mounts and folder. The caller holds, or has
// checked, its lock.
func SweepInstance(dir string, o Options) error { return sweepOne(dir, o) }

// StopDeadline bounds a whole stop of a capsule: every service's stop
// timeout in turn, and some room for the tree kills.
func StopDeadline(m *specs.Manifest) time.Duration { return stopDeadline(m) }
