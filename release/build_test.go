//go:build linux

package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tori-run/tori-run/specs"
)

func TestBuildIsReproducible(t *testing.T) {
	files := testApp()
	manifest := writeManifest(t, t.TempDir(), testManifest)

	dirA := t.TempDir()
	writeDirApp(t, dirA, files, time.Unix(1_000_000, 0), keep)
	outA := t.TempDir()
	a, err := Build(context.Background(), BuildOptions{FromDir: dirA, Manifest: manifest, OutputDir: outA})
	must(t, err)

	// Another folder, files created in reverse order, other mtimes, other
	// permission bits (as another umask gives), another umask for the
	// output, and another owner when we can.
	dirB := filepath.Join(t.TempDir(), "elsewhere", "app")
	reversed := slices.Clone(files)
	slices.Reverse(reversed)
	writeDirApp(t, dirB, reversed, time.Now(), func(m fs.FileMode) fs.FileMode {
		if m&0o111 != 0 {
			return 0o700
		}
		return 0o664
	})
	if os.Geteuid() == 0 {
		must(t, filepath.WalkDir(dirB, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 1234, 5678)
		}))
	}
	old := syscall.Umask(0o077)
	outB := t.TempDir()
	b, err := Build(context.Background(), BuildOptions{FromDir: dirB, Manifest: manifest, OutputDir: outB, Workers: 1})
	syscall.Umask(old)
	must(t, err)

	if a.Digest != b.Digest || filepath.Base(a.Path) != filepath.Base(b.Path) {
		t.Fatalf("digests differ: %s (%s) vs %s (%s)", a.Digest, a.Path, b.Digest, b.Path)
	}
	bytesA, _ := os.ReadFile(a.Path)
	bytesB, _ := os.ReadFile(b.Path)
	if !bytes.Equal(bytesA, bytesB) {
		t.Fatal("same digest but the archives' bytes differ")
	}
	if got := sha256.Sum256(rawTar(t, a.Path)); hex.EncodeToString(got[:]) != a.Digest {
		t.Errorf("digest %s is not the sha256 of the uncompressed stream (%x)", a.Digest, got)
	}
	want := "capsule-demo-1.0.0-" + a.Digest[:12] + ".tar.gz"
	if filepath.Base(a.Path) != want {
		t.Errorf("output name %s, want %s", filepath.Base(a.Path), want)
	}
	if info, _ := os.Stat(b.Path); info.Mode().Perm() != 0o644 {
		t.Errorf("output mode %v under umask 077, want 0644", info.Mode().Perm())
	}
}

func TestZipBuildMatchesFolder(t *testing.T) {
	files := testApp()
	manifest := writeManifest(t, t.TempDir(), testManifest)
	dir := t.TempDir()
	writeDirApp(t, dir, files, time.Now(), keep)
	fromDir, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: manifest, OutputDir: t.TempDir()})
	must(t, err)

	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 3 {
		shuffled := slices.Clone(files)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if i == 2 { // folders only implied by their files
			shuffled = slices.DeleteFunc(shuffled, func(f appFile) bool { return f.mode.IsDir() })
			shuffled = append(shuffled, appFile{path: "data/sub/", mode: fs.ModeDir})
		}
		zipFile := filepath.Join(t.TempDir(), "app.zip")
		writeZip(t, zipFile, shuffled)
		fromZip, err := Build(context.Background(), BuildOptions{FromZip: zipFile, Manifest: manifest, OutputDir: t.TempDir()})
		if err != nil {
			t.Fatalf("zip %d: %v", i, err)
		}
		if fromZip.Digest != fromDir.Digest {
			t.Errorf("zip %d: digest %s, folder %s", i, fromZip.Digest, fromDir.Digest)
		}
	}
}

func TestBuildExcludes(t *testing.T) {
	files := append(testApp(), appFile{path: "secrets/key.pem", data: "k"}, appFile{path: "app/debug.log", data: "l"})
	dir := t.TempDir()
	writeDirApp(t, dir, files, time.Now(), keep)
	var logged bytes.Buffer
	log := testLogger(t).Output(&logged)
	res, err := Build(context.Background(), BuildOptions{
		FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: t.TempDir(),
		Excludes: []string{"secrets", "*.log"}, Log: log,
	})
	must(t, err)
	want := []string{".#lock", ".git/", "app/__pycache__/", "app/debug.log", "app/util.py.bak", "app/x.pyc", "notes~", "secrets/"}
	if !slices.Equal(res.Excluded, want) {
		t.Errorf("excluded %q, want %q", res.Excluded, want)
	}
	names := archiveNames(t, res.Path)
	for _, n := range names {
		for _, w := range want {
			if strings.HasPrefix(n, "app/"+w) {
				t.Errorf("%s is in the archive", n)
			}
		}
	}
	if !strings.Contains(logged.String(), "excluded") || !strings.Contains(logged.String(), "secrets") {
		t.Errorf("no debug line for the excluded: %s", logged.String())
	}
	if _, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: "x", Excludes: []string{"[a"}}); err == nil || !strings.Contains(err.Error(), `"[a"`) {
		t.Errorf("bad pattern: %v", err)
	}
}

func archiveNames(t *testing.T, archive string) []string {
	var out []string
	for _, e := range readTar(t, rawTar(t, archive)) {
		out = append(out, e.hdr.Name)
	}
	return out
}

func TestArchiveLayoutAndMetadata(t *testing.T) {
	dir := t.TempDir()
	writeDirApp(t, dir, testApp(), time.Now(), keep)
	res, err := Build(context.Background(), BuildOptions{
		FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: t.TempDir(),
		BuildSHA: "0123456789abcdef0123456789abcdef01234567", ToolVersion: "v9.9.9",
	})
	must(t, err)
	entries := readTar(t, rawTar(t, res.Path))
	var names []string
	for _, e := range entries {
		h := e.hdr
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 0 {
			t.Errorf("%s: owner %d:%d %q:%q mtime %v; want 0:0, no names, epoch", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		want := int64(0o644)
		switch {
		case h.Typeflag == tar.TypeDir || h.Name == "app/bin/start.sh":
			want = 0o755
		case h.Typeflag == tar.TypeSymlink:
			want = 0o777
		}
		if h.Mode != want {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, want)
		}
	}
	wantNames := []string{"capsule.yml", "tori/", "tori/metadata.json", "app/", "app/app/", "app/app/__init__.py",
		"app/app/up.py", "app/app/util.py", "app/bin/", "app/bin/start.sh", "app/current", "app/data/",
		"app/data/blob.bin", "app/data/empty", "app/data/sub/", "app/requirements.txt"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("entries\n%q\nwant\n%q", names, wantNames)
	}
	if string(entries[0].data) != testManifest {
		t.Error("capsule.yml is not the manifest as given")
	}
	var m Metadata
	must(t, json.Unmarshal(entries[2].data, &m))
	if m.Name != "demo" || m.Version != "1.0.0" || m.BuildSHA != "0123456789abcdef0123456789abcdef01234567" ||
		m.ToolVersion != "v9.9.9" || m.Created != "" || m.Schema != SchemaV1 || m.ContentDigest != res.ContentDigest {
		t.Errorf("metadata %+v", m)
	}
	byPath := map[string]FileEntry{}
	for _, f := range m.Files {
		byPath[f.Path] = f
	}
	blob := sha256.Sum256([]byte(testApp()[4].data))
	if f := byPath["app/data/blob.bin"]; f.SHA256 != hex.EncodeToString(blob[:]) || f.Size != 100<<10 || f.Mode != "0644" {
		t.Errorf("blob entry %+v", f)
	}
	if f := byPath["app/current"]; f.Type != "symlink" || f.Target != "app" {
		t.Errorf("symlink entry %+v", f)
	}
	if res.Files != 6 {
		t.Errorf("files %d, want 6", res.Files)
	}
	// The index is checkable on its own.
	if _, _, err := parseMetadata(bytes.NewReader(entries[2].data), "t", DefaultLimits()); err != nil {
		t.Error(err)
	}
}

func TestSourceDateEpoch(t *testing.T) {
	dir := t.TempDir()
	writeDirApp(t, dir, testApp(), time.Now(), keep)
	manifest := writeManifest(t, t.TempDir(), testManifest)
	build := func(sde string) (*BuildResult, error) {
		return Build(context.Background(), BuildOptions{FromDir: dir, Manifest: manifest, OutputDir: t.TempDir(), SourceDateEpoch: sde})
	}
	plain, err := build("")
	must(t, err)
	dated, err := build("1700000000")
	must(t, err)
	again, err := build("1700000000")
	must(t, err)
	if dated.Digest == plain.Digest || dated.Digest != again.Digest {
		t.Errorf("digests: none %s, dated %s, again %s", plain.Digest, dated.Digest, again.Digest)
	}
	entries := readTar(t, rawTar(t, dated.Path))
	for _, e := range entries {
		if e.hdr.ModTime.Unix() != 1700000000 {
			t.Errorf("%s: mtime %v", e.hdr.Name, e.hdr.ModTime)
		}
	}
	var m Metadata
	must(t, json.Unmarshal(entries[2].data, &m))
	if m.Created != "2023-11-14T22:13:20Z" {
		t.Errorf("created %q", m.Created)
	}
	if _, err := build("yesterday"); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}

func TestBuildRefusesBadManifestAndApp(t *testing.T) {
	dir := t.TempDir()
	writeDirApp(t, dir, testApp(), time.Now(), keep)
	out := t.TempDir()
	bad := writeManifest(t, t.TempDir(), "name: Demo!\nversion: one\nentrypoint: bin/start.sh\nservices: [web]\nbogus: 1\n")
	_, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: bad, OutputDir: out})
	_, want := specs.Load(bad)
	var se specs.Errors
	if !errors.As(err, &se) || err.Error() != want.Error() {
		t.Errorf("bad manifest: got %v, want the validate error %v", err, want)
	}

	unpinned := slices.Clone(testApp())
	unpinned[0].data = "flask>=3\n"
	dir2 := t.TempDir()
	writeDirApp(t, dir2, unpinned, time.Now(), keep)
	_, err = Build(context.Background(), BuildOptions{FromDir: dir2, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: out})
	if err == nil || !strings.Contains(err.Error(), "requirements.txt:1") {
		t.Errorf("unpinned requirement: %v", err)
	}

	// An entrypoint left out by an exclude is missing from the capsule.
	_, err = Build(context.Background(), BuildOptions{FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: out, Excludes: []string{"*.sh"}})
	if err == nil || !strings.Contains(err.Error(), "bin/start.sh is not in the app") {
		t.Errorf("excluded entrypoint: %v", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("failed builds left %v", entries)
	}
	for _, o := range []BuildOptions{{Manifest: bad}, {FromDir: dir, FromZip: "x", Manifest: bad}, {FromDir: dir}} {
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestBuildSHAFromGit(t *testing.T) {
	const sha = "89abcdef0123456789abcdef0123456789abcdef"
	for name, layout := range map[string][]appFile{
		"loose":    {{path: ".git/HEAD", data: "ref: refs/heads/main\n"}, {path: ".git/refs/heads/main", data: sha + "\n"}},
		"packed":   {{path: ".git/HEAD", data: "ref: refs/heads/main\n"}, {path: ".git/packed-refs", data: "# pack-refs with: peeled\n" + sha + " refs/heads/main\n"}},
		"detached": {{path: ".git/HEAD", data: sha + "\n"}},
		"unborn":   {{path: ".git/HEAD", data: "ref: refs/heads/main\n"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeDirApp(t, dir, append(testApp(), layout...), time.Now(), keep)
			res, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: t.TempDir()})
			must(t, err)
			want := sha
			if name == "unborn" {
				want = ""
			}
			if res.BuildSHA != want {
				t.Errorf("build SHA %q, want %q", res.BuildSHA, want)
			}
			if slices.ContainsFunc(archiveNames(t, res.Path), func(n string) bool { return strings.Contains(n, ".git") }) {
				t.Error(".git is in the archive")
			}
		})
	}
}

func TestHostileZips(t *testing.T) {
	big := strings.Repeat("0", 2<<20)
	base := testApp()
	cases := []struct {
		name  string
		extra []appFile
		lim   Limits
		is    error
		entry string
	}{
		{"dotdot", []appFile{{path: "../evil.sh", data: "x"}}, Limits{}, ErrUnsafeEntry, "../evil.sh"},
		{"dotdot inside", []appFile{{path: "app/../../evil.sh", data: "x"}}, Limits{}, ErrUnsafeEntry, "app/../../evil.sh"},
		{"absolute", []appFile{{path: "/etc/cron.d/evil", data: "x"}}, Limits{}, ErrUnsafeEntry, "/etc/cron.d/evil"},
		{"backslash", []appFile{{path: `..\evil`, data: "x"}}, Limits{}, ErrUnsafeEntry, `backslash`},
		{"symlink absolute", []appFile{{path: "passwd", link: "/etc/passwd"}}, Limits{}, ErrUnsafeEntry, "passwd"},
		{"symlink up", []appFile{{path: "app/up", link: "../../etc"}}, Limits{}, ErrUnsafeEntry, "app/up"},
		{"symlink through symlink", []appFile{{path: "d", link: "."}, {path: "x", mode: fs.ModeDir}, {path: "l", link: "d/x/../.."}}, Limits{}, ErrUnsafeEntry, "l"},
		{"file under symlink", []appFile{{path: "current/evil.py", data: "x"}}, Limits{}, ErrUnsafeEntry, "current/evil.py"},
		{"duplicate", []appFile{{path: "requirements.txt", data: "flask==1.0\n"}}, Limits{}, ErrUnsafeEntry, "requirements.txt"},
		{"device", []appFile{{path: "dev/sda", data: "", mode: fs.ModeDevice | 0o644}}, Limits{}, ErrUnsafeEntry, "dev/sda"},
		{"pipe", []appFile{{path: "fifo", data: "", mode: fs.ModeNamedPipe | 0o644}}, Limits{}, ErrUnsafeEntry, "fifo"},
		{"file too big", []appFile{{path: "big.txt", data: big}}, Limits{MaxFileSize: 1 << 20}, ErrLimit, "big.txt"},
		{"too many bytes", []appFile{{path: "big1.txt", data: big}, {path: "big2.txt", data: big}}, Limits{MaxBytes: 3 << 20}, ErrLimit, "big2.txt"},
		{"too many files", nil, Limits{MaxFiles: 5}, ErrLimit, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			work := t.TempDir()
			zipFile := filepath.Join(work, "app.zip")
			writeZip(t, zipFile, append(slices.Clone(base), c.extra...))
			manifest := writeManifest(t, work, testManifest)
			before := listTree(t, work)
			_, err := Build(context.Background(), BuildOptions{FromZip: zipFile, Manifest: manifest, OutputDir: work, Limits: c.lim})
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.entry) {
				t.Fatalf("got %v; want %v naming %q", err, c.is, c.entry)
			}
			t.Log(err)
			if after := listTree(t, work); !slices.Equal(before, after) {
				t.Errorf("the build wrote something:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// A zip entry that declares fewer bytes than it inflates to is never read
// past what it declares.
func TestZipBombLyingHeader(t *testing.T) {
	work := t.TempDir()
	zipFile := filepath.Join(work, "bomb.zip")
	f, err := os.Create(zipFile)
	must(t, err)
	zw := zip.NewWriter(f)
	writeZipEntries(t, zw, testApp())
	writeLyingEntry(t, zw, "bomb.txt", 10<<20, 100)
	must(t, zw.Close())
	must(t, f.Close())
	manifest := writeManifest(t, work, testManifest)
	before := listTree(t, work)
	_, err = Build(context.Background(), BuildOptions{FromZip: zipFile, Manifest: manifest, OutputDir: work})
	if err == nil || !strings.Contains(err.Error(), "bomb.txt") {
		t.Fatalf("lying zip entry: %v", err)
	}
	t.Log(err)
	if after := listTree(t, work); !slices.Equal(before, after) {
		t.Errorf("the build wrote something: %q", after)
	}
}

func TestWriteOutputLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	m := &specs.Manifest{Name: "demo", Version: "1.0.0"}
	_, _, err := writeOutput(BuildOptions{OutputDir: dir}, m, func(w io.Writer) error {
		w.Write(make([]byte, 5<<20))
		return errors.New("boom")
	})
	if err == nil {
		t.Fatal("no error")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
}

func TestCompressionIsDeterministic(t *testing.T) {
	data := make([]byte, 5<<20+12345)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		if i%3 == 0 {
			data[i] = byte(rng.Uint32())
		} else {
			data[i] = "tori capsule "[i%13]
		}
	}
	for _, c := range []Compression{Gzip, Zstd} {
		var outs [][]byte
		for _, chunk := range []int{1 << 20, 4096, 777777} {
			var b bytes.Buffer
			zw, err := compressor(&b, c)
			must(t, err)
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				zw.Write(p[:n])
				p = p[n:]
			}
			must(t, zw.Close())
			outs = append(outs, b.Bytes())
		}
		for i := range outs {
			if !bytes.Equal(outs[0], outs[i]) {
				t.Errorf("%s: output depends on write sizes", c)
			}
		}
		r, got, err := decompressor(bytes.NewReader(outs[0]))
		must(t, err)
		back, err := io.ReadAll(r)
		must(t, err)
		if got != c || !bytes.Equal(back, data) {
			t.Errorf("%s: round trip failed (detected %q)", c, got)
		}
	}
}

func TestResolvePaths(t *testing.T) {
	tree := map[string]string{"d": ".", "deep": "a/b/c", "abs": "/etc", "loop": "loop"}
	lookup := func(p string) (nodeKind, string) {
		if t, ok := tree[p]; ok {
			return kindSymlink, t
		}
		return kindNone, ""
	}
	for _, c := range []struct {
		link, target string
		ok           bool
	}{
		{"l", "app", true},
		{"x/l", "../y", true},
		{"x/l", "../../y", false},
		{"l", "d/x/../..", false},
		{"l", "deep/../../..", true},
		{"l", "deep/../../../..", false},
		{"l", "abs/passwd", false},
		{"l", "loop/x", false},
		{"l", "/etc", false},
		{"l", "", false},
	} {
		if err := checkLink(c.link, c.target, lookup); (err == nil) != c.ok {
			t.Errorf("%s -> %s: %v, want ok=%v", c.link, c.target, err, c.ok)
		}
	}
}

func TestHostileFolders(t *testing.T) {
	for name, c := range map[string]struct {
		make  func(dir string) error
		is    error
		entry string
	}{
		"fifo":             {func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644) }, ErrUnsafeEntry, "pipe"},
		"symlink out":      {func(dir string) error { return os.Symlink("../../etc/passwd", filepath.Join(dir, "app/passwd")) }, ErrUnsafeEntry, "app/passwd"},
		"symlink absolute": {func(dir string) error { return os.Symlink("/usr/bin/python3", filepath.Join(dir, "python")) }, ErrUnsafeEntry, "python"},
		"control char":     {func(dir string) error { return os.WriteFile(filepath.Join(dir, "a\nb"), nil, 0o644) }, ErrUnsafeEntry, `a\nb`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeDirApp(t, dir, testApp(), time.Now(), keep)
			must(t, c.make(dir))
			out := t.TempDir()
			_, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: out})
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.entry) {
				t.Fatalf("got %v; want %v naming %q", err, c.is, c.entry)
			}
			t.Log(err)
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("left %v", entries)
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	dir := t.TempDir()
	writeDirApp(t, dir, testApp(), time.Now(), keep)
	_, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: writeManifest(t, t.TempDir(), testManifest), OutputDir: t.TempDir(), Progress: &b})
	must(t, err)
	if out := b.String(); !strings.HasPrefix(out, "\rbuild ") || !strings.HasSuffix(out, "\n") || !strings.Contains(out, "MB/s") {
		t.Errorf("progress %q", out)
	}
}
