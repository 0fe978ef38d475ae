//go:build linux

package release

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func installed(t *testing.T, root string) (releases, staging []string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(root, "releases"))
	must(t, err)
	for _, de := range des {
		switch {
		case isDigest(de.Name()):
			releases = append(releases, de.Name())
		case de.Name() != lockName:
			staging = append(staging, de.Name())
		}
	}
	return releases, staging
}

func TestInstall(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	root := storeRoot(t)
	s, err := Open(root, WithLogger(testLogger(t)))
	must(t, err)
	rel, already, err := s.Install(context.Background(), res.Path)
	must(t, err)
	if already || rel.Digest != res.Digest || rel.Name != "demo" || rel.Version != "1.0.0" || rel.Files != res.Files || rel.Size != res.Bytes {
		t.Fatalf("release %+v (already %v), built %+v", rel, already, res)
	}
	dir := filepath.Join(root, "releases", res.Digest)
	if rel.Path != dir {
		t.Errorf("path %s, want %s", rel.Path, dir)
	}
	for _, p := range []string{"capsule.yml", "tori/metadata.json", "tori/installed.json", "app/bin/start.sh", "app/data/empty"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "app/current")); err != nil || target != "app" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app/app/up.py")); !strings.HasPrefix(string(b), "#!/bin/sh") {
		t.Errorf("symlink inside the app does not resolve: %q", b)
	}
	assertReadOnly(t, dir)

	again, already, err := s.Install(context.Background(), res.Path)
	must(t, err)
	if !already || again.Digest != rel.Digest || !again.InstalledAt.Equal(rel.InstalledAt) {
		t.Errorf("second install: %+v already=%v", again, already)
	}
	if rels, staging := installed(t, root); len(rels) != 1 || len(staging) != 0 {
		t.Errorf("releases %v, leftovers %v", rels, staging)
	}
	rep, err := s.Verify(res.Digest[:8])
	must(t, err)
	if !rep.OK() {
		t.Errorf("fresh release does not verify: %+v", rep)
	}
}

// assertReadOnly checks that nothing under dir has a write bit, and that
// root owns everything when root installed it.
func assertReadOnly(t *testing.T, dir string) {
	t.Helper()
	must(t, filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink == 0 && info.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s: mode %v has write bits", p, info.Mode())
		}
		if st := info.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0) {
			t.Errorf("%s: owned by %d:%d, want root", p, st.Uid, st.Gid)
		}
		return nil
	}))
}

func TestInstallZstd(t *testing.T) {
	dir := t.TempDir()
	writeDirApp(t, dir, testApp(), time.Now(), keep)
	manifest := writeManifest(t, t.TempDir(), testManifest)
	gz, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: manifest, OutputDir: t.TempDir()})
	must(t, err)
	zs, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: manifest, OutputDir: t.TempDir(), Compression: Zstd})
	must(t, err)
	if zs.Digest != gz.Digest || !strings.HasSuffix(zs.Path, ".tar.zst") {
		t.Fatalf("zstd build: %s %s, gzip %s", zs.Path, zs.Digest, gz.Digest)
	}
	s, err := Open(storeRoot(t))
	must(t, err)
	if _, already, err := s.Install(context.Background(), zs.Path); err != nil || already {
		t.Fatal(already, err)
	}
	if _, already, err := s.Install(context.Background(), gz.Path); err != nil || !already {
		t.Fatal("gzip after zstd:", already, err)
	}
}

func TestInstallConcurrentGoroutines(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	root := storeRoot(t)
	var wg sync.WaitGroup
	results := make([]bool, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			s, err := Open(root)
			if err == nil {
				_, results[i], err = s.Install(context.Background(), res.Path)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	if fresh := slices.Index(results, false); fresh < 0 || slices.Index(results[fresh+1:], false) >= 0 {
		t.Errorf("already flags %v: want exactly one fresh install", results)
	}
	if rels, staging := installed(t, root); len(rels) != 1 || len(staging) != 0 {
		t.Errorf("releases %v, leftovers %v", rels, staging)
	}
}

func TestInstallConcurrentProcesses(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	root := storeRoot(t)
	var outs []string
	for range 2 {
		cmd, out := helper(t, root, res.Path, "")
		defer func() {
			line, _ := out.ReadString('\n')
			outs = append(outs, strings.TrimSpace(line))
			must(t, cmd.Wait())
		}()
	}
	t.Cleanup(func() {
		slices.Sort(outs)
		if !slices.Equal(outs, []string{"already=false", "already=true"}) {
			t.Errorf("helpers said %q", outs)
		}
		if rels, staging := installed(t, root); len(rels) != 1 || len(staging) != 0 {
			t.Errorf("releases %v, leftovers %v", rels, staging)
		}
	})
}

// An install killed at any point leaves no partial release, and the next
// Open removes what it left.
func TestInstallKilled(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	for _, pause := range []string{"entry:1", "entry:7", "staged", "published"} {
		t.Run(pause, func(t *testing.T) {
			root := storeRoot(t)
			cmd, out := helper(t, root, res.Path, pause)
			if line, err := out.ReadString('\n'); strings.TrimSpace(line) != "paused" {
				t.Fatalf("helper said %q, %v", line, err)
			}
			must(t, cmd.Process.Kill())
			cmd.Wait()
			rels, staging := installed(t, root)
			published := pause == "published"
			if published != (len(rels) == 1) || published == (len(staging) == 1) {
				t.Fatalf("after the kill: releases %v, staging %v", rels, staging)
			}
			s, err := Open(root, WithLogger(testLogger(t)))
			must(t, err)
			if rels2, staging := installed(t, root); len(staging) != 0 || !slices.Equal(rels, rels2) {
				t.Errorf("after Open: releases %v, leftovers %v", rels2, staging)
			}
			if published {
				rep, err := s.Verify(res.Digest)
				if err != nil || !rep.OK() {
					t.Errorf("published release: %+v %v", rep, err)
				}
			}
			_, already, err := s.Install(context.Background(), res.Path)
			if err != nil || already != published {
				t.Errorf("install after the kill: already=%v %v", already, err)
			}
		})
	}
}

// Kills at arbitrary moments: whatever the moment, no partial release.
func TestInstallKilledAnytime(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	for _, delay := range []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 45 * time.Millisecond, 60 * time.Millisecond} {
		root := storeRoot(t)
		cmd, _ := helper(t, root, res.Path, "")
		time.Sleep(delay)
		cmd.Process.Kill()
		cmd.Wait()
		s, err := Open(root)
		must(t, err)
		rels, staging := installed(t, root)
		if len(staging) != 0 || len(rels) > 1 {
			t.Fatalf("killed after %v: releases %v, leftovers %v", delay, rels, staging)
		}
		if len(rels) == 1 {
			if rep, err := s.Verify(rels[0]); err != nil || !rep.OK() {
				t.Errorf("killed after %v: release does not verify: %+v %v", delay, rep, err)
			}
		}
	}
}

func TestSweepSparesLiveInstallsAndRemovesTrash(t *testing.T) {
	root := storeRoot(t)
	s, err := Open(root)
	must(t, err)
	st, err := s.newStaging(context.Background())
	must(t, err)
	defer st.discard(s)
	trash := filepath.Join(root, "releases", trashPrefix+strings.Repeat("a", 64))
	must(t, os.MkdirAll(filepath.Join(trash, "app/deep"), 0o755))
	must(t, os.WriteFile(filepath.Join(trash, "app/deep/f"), []byte("x"), 0o444))
	must(t, os.Chmod(filepath.Join(trash, "app/deep"), 0o555))
	must(t, os.Chmod(filepath.Join(trash, "app"), 0o555))
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.dir); err != nil {
		t.Errorf("a live staging folder was removed: %v", err)
	}
	if _, err := os.Stat(trash); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("trash not removed: %v", err)
	}
}

// hostile makes an archive from a good one's tar entries.
type hostile struct {
	name   string
	edit   func(t *testing.T, es []tarEntry) []tarEntry
	raw    func(t *testing.T, tarStream []byte) []byte // the file's bytes; nil = gzip of the tar
	file   string                                      // the archive's name; "" = evil.tar.gz
	lim    Limits
	is     error
	naming string
}

func insertAt(i int, e tarEntry) func(*testing.T, []tarEntry) []tarEntry {
	return func(_ *testing.T, es []tarEntry) []tarEntry { return slices.Insert(es, i, e) }
}

func entryNamed(es []tarEntry, name string) *tarEntry {
	for i := range es {
		if es[i].hdr.Name == name {
			return &es[i]
		}
	}
	panic(name)
}

// editIndex changes the metadata and keeps it self-consistent.
func editIndex(t *testing.T, es []tarEntry, edit func(*Metadata)) {
	var m Metadata
	must(t, json.Unmarshal(es[2].data, &m))
	edit(&m)
	idx, err := decodeIndex(m.Files, "t", DefaultLimits())
	if err == nil {
		m.ContentDigest = contentDigest(idx)
	}
	b, err := encodeMetadata(&m)
	must(t, err)
	es[2].data = b
	es[2].hdr.Size = int64(len(b))
}

func gzipped(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	must(t, zw.Close())
	return out.Bytes()
}

func TestInstallRefusesHostileArchives(t *testing.T) {
	res := buildApp(t, testManifest, testApp(), t.TempDir())
	good := rawTar(t, res.Path)
	reg := func(name, data string, mode int64) tarEntry {
		return tarEntry{hdr: hdr(name, '0', mode, int64(len(data)), ""), data: []byte(data)}
	}
	cases := []hostile{
		{name: "dotdot", edit: insertAt(0, reg("../evil", "x", 0o644)), is: ErrUnsafeEntry, naming: "../evil"},
		{name: "dotdot in app", edit: insertAt(4, reg("app/../../evil", "x", 0o644)), is: ErrUnsafeEntry, naming: "app/../../evil"},
		{name: "absolute", edit: insertAt(3, reg("/etc/evil", "x", 0o644)), is: ErrUnsafeEntry, naming: "/etc/evil"},
		{name: "symlink out", edit: insertAt(4, tarEntry{hdr: hdr("app/evil", '2', 0o777, 0, "../../../etc/passwd")}), is: ErrUnsafeEntry, naming: "app/evil"},
		{name: "symlink absolute", edit: insertAt(4, tarEntry{hdr: hdr("app/evil", '2', 0o777, 0, "/etc/passwd")}), is: ErrUnsafeEntry, naming: "app/evil"},
		{name: "symlink out through symlink", edit: func(t *testing.T, es []tarEntry) []tarEntry {
			editIndex(t, es, func(m *Metadata) {
				m.Files = slices.Insert(m.Files, 2,
					FileEntry{Path: "app/0d", Type: "symlink", Mode: "0777", Target: "."},
					FileEntry{Path: "app/0l", Type: "symlink", Mode: "0777", Target: "0d/app/../.."})
			})
			return es
		}, is: ErrUnsafeEntry, naming: "app/0l"},
		{name: "hard link", edit: insertAt(4, tarEntry{hdr: hdr("app/h", '1', 0o644, 0, "/etc/shadow")}), is: ErrUnsafeEntry, naming: "app/h"},
		{name: "device", edit: insertAt(4, tarEntry{hdr: hdr("app/null", '3', 0o666, 0, "")}), is: ErrUnsafeEntry, naming: "app/null"},
		{name: "fifo", edit: insertAt(4, tarEntry{hdr: hdr("app/fifo", '6', 0o644, 0, "")}), is: ErrUnsafeEntry, naming: "app/fifo"},
		{name: "setuid", edit: func(_ *testing.T, es []tarEntry) []tarEntry {
			entryNamed(es, "app/bin/start.sh").hdr.Mode = 0o4755
			return es
		}, is: ErrUnsafeEntry, naming: "app/bin/start.sh"},
		{name: "too many files", lim: Limits{MaxFiles: 3}, is: ErrLimit, naming: "app/"},
		{name: "file too big", lim: Limits{MaxFileSize: 50 << 10}, is: ErrLimit, naming: "app/data/blob.bin"},
		{name: "decompression bomb", lim: Limits{MaxBytes: 1 << 20, MaxFiles: 100}, raw: func(t *testing.T, tarStream []byte) []byte {
			return gzipped(t, append(slices.Clone(tarStream), make([]byte, 64<<20)...))
		}, is: ErrLimit, naming: "decompression bomb"},
		{name: "content differs from index", edit: func(_ *testing.T, es []tarEntry) []tarEntry {
			e := entryNamed(es, "app/app/__init__.py")
			e.data = bytes.ToUpper(e.data)
			return es
		}, is: ErrDigestMismatch, naming: "app/app/__init__.py"},
		{name: "entry not in index", edit: func(_ *testing.T, es []tarEntry) []tarEntry {
			return append(es, reg("app/zzz", "x", 0o644))
		}, is: ErrInvalidArchive, naming: "app/zzz"},
		{name: "repacked", edit: func(_ *testing.T, es []tarEntry) []tarEntry {
			es[5].hdr.Uname = "root"
			return es
		}, is: ErrInvalidArchive, naming: "canonical"},
		{name: "no metadata", edit: func(_ *testing.T, es []tarEntry) []tarEntry {
			return slices.Delete(es, 1, 3)
		}, is: ErrInvalidArchive, naming: "tori"},
		{name: "truncated", raw: func(t *testing.T, tarStream []byte) []byte {
			return gzipped(t, tarStream[:len(tarStream)/2])
		}, is: ErrInvalidArchive, naming: "unexpected EOF"},
		{name: "garbage", raw: func(t *testing.T, _ []byte) []byte {
			return bytes.Repeat([]byte("not a tar "), 1000)
		}, is: ErrInvalidArchive, naming: "evil.tar.gz"},
		{name: "name carries another digest", file: "capsule-demo-1.0.0-0123456789ab.tar.gz", is: ErrDigestMismatch, naming: "0123456789ab"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stream := good
			if c.edit != nil {
				var es []tarEntry
				for _, e := range readTar(t, good) {
					h := *e.hdr
					es = append(es, tarEntry{hdr: &h, data: slices.Clone(e.data)})
				}
				stream = writeTar(t, c.edit(t, es))
			}
			data := gzipped(t, stream)
			if c.raw != nil {
				data = c.raw(t, stream)
			}
			file := filepath.Join(t.TempDir(), or(c.file, "evil.tar.gz"))
			must(t, os.WriteFile(file, data, 0o644))
			root := storeRoot(t)
			s, err := Open(root, WithLimits(c.lim))
			must(t, err)
			_, _, err = s.Install(context.Background(), file)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.naming) {
				t.Fatalf("got %v; want %v naming %q", err, c.is, c.naming)
			}
			t.Log(err)
			if got := listTree(t, root); !slices.Equal(got, []string{". d---------", "releases d---------", "releases/.lock ----------"}) {
				t.Errorf("left behind: %q", got)
			}
		})
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
