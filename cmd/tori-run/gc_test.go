//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// gc removes the folders toritest's ended test processes left (their
// flock free), saying so; --dry-run only says it. (The kill -9 of a test
// binary holding a capsule, and what gc's sweep then removes, is toritest's
// TestKill9ThenGC.)
func TestGCSweepsToritestFolders(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	proc := filepath.Join(tmp, "toritest-"+strconv.Itoa(os.Geteuid()), "p1-dead")
	if err := os.MkdirAll(filepath.Join(proc, "1", "r", "instances"), 0o700); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if r := runCLI(t, "", "--root", root, "gc", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would remove test process folder "+proc) {
		t.Fatalf("gc --dry-run: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(proc); err != nil {
		t.Fatalf("gc --dry-run removed %s: %v", proc, err)
	}
	if r := runCLI(t, "", "--root", root, "gc"); r.code != 0 || !strings.Contains(r.stdout, "removed test process folder "+proc) {
		t.Fatalf("gc: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(proc); !os.IsNotExist(err) {
		t.Errorf("gc left %s: %v", proc, err)
	}
	if r := runCLI(t, "", "--root", root, "gc"); r.code != 0 || r.stdout != "nothing to remove\n" {
		t.Errorf("a second gc: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
