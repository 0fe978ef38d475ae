//go:build linux

package release

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Helper processes: the test binary re-executes itself with
// TORI_RELEASE_TEST_HELPER set to act as a second tori-run process.
const helperEnv = "TORI_RELEASE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperMain runs one Install in this process. With TORI_HELPER_PAUSE=EVENT
// (or EVENT:N for the Nth time), it prints "paused" and blocks there
// forever, to be killed.
func helperMain(mode string) int {
	if mode != "install" {
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		return 2
	}
	s, err := Open(os.Getenv("TORI_HELPER_ROOT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if pause := os.Getenv("TORI_HELPER_PAUSE"); pause != "" {
		event, nth, _ := strings.Cut(pause, ":")
		want := 1
		fmt.Sscan(nth, &want)
		count := 0
		s.hook = func(e string) {
			if e != event {
				return
			}
			if count++; count == want {
				fmt.Println("paused")
				select {}
			}
		}
	}
	_, already, err := s.Install(context.Background(), os.Getenv("TORI_HELPER_ARCHIVE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("already=%v\n", already)
	return 0
}

// helper starts a helper process installing archive into root.
func helper(t *testing.T, root, archive, pause string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=install", "TORI_HELPER_ROOT="+root,
		"TORI_HELPER_ARCHIVE="+archive, "TORI_HELPER_PAUSE="+pause)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &testWriter{t: t, prefix: "helper: "}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewReader(out)
}

// testWriter sends what is written to the test log.
type testWriter struct {
	t      *testing.T
	prefix string
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: &testWriter{t: t}, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.DebugLevel)
}

// appFile is one entry of a test app.
type appFile struct {
	path string
	data string
	mode fs.FileMode // 0 = 0644; fs.ModeDir for a folder
	link string      // a symlink's target
}

const testManifest = `name: demo
version: "1.0.0"
entrypoint: bin/start.sh
services: [web]
dependencies:
  pip_requirements: requirements.txt
`

// testApp is a small app with a bit of everything, and files the build
// must leave out.
func testApp() []appFile {
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 100<<10)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	return []appFile{
		{path: "requirements.txt", data: "flask==3.0.0\nrequests~=2.31\n"},
		{path: "bin/start.sh", data: "#!/bin/sh\nexec python3 -m app\n", mode: 0o755},
		{path: "app/__init__.py", data: "print('hello')\n"},
		{path: "app/util.py", data: strings.Repeat("x = 1\n", 1000)},
		{path: "data/blob.bin", data: string(blob)},
		{path: "data/empty", data: ""},
		{path: "data/sub", mode: fs.ModeDir},
		{path: "current", link: "app"},
		{path: "app/up.py", link: "../bin/start.sh"},
		{path: "app/util.py.bak", data: "old"},
		{path: "notes~", data: "scratch"},
		{path: ".#lock", data: "emacs"},
		{path: ".git/HEAD", data: "ref: refs/heads/main\n"},
		{path: "app/__pycache__/util.cpython-311.pyc", data: "bytecode"},
		{path: "app/x.pyc", data: "bytecode"},
	}
}

// writeDirApp writes files under dir, in the given order, with every mtime
// set to mtime and file permissions passed through perm.
func writeDirApp(t testing.TB, dir string, files []appFile, mtime time.Time, perm func(fs.FileMode) fs.FileMode) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		switch {
		case f.link != "":
			must(t, os.Symlink(f.link, p))
			continue
		case f.mode.IsDir():
			must(t, os.MkdirAll(p, perm(0o755)))
		default:
			mode := f.mode
			if mode == 0 {
				mode = 0o644
			}
			must(t, os.WriteFile(p, []byte(f.data), 0o600))
			must(t, os.Chmod(p, perm(mode)))
		}
	}
	must(t, filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.Type()&fs.ModeSymlink != 0 {
			return err
		}
		return os.Chtimes(p, mtime, mtime)
	}))
}

// writeZip writes files into a zip, in the given order.
func writeZip(t testing.TB, file string, files []appFile) {
	t.Helper()
	f, err := os.Create(file)
	must(t, err)
	zw := zip.NewWriter(f)
	writeZipEntries(t, zw, files)
	must(t, zw.Close())
	must(t, f.Close())
}

func writeZipEntries(t testing.TB, zw *zip.Writer, files []appFile) {
	t.Helper()
	for _, af := range files {
		h := &zip.FileHeader{Name: af.path, Method: zip.Deflate}
		switch {
		case af.link != "":
			h.SetMode(fs.ModeSymlink | 0o777)
		case af.mode.IsDir():
			h.Name = strings.TrimSuffix(h.Name, "/") + "/"
			h.SetMode(fs.ModeDir | 0o755)
		case af.mode != 0:
			h.SetMode(af.mode)
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		must(t, err)
		data := af.data
		if af.link != "" {
			data = af.link
		}
		_, err = io.WriteString(w, data)
		must(t, err)
	}
}

// writeLyingEntry adds an entry that inflates to size bytes but declares
// only declared.
func writeLyingEntry(t *testing.T, zw *zip.Writer, name string, size, declared int) {
	t.Helper()
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, flate.BestCompression)
	must(t, err)
	fw.Write(make([]byte, size))
	must(t, fw.Close())
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(make([]byte, declared)),
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: uint64(declared)}
	h.SetMode(0o644)
	w, err := zw.CreateRaw(h)
	must(t, err)
	_, err = w.Write(comp.Bytes())
	must(t, err)
}

func writeManifest(t testing.TB, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "capsule.yml")
	must(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

// buildApp writes the test app to a fresh folder and builds it into out.
func buildApp(t testing.TB, manifest string, files []appFile, out string) *BuildResult {
	t.Helper()
	dir := t.TempDir()
	writeDirApp(t, dir, files, time.Now(), keep)
	res, err := Build(context.Background(), BuildOptions{
		FromDir: dir, Manifest: writeManifest(t, t.TempDir(), manifest), OutputDir: out, ToolVersion: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func keep(m fs.FileMode) fs.FileMode { return m }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listTree lists every path under dir with its type, for before/after
// comparisons.
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	must(t, filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+de.Type().String())
		return nil
	}))
	sort.Strings(out)
	return out
}

// tarEntry is one entry of a raw tar stream, for tests that tamper.
type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// rawTar returns the uncompressed tar stream of an archive.
func rawTar(t testing.TB, archive string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	must(t, err)
	defer f.Close()
	r, _, err := decompressor(f)
	must(t, err)
	b, err := io.ReadAll(r)
	must(t, err)
	return b
}

func readTar(t testing.TB, raw []byte) []tarEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(raw))
	var out []tarEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		data, err := io.ReadAll(tr)
		must(t, err)
		out = append(out, tarEntry{hdr: h, data: data})
	}
}

func writeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		must(t, tw.WriteHeader(e.hdr))
		_, err := tw.Write(e.data)
		must(t, err)
	}
	must(t, tw.Close())
	return b.Bytes()
}

func hdr(name string, typ byte, mode, size int64, link string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: typ, Mode: mode, Size: size, Linkname: link, ModTime: time.Unix(0, 0)}
}

// storeRoot is a temporary folder for a store: its cleanup first makes
// the read-only releases in it removable, for tests not run as root.
func storeRoot(t testing.TB) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return dir
}
