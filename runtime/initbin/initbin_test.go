//go:build linux

package initbin

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestInstall: the init lands once, executable and read-only, at its
// digest's name; a second install reuses it; a wrong digest and a file of
// that name that is not the init are refused, never bound.
func TestInstall(t *testing.T) {
	bin := []byte("#!/bin/sh\necho init\n")
	dir := filepath.Join(t.TempDir(), "init")
	p, err := Install(dir, bin, digestOf(bin))
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, digestOf(bin)) {
		t.Errorf("installed at %s, want %s", p, filepath.Join(dir, digestOf(bin)))
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o555 {
		t.Errorf("mode %v, want 0555", fi.Mode())
	}
	if got, _ := os.ReadFile(p); string(got) != string(bin) {
		t.Errorf("content %q", got)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("cache folder mode %v, want 0700", di.Mode())
	}
	// Again: the same file, not a new one.
	p2, err := Install(dir, bin, digestOf(bin))
	if err != nil || p2 != p {
		t.Fatalf("second install: %s, %v", p2, err)
	}
	if fi2, _ := os.Stat(p2); !os.SameFile(fi, fi2) {
		t.Error("the second install replaced the file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("cache holds %d files, want 1 (no temporary left)", len(ents))
	}

	if _, err := Install(dir, []byte("other"), digestOf(bin)[:63]+"0"); err == nil || !strings.Contains(err.Error(), "rebuild") {
		t.Errorf("wrong digest: %v, want refused", err)
	}
	if _, err := Install(dir, bin, "abc"); err == nil {
		t.Error("a digest that is no SHA-256 was accepted")
	}
	// A file of the digest's name that is not ours as written (mode).
	other := []byte("something else entirely")
	bad := filepath.Join(dir, digestOf(other))
	if err := os.WriteFile(bad, other, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(dir, other, digestOf(other)); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("a planted file: %v, want refused", err)
	}
}

// TestEmbeddedWithoutTag: a build without the toriinit tag carries no
// init (go test never sets it), and says so with nil, not an empty file.
func TestEmbeddedWithoutTag(t *testing.T) {
	if b, d := Embedded(); b != nil || d != "" {
		t.Errorf("Embedded() = %d bytes, %q; want nil without the toriinit tag", len(b), d)
	}
}
