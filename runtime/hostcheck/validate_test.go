package hostcheck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/release"
)

func failures(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		if f.Status == StatusFail {
			b.WriteString(f.Check + ": " + f.Message + " (hint: " + f.Hint + ")\n")
		}
	}
	return b.String()
}

// A Windows-made zip of the seed's app (no modes, a .py entrypoint) with the
// seed's manifest validates and builds.
func TestValidateWindowsZip(t *testing.T) {
	dir := t.TempDir()
	zipFile := filepath.Join(dir, "tori_nodb_complete_v2.zip")
	writeWindowsZip(t, zipFile, seedApp(t))
	r := Validate(zipFile, ValidateOptions{Manifest: seedManifest})
	if r.Failed() || r.Kind != KindZip {
		t.Fatalf("validate --manifest capsule.yml APP.zip failed:\n%s", failures(r))
	}
	res, err := release.Build(context.Background(), release.BuildOptions{FromZip: zipFile, Manifest: seedManifest,
		Output: filepath.Join(dir, "capsule-metacog-XYZ.tar.gz"), SourceDateEpoch: "0"})
	if err != nil {
		t.Fatalf("build --from-zip: %v", err)
	}
	r = Validate(res.Path, ValidateOptions{})
	if r.Failed() || r.Kind != KindArchive {
		t.Fatalf("validate ARCHIVE failed:\n%s", failures(r))
	}
}

// validate capsule.yml checks the folder beside it exactly as build does:
// whatever build refuses, validate reports, whichever path it is given.
func TestValidateManifestChecksAppLikeBuild(t *testing.T) {
	for _, tt := range []struct {
		name  string
		entry string
		files map[string][]byte
		perm  os.FileMode
		want  string
	}{
		{"shell script without exec bit", "bin/start.sh", map[string][]byte{"bin/start.sh": []byte("echo hi\n")}, 0o644, "is not executable"},
		{"missing entrypoint", "python/core/main.py", map[string][]byte{"other.py": []byte("\n")}, 0o644, "is not in the app"},
		{"unpinned requirement", "main.py", map[string][]byte{"main.py": []byte("\n"), "req.txt": []byte("pyarrow>=15\n")}, 0o644, "is not pinned"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files, tt.perm)
			manifest := filepath.Join(dir, "capsule.yml")
			yml := "name: x\nversion: \"1.0.0\"\nentrypoint: " + tt.entry + "\nservices: [a]\n"
			if _, ok := tt.files["req.txt"]; ok {
				yml += "dependencies:\n  pip_requirements: req.txt\n"
			}
			if err := os.WriteFile(manifest, []byte(yml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, berr := release.Build(context.Background(), release.BuildOptions{FromDir: dir, Manifest: manifest,
				BuildSHA: "0123456789abcdef", Output: filepath.Join(t.TempDir(), "c.tar.gz")})
			if berr == nil || !strings.Contains(berr.Error(), tt.want) {
				t.Fatalf("build: %v; want %q", berr, tt.want)
			}
			for _, target := range []string{manifest, dir} {
				r := Validate(target, ValidateOptions{})
				if !r.Failed() || !strings.Contains(failures(r), tt.want) {
					t.Errorf("validate %s passed what build refuses (%v):\n%+v", target, berr, r.Findings)
				}
			}
		})
	}
	// The same app with the .py rule passes both.
	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"main.py": []byte("print(1)\n")}, 0o644)
	manifest := filepath.Join(dir, "capsule.yml")
	if err := os.WriteFile(manifest, []byte("name: x\nversion: \"1.0.0\"\nentrypoint: main.py --role a\nservices: [a]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := Validate(manifest, ValidateOptions{}); r.Failed() {
		t.Errorf("validate of a .py app without exec bits:\n%s", failures(r))
	}
}
