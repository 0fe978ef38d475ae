package hostcheck

import (
	"archive/zip"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// The seed's app, as its authors ship it: a Python program and its pinned
// requirements (the seed's layout), made into a zip on Windows.

// seedManifest is the seed's capsule.yml, verbatim.
const seedManifest = "../../specs/testdata/good/seed-capsule.yml"

// seedApp returns the seed's app files: the reference program (the one in
// examples/metacog, a stdlib-only Python that records its work in state)
// and the pinned requirements.
func seedApp(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{"python/core/start_true_metacognition.py", "python/core/tori_state.py", "requirements_nodb.txt"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "metacog", filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	return files
}

// writeWindowsZip writes files as Windows tools do: creator FAT (0), no
// Unix modes in the external attributes (only the DOS archive bit), and
// folder entries of their own.
func writeWindowsZip(t testing.TB, file string, files map[string][]byte) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, n := range names {
		for d := filepath.ToSlash(filepath.Dir(n)); d != "." && !dirs[d]; d = filepath.ToSlash(filepath.Dir(d)) {
			dirs[d] = true
			if _, err := zw.CreateHeader(&zip.FileHeader{Name: d + "/", CreatorVersion: 20, ExternalAttrs: 0x10}); err != nil {
				t.Fatal(err)
			}
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, CreatorVersion: 20, ExternalAttrs: 0x20})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	// As made on Windows: no entry carries a Unix mode.
	zr, err := zip.OpenReader(file)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, e := range zr.File {
		if e.CreatorVersion>>8 != 0 || e.Mode().Perm()&0o111 != 0 && !e.Mode().IsDir() {
			t.Fatalf("%s: creator %d, mode %s: not a Windows-made entry", e.Name, e.CreatorVersion>>8, e.Mode())
		}
	}
}

// writeTree writes files under dir with mode perm.
func writeTree(t testing.TB, dir string, files map[string][]byte, perm os.FileMode) {
	t.Helper()
	for n, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, perm); err != nil {
			t.Fatal(err)
		}
	}
}
