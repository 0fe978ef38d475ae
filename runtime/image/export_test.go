package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/release"
)

// install builds and installs a capsule from files (path -> content) with
// manifest, and returns the root.
func install(t *testing.T, manifest string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	for p, c := range files {
		f := filepath.Join(app, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mf := filepath.Join(dir, "capsule.yml")
	if err := os.WriteFile(mf, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := release.Build(context.Background(), release.BuildOptions{FromDir: app, Manifest: mf, OutputDir: dir, BuildSHA: "0123456789abcdef0123456789abcdef01234567"})
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	st, err := release.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Install(context.Background(), res.Path); err != nil {
		t.Fatal(err)
	}
	return root
}

const pyManifest = `name: writer
version: "1.0.0"
services:
  writer:
    command: python3 writer.py
    restart: never
  sh:
    command: /bin/sh -c "sleep 0 && exit 0"
    restart: never
  env:
    command: /usr/bin/env -i A=1 head -c0
    restart: never
  script:
    command: sh run.sh
    restart: never
dependencies:
  python: "3.11"
resources:
  MemoryMax: 256M
  CPUQuota: 50%
`

// archiveFiles reads an OCI archive: its entries, by name.
func archiveFiles(t *testing.T, p string) map[string][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

func TestExportReproducible(t *testing.T) {
	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n"})
	dir := t.TempDir()
	o := Options{Root: root, Binary: staticBinary(t)}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	ra, err := Export("writer", a, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Export("writer", b, o); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) {
		t.Fatalf("two exports of the same release differ (%d and %d bytes)", len(ba), len(bb))
	}
	files := archiveFiles(t, a)
	for _, want := range []string{"oci-layout", "index.json"} {
		if _, ok := files[want]; !ok {
			t.Errorf("archive has no %s", want)
		}
	}
	var idx struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if got := idx.Manifests[0].Annotations[RefNameKey]; got != "localhost/tori/writer:1.0.0" || idx.Manifests[0].Digest != ra.Digest {
		t.Errorf("index.json names %q (%s), want localhost/tori/writer:1.0.0 (%s)", got, idx.Manifests[0].Digest, ra.Digest)
	}
	var man struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(ra.Digest, "sha256:")], &man)
	var cfg struct {
		Config struct {
			Entrypoint []string
			Labels     map[string]string
			Env        []string
		} `json:"config"`
	}
	if err := json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(man.Config.Digest, "sha256:")], &cfg); err != nil {
		t.Fatal(err)
	}
	l := cfg.Config.Labels
	if l[LabelCapsule] != "writer" || l[LabelVersion] != "1.0.0" || l[LabelRelease] != "sha256:"+ra.Release.Digest ||
		l[LabelBuildSHA] != "0123456789abcdef0123456789abcdef01234567" || l["run.tori.resources.MemoryMax"] != "256M" || l["run.tori.resources.CPUQuota"] != "50%" {
		t.Errorf("labels: %v", l)
	}
	if strings.Join(cfg.Config.Entrypoint, " ") != "/.tori/tori-run run --in-container" {
		t.Errorf("entrypoint %v", cfg.Config.Entrypoint)
	}
	if len(man.Layers) != 3 {
		t.Fatalf("%d layers, want 3 (host base, app, tori-run)", len(man.Layers))
	}
}

func TestHostBaseHoldsWhatCommandsNeed(t *testing.T) {
	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n", "run.sh": "tail -n1 /etc/hostname\n"})
	st, _ := release.Open(root)
	rel, err := st.Resolve("writer")
	if err != nil {
		t.Fatal(err)
	}
	m := loadManifest(t, rel.Path)
	l, err := hostBaseLayer(m, filepath.Join(rel.Path, "app"), "/")
	if err != nil {
		t.Fatal(err)
	}
	py, err := filepath.EvalSymlinks("/usr/bin/python3")
	if err != nil {
		t.Skip("no /usr/bin/python3 on this host")
	}
	interp, _, _ := elfDeps(py)
	interp, _ = filepath.EvalSymlinks(interp)
	for _, want := range []string{"usr/bin/python3", strings.TrimPrefix(py, "/"), "bin", "usr/bin/dash",
		strings.TrimPrefix(interp, "/"), "usr/lib/" + filepath.Base(py) + "/os.py", "usr/lib/" + filepath.Base(py) + "/encodings/utf_8.py", "etc/passwd", "tmp", "usr/bin/sleep", "usr/bin/head", "usr/bin/tail"} {
		if !l.has(want) {
			t.Errorf("the minimal base has no %s", want)
		}
	}
	for p := range l.entries {
		if strings.Contains(p, "__pycache__") || strings.Contains(p, "/config-3") || strings.Contains(p, "dist-packages") {
			t.Errorf("the minimal base holds %s", p)
		}
	}
}

func TestExportRefusesDynamicBinary(t *testing.T) {
	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n"})
	out := filepath.Join(t.TempDir(), "img.tar")
	_, err := Export("writer", out, Options{Root: root, Binary: "/bin/ls"})
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Fatalf("Export with a dynamic tori-run: %v, want a refusal", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused export left %s", out)
	}
}

func TestExportNamesAMissingProgram(t *testing.T) {
	root := install(t, "name: x\nversion: \"1.0.0\"\nservices:\n  a:\n    command: no-such-program-here\n", map[string]string{"f": "x"})
	out := t.TempDir()
	_, err := Export("x", filepath.Join(out, "img.tar"), Options{Root: root, Binary: staticBinary(t)})
	if err == nil || !strings.Contains(err.Error(), "services.a.command") || !strings.Contains(err.Error(), "no-such-program-here") {
		t.Fatalf("err = %v, want one naming services.a.command and the program", err)
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Errorf("a failed export left %v in the output folder", left)
	}
}

func TestExportRefusesABadTag(t *testing.T) {
	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n"})
	_, err := Export("writer", filepath.Join(t.TempDir(), "img.tar"), Options{Root: root, Binary: staticBinary(t), Tag: "Not A Ref"})
	if err == nil || !strings.Contains(err.Error(), "--tag") {
		t.Fatalf("err = %v, want one about --tag", err)
	}
}
