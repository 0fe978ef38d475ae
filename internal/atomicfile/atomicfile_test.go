package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sub", "rec.json")
	if err := WriteFile(p, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A symlink at the target is replaced, never followed.
func TestWriteFileReplacesASymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "rec")
	if err := os.Symlink(victim, p); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("rec is still a symlink (%v)", err)
	}
}

// On a failure (here the rename: the target is a folder) the target is
// untouched and no temporary file is left.
func TestWriteFileFailsClean(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "rec")
	if err := os.MkdirAll(filepath.Join(p, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o644); err == nil {
		t.Fatal("replaced a folder")
	}
	if _, err := os.Stat(filepath.Join(p, "inside")); err != nil {
		t.Errorf("the folder was touched: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestRemove(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rec")
	if err := WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("still there: %v", err)
	}
	if err := Remove(p); err != nil {
		t.Errorf("removing what is gone: %v", err)
	}
}

// The folder itself a symlink: the write fails and lands nowhere.
func TestWriteFileRefusesASymlinkedFolder(t *testing.T) {
	outside := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(link, "rec"), []byte("x"), 0o600); err == nil {
		t.Error("wrote through a folder that is a symlink")
	}
	if left, _ := os.ReadDir(outside); len(left) != 0 {
		t.Errorf("files landed in the symlink's target: %v", left)
	}
}
