//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/release"
)

// A capsule is enabled when <root>/refs/<name>/current names an installed
// release: the daemon runs it (now, and after every restart of the host),
// and the release store counts the release as in use, so gc keeps it.

func currentRef(root, name string) string { return layout.Layout{Root: root}.Ref(name, "current") }

// Enable makes the daemon run the release ref (a name or digest) of a
// capsule, and returns the capsule's name and release digest.
func Enable(root, ref string) (string, string, error) {
	store, err := release.Open(root)
	if err != nil {
		return "", "", err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return "", "", err
	}
	if err := writeRef(root, rel.Name, "current", rel.Digest); err != nil {
		return "", "", err
	}
	return rel.Name, rel.Digest, nil
}

// Disable stops the daemon from running a capsule; its releases are no
// longer kept by its references: neither the current one nor the previous
// stable one (rollback's target, refs/<name>/previous), so that gc can
// remove them.
func Disable(root, name string) error {
	err := os.Remove(currentRef(root, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("capsule %q is not enabled", name)
	}
	if err != nil {
		return err
	}
	if err := os.Remove(previousRef(root, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(currentRef(root, name))) // only if empty
	return nil
}

// Enabled returns the enabled capsules: name -> release digest.
func Enabled(root string) (map[string]string, error) {
	files, err := filepath.Glob(layout.Layout{Root: root}.CurrentRefs())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out[filepath.Base(filepath.Dir(f))] = strings.TrimSpace(string(b))
	}
	return out, nil
}
