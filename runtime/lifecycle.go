//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/gofrs/flock"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/specs"
)

// What a caller that keeps instances across its own restarts (the daemon,
// runtime/daemon) or sweeps what ended ones left (runtime/harness, for
// toritest and tori-run gc) needs beyond Create, Adopt and Destroy: each
// instance's record, the removal of an instance nobody can adopt, the
// sweep of those whose tori-run is gone, and how long a stop may take.

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

// SweepStaleInstances removes (dry: lists) the instances in o.Root owned by
// one of owners whose lock is free, and returns their ids. SweepStale is
// the same for a caller that needs neither.
func SweepStaleInstances(ctx context.Context, o Options, owners []string, dry bool) ([]string, error) {
	dirs, err := filepath.Glob(o.layout().InstanceGlob(""))
	if err != nil {
		return nil, err
	}
	var ids []string
	var errs []error
	for _, dir := range dirs {
		if ctx.Err() != nil {
			return ids, ctx.Err()
		}
		if rec, err := readRecord(dir); err == nil && !slices.Contains(owners, rec.Owner) {
			continue
		}
		lock := flock.New(layout.InstanceAt(dir).Lock)
		ok, err := lock.TryLock()
		if err != nil || !ok {
			continue // alive, or not ours to judge
		}
		if !dry {
			err = sweepOne(dir, o)
		}
		_ = lock.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("stale instance %s: %w", filepath.Base(dir), err))
			continue
		}
		ids = append(ids, filepath.Base(dir))
		if !dry {
			o.Log.Info().Str("instance", filepath.Base(dir)).Msg("cleaned up an instance left by a tori-run that ended")
		}
	}
	return ids, errors.Join(errs...)
}
