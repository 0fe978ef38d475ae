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

// staticBinary is a static ELF file to stand for tori-run in an image.
func staticBinary(t *testing.T) string {
	t.Helper()
	if ok, err := IsStatic("/bin/busybox"); err != nil || !ok {
		t.Skip("no static /bin/busybox to put in the image (apt-get install busybox-static)")
	}
	return "/bin/busybox"
}
