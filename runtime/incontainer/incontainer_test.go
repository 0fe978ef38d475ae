//go:build linux

package incontainer

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPickStateRootPrefersAMountedVolume: without TORI_STATE_ROOT,
// container mode puts the store on whichever candidate folder the engine
// mounted a volume on, and says when none is.
func TestPickStateRootPrefersAMountedVolume(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (a bind mount) and not -short")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	saved := stateRoots
	stateRoots = []string{a, b}
	defer func() { stateRoots = saved }()
	if got, ok := pickStateRoot(); got != a || ok {
		t.Errorf("nothing mounted: got %s (on a volume: %v), want %s and false", got, ok, a)
	}
	if err := unix.Mount(b, b, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(b, unix.MNT_DETACH)
	if got, ok := pickStateRoot(); got != b || !ok {
		t.Errorf("volume on %s: got %s (on a volume: %v)", b, got, ok)
	}
}
