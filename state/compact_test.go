package state

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A compaction runs beside the flusher: while one is held at each of its
// stages (its temporary written; its file renamed but not yet listed),
// writes go on filling the buffer and flushes go on installing manifests,
// whose garbage collection must leave the compaction's files alone. Once it
// is let go, its manifest lists a file that exists, and every write is
// there, across a reopen.
func TestFlushesDoNotWaitForACompaction(t *testing.T) {
	dir := t.TempDir()
	stages := map[string]chan struct{}{"written": make(chan struct{}), "finished": make(chan struct{})}
	reached := make(chan string, 2)
	first := true
	var s *Store
	// The next compaction checks that the manifest the held one
	// installed lists only files that exist.
	listed := make(chan []string, 1)
	checked := false
	hook := func(stage string) {
		if !first {
			if !checked {
				s.manMu.Lock()
				var missing []string
				for _, f := range s.man.Files {
					if _, err := os.Stat(filepath.Join(dir, "data", f.Name)); err != nil {
						missing = append(missing, f.Name)
					}
				}
				s.manMu.Unlock()
				listed <- missing
				checked = true
			}
			return
		}
		if stage == "finished" {
			first = false
		}
		reached <- stage
		<-stages[stage]
	}
	// Buffer 20: a flush every 10 records, so the writes below need many
	// flushes; with the compaction on the flusher they would hang behind it.
	s = openT(t, dir, Options{Buffer: 20, FlushInterval: -1, BufferWait: 10 * time.Second, compactHook: hook})
	keys := testKeys(400)
	putRound(t, s, keys[:20], 1, 10) // two flushes: the second wakes a compaction of both
	wait := func(stage string) {
		t.Helper()
		select {
		case got := <-reached:
			if got != stage {
				t.Fatalf("compaction reached %q, want %q", got, stage)
			}
		case <-time.After(time.Minute):
			t.Fatalf("no compaction reached %q", stage)
		}
	}
	writeWhileHeld := func(keys []string) {
		t.Helper()
		before := s.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		putRound(t, s, keys, 1, 10)
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush while a compaction is held: %v", err)
		}
		st := s.Stats()
		if st.Flushes < before.Flushes+uint64(len(keys)/10) || st.Compactions != 0 {
			t.Fatalf("while a compaction is held: %d flushes (want at least %d more than %d), %d compactions (want 0)",
				st.Flushes, len(keys)/10, before.Flushes, st.Compactions)
		}
	}
	wait("written")
	writeWhileHeld(keys[20:200])
	tmps, _ := filepath.Glob(filepath.Join(dir, "data", ".tmp-*"))
	if len(tmps) == 0 {
		t.Fatal("the held compaction's temporary file is gone (garbage collection removed it)")
	}
	close(stages["written"])
	wait("finished")
	writeWhileHeld(keys[200:])
	close(stages["finished"])
	putRound(t, s, testKeys(20), 2, 10) // two more flushes: another compaction
	select {
	case missing := <-listed:
		if len(missing) > 0 {
			t.Fatalf("the compaction's manifest lists files that garbage collection removed: %v", missing)
		}
	case <-time.After(time.Minute):
		t.Fatal("no second compaction")
	}
	waitCompactions(t, s)
	if st := s.Stats(); st.Compactions == 0 {
		t.Fatal("no compaction ran")
	}
	checkAll(t, s, keys[:20], 2)
	checkAll(t, s, keys[20:], 1)
	closeT(t, s)
	s = openT(t, dir, Options{Buffer: 20, FlushInterval: -1})
	defer closeT(t, s)
	checkAll(t, s, keys[:20], 2)
	checkAll(t, s, keys[20:], 1)
}

// Garbage collection while writers run leaves temporaries and claimed
// names; at Open (no claims) it removes every file no manifest lists.
func TestGarbageCollectionSkipsClaimedFiles(t *testing.T) {
	dir := t.TempDir()
	man, data := filepath.Join(dir, "manifests"), filepath.Join(dir, "data")
	for _, d := range []string{man, data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{".tmp-123", "claimed.parquet", "garbage.parquet"} {
		if err := os.WriteFile(filepath.Join(data, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var c fileClaims
	c.add("claimed.parquet")
	removed, err := collectGarbage(man, data, 3, &c)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || !strings.HasSuffix(removed[0], "garbage.parquet") {
		t.Fatalf("with claims, removed %v, want only garbage.parquet", removed)
	}
	if removed, err = collectGarbage(man, data, 3, nil); err != nil || len(removed) != 2 {
		t.Fatalf("without claims, removed %v (%v), want the temporary and the claimed file", removed, err)
	}
}

func TestPickCompaction(t *testing.T) {
	files := func(rowBytes int64, sizes ...int64) []fileMeta {
		var out []fileMeta
		for _, s := range sizes {
			out = append(out, fileMeta{Size: s, Rows: max(1, s/rowBytes)})
		}
		return out
	}
	for _, tc := range []struct {
		rowBytes   int64
		sizes      []int64
		start, end int
	}{
		{100, []int64{1e4}, -1, 0},
		{100, []int64{1e4, 1e3}, -1, 2},
		{100, []int64{1e4, 5e3, 5e3}, 0, 3},
		{100, []int64{8e4, 4e4, 2e4, 1e4, 1e4}, 0, 5},            // small rows: the whole carry at once
		{100, []int64{1e6, 1e4, 1e4, 1e4, 1e4, 1e4}, 1, 6},       // a pile-up behind a long compaction: all at once
		{256 << 10, []int64{8e7, 4e7, 2e7, 1e7, 1e7}, 1, 5},      // large values: the newest minMerge
		{256 << 10, []int64{1e9, 1e7, 1e7, 1e7, 1e7, 1e7}, 2, 6}, // and so a pile-up a few at a time
	} {
		start, end := pickCompaction(files(tc.rowBytes, tc.sizes...), 1)
		if start != tc.start || start >= 0 && end != tc.end {
			t.Errorf("pickCompaction(%v) = %d, %d; want %d, %d", tc.sizes, start, end, tc.start, tc.end)
		}
	}
	many := make([]int64, maxFiles+1)
	for i := range many {
		many[i] = 1000
	}
	many[10], many[11], many[12], many[13] = 1, 1, 1, 1
	if start, end := pickCompaction(files(100, many...), 1e-9); start != 10 || end != 10+minMerge {
		t.Errorf("past maxFiles: merged [%d, %d), want the lightest run [10, %d)", start, end, 10+minMerge)
	}
}
