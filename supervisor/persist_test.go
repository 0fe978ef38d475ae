package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStateFilesFollowNoSymlink: symlinks planted where the supervisor
// writes (the state file, a temporary name, the folder itself) never let
// a write or a read land on their target.
func TestStateFilesFollowNoSymlink(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("host file"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A symlink at the old fixed temporary name is left alone: the
	// temporary file has a fresh name, created with O_EXCL|O_NOFOLLOW.
	if err := os.Symlink(victim, filepath.Join(dir, "db.state.json.tmp")); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(dir, "db.state.json", persisted{Restarts: 1}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "db.state.json")); err != nil {
		t.Fatal(err)
	}
	// A symlink at the final name is replaced, not followed.
	if err := os.Symlink(victim, filepath.Join(dir, "db.state.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := readFileIn(dir, "db.state.json"); !errors.Is(err, unix.ELOOP) {
		t.Errorf("read through a planted symlink: %v, want ELOOP", err)
	}
	if err := writeFileAtomic(dir, "db.state.json", persisted{Restarts: 2}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "db.state.json")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the state file is not a regular file: %v %v", fi, err)
	}
	// The folder itself a symlink.
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(link, "db.state.json", persisted{}); err == nil {
		t.Error("wrote through a state folder that is a symlink")
	}
	if _, err := os.Stat(filepath.Join(outside, "db.state.json")); err == nil {
		t.Error("a state file landed in the symlink's target")
	}
	if b, _ := os.ReadFile(victim); string(b) != "host file" {
		t.Errorf("the victim changed: %q", b)
	}
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := openIn(dir, name, unix.O_RDONLY, 0); err == nil {
			t.Errorf("openIn accepted %q", name)
		}
	}
}

// TestChmodSocketFollowsNoSymlink: a symlink that replaced the notify
// socket between bind and chmod is refused, and its target keeps its mode.
func TestChmodSocketFollowsNoSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "svc.notify")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := chmodSocket(link, 0o666); err == nil {
		t.Error("chmodSocket accepted a symlink")
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
		t.Errorf("the symlink's target became %v", fi.Mode())
	}
	n, err := listenNotify(filepath.Join(dir, "real.notify"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	if fi, _ := os.Stat(n.path); fi.Mode().Perm() != 0o666 {
		t.Errorf("the notify socket is %v, want 0666", fi.Mode())
	}
}
