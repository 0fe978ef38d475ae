package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArtifactsCLI walks a capsule through build, install, list, verify
// and gc as a user would, checking exit codes and what is printed.
func TestArtifactsCLI(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // gc sweeps toritest's folders there: none of other tests'
	root, out := t.TempDir(), t.TempDir()
	cli := func(args ...string) result {
		return runCLI(t, "", append([]string{"--root", root}, args...)...)
	}
	r := cli("build", "--from-dir", repo+"/examples/metacog", "--manifest", repo+"/examples/metacog/capsule.yml",
		"--output-dir", out, "--build-sha", strings.Repeat("ab", 20))
	if r.code != 0 || !strings.Contains(r.stdout, "capsule tori-metacognitive 2.1.0, 5 files") {
		t.Fatalf("build: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	archives, _ := filepath.Glob(filepath.Join(out, "capsule-tori-metacognitive-2.1.0-*.tar.gz"))
	if len(archives) != 1 {
		t.Fatalf("archives: %v", archives)
	}
	if r := cli("validate", archives[0]); r.code != 0 || !strings.Contains(r.stdout, "(archive)") || !strings.Contains(r.stdout, "PASS  archive") {
		t.Fatalf("validate archive: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("install", archives[0]); r.code != 0 || !strings.HasPrefix(r.stdout, "installed tori-metacognitive 2.1.0") {
		t.Fatalf("install: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("install", archives[0]); r.code != 0 || !strings.HasPrefix(r.stdout, "already installed") {
		t.Fatalf("second install: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = cli("list", "--json")
	var rels []struct {
		Digest, Name, Path string
		InUse              bool `json:"in_use"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rels); err != nil || len(rels) != 1 || rels[0].Name != "tori-metacognitive" {
		t.Fatalf("list: %v %s", err, r.stdout)
	}
	if !strings.Contains(archives[0], rels[0].Digest[:12]) {
		t.Errorf("archive name %s does not carry digest %s", archives[0], rels[0].Digest)
	}
	if r := cli("verify", "tori-metacognitive"); r.code != 0 || !strings.Contains(r.stdout, "5 files as installed") {
		t.Fatalf("verify: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Tamper with the installed tree: verify must say what changed and exit 1.
	script := filepath.Join(rels[0].Path, "app", "requirements_nodb.txt")
	if os.Geteuid() == 0 {
		_ = os.Chmod(script, 0o644)
		if err := os.WriteFile(script, []byte("tampered\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := cli("verify", rels[0].Digest[:12]); r.code != 1 || !strings.Contains(r.stdout, "changed  app/requirements_nodb.txt") {
			t.Fatalf("verify after tampering: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	if r := cli("gc", "--dry-run"); r.code != 0 || !strings.HasPrefix(r.stdout, "would remove tori-metacognitive 2.1.0") {
		t.Fatalf("gc --dry-run: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("gc", "--keep", "1"); r.code != 0 || r.stdout != "nothing to remove\n" {
		t.Fatalf("gc --keep 1: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("gc"); r.code != 0 || !strings.HasPrefix(r.stdout, "removed tori-metacognitive") {
		t.Fatalf("gc: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("verify", "tori-metacognitive"); r.code != 1 || !strings.Contains(r.stderr, "no installed release") {
		t.Fatalf("verify after gc: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("build", "--from-dir", "x"); r.code != 2 || !strings.Contains(r.stderr, "--manifest is required") {
		t.Fatalf("build without manifest: %d %s", r.code, r.stderr)
	}
	if r := cli("build", "--from-dir", repo+"/examples/metacog", "--manifest", repo+"/specs/testdata/bad/bad-after.yml", "--output-dir", out); r.code != 1 ||
		!strings.Contains(r.stderr, "bad-after.yml:6:15: services.b.after: dependency cycle") {
		t.Fatalf("build of a bad manifest: %d %s", r.code, r.stderr)
	}
}
