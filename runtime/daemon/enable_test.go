//go:build linux

package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// Disable drops every reference of the capsule, the previous stable release
// too, so that gc no longer keeps its releases.
func TestDisableDropsPreviousRef(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "refs", "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"current", "previous"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("sha256:abc\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Disable(root, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("refs/web is still there after disable (%v): gc would keep its releases", err)
	}
	if err := Disable(root, "web"); err == nil {
		t.Fatal("a second disable succeeded; want 'not enabled'")
	}
}
