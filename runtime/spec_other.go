//go:build !linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// SpecFor off Linux compiles the plan of a capsule.yml (or the app folder
// holding one) from plan.AssumedFacts: no host is probed, and the names
// and values of the facts assumed are returned to be said. An installed
// release (NAME, DIGEST) lives in a Linux host's store.
func SpecFor(ref string, o Options, _ bool) (*rspec.Spec, []string, error) {
	manifest := ref
	if fi, err := os.Stat(ref); err != nil {
		return nil, nil, fmt.Errorf("%q is not a capsule.yml or an app folder here (installed releases are on the Linux host: run tori-run spec there): %w", ref, err)
	} else if fi.IsDir() {
		manifest = filepath.Join(ref, "capsule.yml")
	}
	m, err := specs.Load(manifest)
	if err != nil {
		return nil, nil, err
	}
	app := filepath.Dir(manifest)
	if err := specs.CheckApp(m, os.DirFS(app)); err != nil {
		return nil, nil, err
	}
	if len(m.Layers) != 1 || m.Layers[0] != specs.LayerHost {
		return nil, nil, fmt.Errorf("%s: layers %v: rootfs layers are installed releases of a Linux host: run tori-run spec there", m.Source, m.Layers)
	}
	in := plan.Input{Manifest: m, ID: m.Name + "-<id>", Release: "unreleased", Layout: layout.New(o.Root, o.RunDir, o.StateRoot)}
	if m.Seccomp != "" && m.Seccomp != specs.SeccompUnconfined {
		if in.SeccompProfile, err = os.ReadFile(filepath.Join(app, filepath.FromSlash(m.Seccomp))); err != nil {
			return nil, nil, fmt.Errorf("%s: seccomp: cannot read the profile %s: %w", m.Source, m.Seccomp, err)
		}
	}
	f := plan.AssumedFacts()
	p, err := plan.Compile(in, f)
	if err != nil {
		return nil, nil, err
	}
	return p.Spec, f.Stated(), nil
}
