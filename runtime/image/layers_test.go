package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tori-run/tori-run/release"
)

// exported reads an exported archive: its layers' file lists (bottom
// first), their digests, and the config's Env.
func exported(t *testing.T, p string) (layers [][]string, digests []string, env []string) {
	t.Helper()
	files := archiveFiles(t, p)
	var idx struct{ Manifests []struct{ Digest string } }
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	blob := func(d string) []byte { return files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	var man struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &man); err != nil {
		t.Fatal(err)
	}
	var cfg struct{ Config struct{ Env []string } }
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	for _, l := range man.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(blob(l.Digest)))
		if err != nil {
			t.Fatalf("layer %s: %v", l.Digest, err)
		}
		var names []string
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		}
		layers = append(layers, names)
		digests = append(digests, l.Digest)
	}
	return layers, digests, cfg.Config.Env
}

// TestExportOnRootfsLayers: a capsule on a rootfs layer gets that layer's
// tree as its bottom layer, and no host base.
func TestExportOnRootfsLayers(t *testing.T) {
	root := install(t, "name: base\nversion: \"1.0.0\"\nservices:\n  x:\n    command: bin/hello\n", map[string]string{"bin/hello": "#!/bin/hello\n", "etc/os-release": "ID=test\n"})
	st, _ := release.Open(root)
	base, err := st.Resolve("base")
	if err != nil {
		t.Fatal(err)
	}
	// The capsule on it, installed into the same root.
	other := install(t, "name: onroot\nversion: \"1.0.0\"\nlayers: [\""+base.Digest+"\"]\nservices:\n  y:\n    command: /bin/hello\n", map[string]string{"run.sh": "x"})
	if _, _, err := st.Install(t.Context(), findArchive(t, filepath.Dir(other))); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	if _, err := Export("onroot", out, Options{Root: root, Binary: staticBinary(t)}); err != nil {
		t.Fatal(err)
	}
	layers, _, _ := exported(t, out)
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3 (rootfs, app, tori-run)", len(layers))
	}
	if !slices.Contains(layers[0], "etc/os-release") || !slices.Contains(layers[0], "bin/hello") {
		t.Errorf("the bottom layer is not the rootfs release's tree: %v", layers[0])
	}
	if slices.Contains(layers[0], "etc/passwd") {
		t.Errorf("a capsule on rootfs layers got the host base: %v", layers[0])
	}
	if !slices.Contains(layers[1], "app/run.sh") || !slices.Contains(layers[2], ".tori/tori-run") {
		t.Errorf("app layer %v, tori-run layer %v", layers[1], layers[2])
	}
}

func findArchive(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "capsule-*.tar.*"))
	if len(m) != 1 {
		t.Fatalf("archives in %s: %v", dir, m)
	}
	return m[0]
}

// TestExportOnBase: --base puts a user's OCI image layout under the app
// instead of the host base, and keeps its environment.
func TestExportOnBase(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: "etc/base-marker", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("ok"))
	_ = tw.Close()
	raw := tb.Bytes()
	bl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: bl})
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Env: []string{"BASE_VAR=1", "PATH=/nope"}})
	if err != nil {
		t.Fatal(err)
	}
	baseDir := t.TempDir()
	p, err := layout.Write(baseDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := bl.Digest()

	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n"})
	out := filepath.Join(t.TempDir(), "img.tar")
	if _, err := Export("writer", out, Options{Root: root, Binary: staticBinary(t), Base: baseDir}); err != nil {
		t.Fatal(err)
	}
	layers, digests, env := exported(t, out)
	if len(layers) != 3 || digests[0] != wantDigest.String() {
		t.Fatalf("layers %v, want the base's %s at the bottom, then app and tori-run", digests, wantDigest)
	}
	if slices.Contains(layers[0], "usr/bin/python3") {
		t.Errorf("--base still got the host base")
	}
	if !slices.Contains(env, "BASE_VAR=1") || !slices.Contains(env, "PATH="+capsulePATH) || !slices.Contains(env, "TORI_STATE_SOCKET="+StateSocket) {
		t.Errorf("env %v: want the base's BASE_VAR, the capsule's PATH and TORI_STATE_SOCKET", env)
	}
}
