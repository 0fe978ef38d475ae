//go:build linux

package runtime

import (
	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/runtime/hostconf"
	"github.com/tori-run/tori-run/specs"
)

// confinement is what Create checks and resolves before it makes anything.
type confinement struct {
	volumes  []specs.Volume // host paths resolved to what is bound
	uid, gid uint32
}

func confineFor(t *Target, o Options) (confinement, error) {
	var c confinement
	m := t.Manifest
	if err := checkSeccompSupport(m); err != nil {
		return c, err
	}
	vols, err := checkVolumes(m, o)
	if err != nil {
		return c, err
	}
	c.volumes = vols
	c.uid, c.gid, err = resolveUser(m, t.Layers)
	return c, err
}

// CheckVolumes resolves ref and checks its volumes as run would, before a
// capsule is enabled.
func CheckVolumes(ref string, o Options) error {
	t, err := Resolve(ref, o)
	if err != nil {
		return err
	}
	_, err = checkVolumes(t.Manifest, o)
	return err
}

// HostConfig is what the operator allows capsules on this host
// (runtime/hostconf).
type HostConfig = hostconf.Config

// AllowedVolume is one host path capsules may bind, the path and below.
type AllowedVolume = hostconf.AllowedVolume

// VolumeError is a volume the capsule may not bind.
type VolumeError = hostconf.VolumeError

// UsageError is an error in how tori-run was called (exit status 2).
type UsageError = hostconf.UsageError

// LoadHost reads the host configuration and adds the --allow-volume flags.
func LoadHost(file string, allow []string) (*HostConfig, error) { return hostconf.Load(file, allow) }

// volumeRules are o's rules for volumes: its host configuration, and
// tori-run's own folders under the layout.
func (o *Options) volumeRules() hostconf.Rules {
	own := []string{o.RunDir, o.stateRoot(), DefaultRunDir}
	if o.Root != "" {
		own = append(layout.Layout{Root: o.Root}.ProtectedDirs(), own...)
	}
	return hostconf.Rules{Host: o.Host, StateRoot: o.stateRoot(), Own: own}
}

// checkVolumes checks each volume of m as run would (hostconf.CheckVolumes).
func checkVolumes(m *specs.Manifest, o Options) ([]specs.Volume, error) {
	return hostconf.CheckVolumes(m, o.volumeRules())
}

// CheckVolume resolves volume v of m as a run would on this host, or says
// why it is refused (a *VolumeError for the operator's rules): for
// validate --host (runtime/hostcheck).
func CheckVolume(m *specs.Manifest, v specs.Volume, o Options) (string, error) {
	return hostconf.CheckVolume(m, v, o.volumeRules())
}

// resolveUser is hostconf.ResolveUser.
func resolveUser(m *specs.Manifest, layers []string) (uint32, uint32, error) {
	return hostconf.ResolveUser(m, layers)
}
