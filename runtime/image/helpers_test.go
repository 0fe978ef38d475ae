package image

import (
	"path/filepath"
	"testing"

	"github.com/tori-run/tori-run/specs"
)

func loadManifest(t *testing.T, relPath string) *specs.Manifest {
	t.Helper()
	m, err := specs.Load(filepath.Join(relPath, "capsule.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
