//go:build linux

package daemon

import (
	"maps"
	"slices"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/metrics"
)

// samples reads every running capsule of the daemon.
func (d *Daemon) samples() []metrics.Sample {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []metrics.Sample
	for _, n := range slices.Sorted(maps.Keys(d.capsules)) {
		if m := d.capsules[n]; m.inst != nil && m.sup != nil {
			out = append(out, runtime.SampleOf(m.inst, m.sup))
		}
	}
	return out
}

// capsuleLog is the logger for a daemon line about capsule name: its
// instance's (capsule, release, build_sha, instance) while one exists, else
// the release the daemon knows of it, with build_sha "unknown" until its
// release is read.
func (d *Daemon) capsuleLog(name string) zerolog.Logger {
	d.mu.Lock()
	m := d.capsules[name]
	d.mu.Unlock()
	release := "unknown"
	if m != nil {
		if m.inst != nil {
			return m.inst.Log
		}
		release = m.release
	}
	return runtime.CapsuleLogger(d.o.Log, name, release, "unknown")
}
