package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// copyDir copies a state directory (without its LOCK) for one damage case.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// frameOffsets returns the start of every frame of a log segment.
func frameOffsets(t *testing.T, path string) (offs []int64, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for o := 0; o < len(b); {
		offs = append(offs, int64(o))
		o += frameHeader + int(binary.LittleEndian.Uint32(b[o:]))
	}
	return offs, int64(len(b))
}

// TestFlippedLogBytesAreNeverCutSilently writes five acknowledged writes, one
// frame each, into the last log segment, then for every frame flips a byte
// of its length, its checksum, its first record and its last byte: opening
// must either refuse with ErrCorrupt naming the segment and the offset, or
// show all five writes. Check must report the damage and Repair must keep
// the four intact writes and say what it dropped.
func TestFlippedLogBytesAreNeverCutSilently(t *testing.T) {
	src := t.TempDir()
	s := openT(t, src, Options{FlushInterval: -1})
	want := map[string]string{}
	for i := range 5 {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i*40))
		mustPut(t, s, k, v)
		want[k] = v
	}
	seg := s.wal.path()
	abandon(t, s)
	rel, _ := filepath.Rel(src, seg)
	offs, size := frameOffsets(t, seg)
	if len(offs) != 5 {
		t.Fatalf("%d frames, want 5", len(offs))
	}
	for i, fo := range offs {
		end := size
		if i+1 < len(offs) {
			end = offs[i+1]
		}
		for _, at := range []struct {
			name string
			off  int64
		}{{"length", fo}, {"length high byte", fo + 3}, {"checksum", fo + 5}, {"record", fo + frameHeader + 6}, {"last byte", end - 1}} {
			t.Run(fmt.Sprintf("frame%d/%s", i, at.name), func(t *testing.T) {
				dir := copyDir(t, src)
				path := filepath.Join(dir, rel)
				flipByte(t, path, at.off)
				st, err := Open(dir, Options{})
				if err == nil {
					got := 0
					for k, v := range want {
						if e, ok := st.Get(k); ok && string(e.Value) == v {
							got++
						}
					}
					st.Close()
					t.Fatalf("flipped byte %d of frame %d (%s): Open succeeded with %d of 5 acknowledged writes", at.off, i, at.name, got)
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("byte %d", fo)) {
					t.Fatalf("Open: %v\nwant ErrCorrupt naming %s and byte %d", err, path, fo)
				}
				rep, err := Check(dir)
				if err != nil || rep.OK() || !strings.Contains(fmt.Sprint(rep.Problems), path) {
					t.Fatalf("Check: %+v, %v; want a problem in %s", rep, err, path)
				}
				rep, err = Repair(dir, Options{})
				if err != nil || len(rep.Problems) == 0 {
					t.Fatalf("Repair: %+v, %v; want what it dropped", rep, err)
				}
				st = openT(t, dir, Options{})
				defer closeT(t, st)
				for k, v := range want {
					e, ok := st.Get(k)
					if k == fmt.Sprintf("k%d", i) {
						if ok && string(e.Value) != v {
							t.Errorf("the damaged write %s came back as %q", k, e.Value)
						}
						continue
					}
					if !ok || string(e.Value) != v {
						t.Errorf("Repair lost intact write %s: %+v %v", k, e, ok)
					}
				}
				if rep, err := Check(dir); err == nil && !rep.OK() {
					t.Errorf("Check after Repair: %v", rep.Problems)
				}
			})
		}
	}
}

// TestTornTailIsStillCut: a frame cut short at the end of the last segment,
// or zeros after the last frame, is a crash mid-append: cut, not refused.
func TestTornTailIsStillCut(t *testing.T) {
	for _, tc := range []string{"short", "zeros"} {
		t.Run(tc, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{FlushInterval: -1})
			mustPut(t, s, "a", "1")
			seg := s.wal.path()
			abandon(t, s)
			b, _ := os.ReadFile(seg)
			frame := appendFrame(nil, []Record{{Seq: 2, Op: OpPut, Key: "b", Value: make([]byte, 5000)}})
			if tc == "short" {
				b = append(b, frame[:len(frame)-100]...)
			} else {
				b = append(b, make([]byte, 8192)...)
			}
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, Options{})
			defer closeT(t, s)
			if e, ok := s.Get("a"); !ok || string(e.Value) != "1" {
				t.Errorf("acknowledged write lost: %+v %v", e, ok)
			}
			if _, ok := s.Get("b"); ok {
				t.Errorf("the torn write is there")
			}
			if _, err := s.Put(context.Background(), "svc", "c", []byte("3")); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestFlippedDataFileBytesAreDetected flushes 10000 records into a data
// file of three row groups, then flips a byte at the start of every page of
// every column chunk and in the footer: Open must refuse naming the file,
// Check must report it, and Repair must keep the intact row groups, never a
// wrong value.
func TestFlippedDataFileBytesAreDetected(t *testing.T) {
	src := t.TempDir()
	s := openT(t, src, Options{Buffer: 20000, FlushInterval: -1})
	const n = 10000
	muts := make([]Mutation, 0, 1000)
	val := func(i int) string { return fmt.Sprintf("v%05d-%s", i, strings.Repeat("y", i%97)) }
	for i := range n {
		muts = append(muts, Mutation{Op: OpPut, Key: fmt.Sprintf("k%05d", i), Value: []byte(val(i))})
		if len(muts) == cap(muts) {
			if _, err := s.Apply(context.Background(), "svc", muts); err != nil {
				t.Fatal(err)
			}
			muts = muts[:0]
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)
	man, err := currentManifest(filepath.Join(src, "manifests"))
	if err != nil || len(man.Files) != 1 {
		t.Fatalf("manifest %+v %v, want one file", man, err)
	}
	rel := filepath.Join("data", man.Files[0].Name)
	offsets := pageOffsets(t, filepath.Join(src, rel))
	if len(offsets) < 18 {
		t.Fatalf("%d pages, want at least 3 row groups × 6 columns", len(offsets))
	}
	offsets = append(offsets, man.Files[0].Size-20) // the footer
	for _, off := range offsets {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			dir := copyDir(t, src)
			path := filepath.Join(dir, rel)
			flipByte(t, path, off)
			if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open with byte %d flipped: %v, want ErrCorrupt naming %s", off, err, path)
			}
			if rep, err := Check(dir); err != nil || rep.OK() {
				t.Fatalf("Check: %+v %v, want a problem", rep, err)
			}
			rep, err := Repair(dir, Options{})
			if err != nil || len(rep.Problems) == 0 {
				t.Fatalf("Repair: %+v %v", rep, err)
			}
			st := openT(t, dir, Options{})
			defer closeT(t, st)
			kept := 0
			for i := range n {
				e, ok := st.Get(fmt.Sprintf("k%05d", i))
				if !ok {
					continue
				}
				kept++
				if string(e.Value) != val(i) {
					t.Fatalf("after Repair k%05d = %q, want %q", i, e.Value, val(i))
				}
			}
			if kept != rep.Records || kept < n-rowGroupRows && off < man.Files[0].Size-100 {
				t.Errorf("kept %d records (report says %d) of %d: %v", kept, rep.Records, n, rep.Problems)
			}
		})
	}
}

// pageOffsets lists where every page of every column chunk starts.
func pageOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for _, rg := range pf.RowGroups() {
		for _, cc := range rg.ColumnChunks() {
			oi, err := cc.OffsetIndex()
			if err != nil {
				t.Fatal(err)
			}
			for i := range oi.NumPages() {
				offs = append(offs, oi.Offset(i))
			}
		}
	}
	return offs
}
