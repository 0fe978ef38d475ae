package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openT(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// waitCompactions waits until the compactor has handled every flush so far.
func waitCompactions(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.compactsDue.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the compactor has not caught up after a minute")
		}
		time.Sleep(time.Millisecond)
	}
}

func closeT(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustPut(t *testing.T, s *Store, key, value string) uint64 {
	t.Helper()
	seq, err := s.Put(context.Background(), "svc", key, []byte(value))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return seq
}

func TestPutGetDeleteListAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	ctx := context.Background()
	s1 := mustPut(t, s, "a/1", "one")
	s2 := mustPut(t, s, "a/2", "two")
	mustPut(t, s, "b/1", "three")
	if s2 != s1+1 {
		t.Errorf("seqs %d then %d, want consecutive", s1, s2)
	}
	if _, err := s.Delete(ctx, "svc", "a/2"); err != nil {
		t.Fatal(err)
	}
	ev, err := s.AppendEvent(ctx, "obs", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		e, ok := s.Get("a/1")
		if !ok || string(e.Value) != "one" || e.Service != "svc" || e.Seq != s1 {
			t.Errorf("Get(a/1) = %+v, %v", e, ok)
		}
		if _, ok := s.Get("a/2"); ok {
			t.Error("a/2 deleted but still there")
		}
		if got := s.List("a/"); !slices.Equal(got, []string{"a/1"}) {
			t.Errorf("List(a/) = %q", got)
		}
		evs := s.Events(0, 10)
		if len(evs) != 1 || evs[0].Seq != ev || string(evs[0].Value) != `{"x":1}` || evs[0].Service != "obs" {
			t.Errorf("Events = %+v", evs)
		}
		if got := s.Events(ev, 10); len(got) != 0 {
			t.Errorf("Events(since last) = %+v", got)
		}
	}
	check(s)
	closeT(t, s)
	s = openT(t, dir, Options{}) // from Parquet (Close flushed)
	check(s)
	mustPut(t, s, "c", "log only")
	if err := s.wal.f.Sync(); err != nil {
		t.Fatal(err)
	}
	// Leave without Close: a crash. The next Open must replay the log.
	abandon(t, s)
	s = openT(t, dir, Options{})
	defer closeT(t, s)
	check(s)
	if e, ok := s.Get("c"); !ok || string(e.Value) != "log only" {
		t.Errorf("after crash Get(c) = %+v, %v", e, ok)
	}
}

// abandon stops s's goroutines without flushing and releases its lock, as
// if the process had died.
func abandon(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	s.failed = errors.New("abandoned by the test")
	s.mu.Unlock()
	s.Close()
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	defer closeT(t, s)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	t.Logf("second Open says: %v", err)
}

func TestValidation(t *testing.T) {
	s := openT(t, t.TempDir(), Options{MaxValue: 10})
	defer closeT(t, s)
	ctx := context.Background()
	for _, tc := range []struct {
		key   string
		value string
		want  error
	}{
		{"", "v", ErrBadKey},
		{"a\x00b", "v", ErrBadKey},
		{"a\nb", "v", ErrBadKey},
		{"a\x7fb", "v", ErrBadKey},
		{"\xff", "v", ErrBadKey},
		{string(bytes.Repeat([]byte("k"), 513)), "v", ErrTooLarge},
		{"k", "0123456789x", ErrTooLarge},
	} {
		if _, err := s.Put(ctx, "svc", tc.key, []byte(tc.value)); !errors.Is(err, tc.want) {
			t.Errorf("Put(%q, %d bytes) = %v, want %v", tc.key, len(tc.value), err, tc.want)
		}
	}
	for _, ok := range []string{"k", "ключ/ü/☃", string(bytes.Repeat([]byte("k"), 512))} {
		if _, err := s.Put(ctx, "svc", ok, []byte("v")); err != nil {
			t.Errorf("Put(%q): %v", ok, err)
		}
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	var syncs atomic.Int64
	opts := Options{syncFile: func(f *os.File) error {
		syncs.Add(1)
		time.Sleep(2 * time.Millisecond) // a slow disk makes writers pile up
		return fdatasync(f)
	}}
	s := openT(t, t.TempDir(), opts)
	defer closeT(t, s)
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Put(context.Background(), "svc", fmt.Sprintf("w%d/%d", w, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.Records != writers*each {
		t.Fatalf("records %d, want %d", st.Records, writers*each)
	}
	t.Logf("%d records in %d group commits (%.1f a commit)", st.Records, st.Commits, float64(st.Records)/float64(st.Commits))
	if st.Commits*2 > st.Records {
		t.Errorf("%d commits for %d records from %d writers: group commit is not grouping", st.Commits, st.Records, writers)
	}
}

func TestFsyncFailureRefusesThenRecovers(t *testing.T) {
	dir := t.TempDir()
	var failing atomic.Bool
	var syncs atomic.Int64
	opts := Options{syncFile: func(f *os.File) error {
		syncs.Add(1)
		if failing.Load() {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), errors.New("injected EIO"))
		}
		return fdatasync(f)
	}, FlushInterval: -1, RetryInterval: time.Hour}
	s := openT(t, dir, opts)
	mustPut(t, s, "before", "1")
	failing.Store(true)
	if _, err := s.Put(context.Background(), "svc", "during", []byte("2")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Put with failing fsync: %v, want ErrFailed", err)
	}
	failing.Store(false)
	n := syncs.Load()
	if _, err := s.Put(context.Background(), "svc", "refused", []byte("3")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Put within RetryInterval of a failed fsync: %v, want ErrFailed", err)
	}
	if syncs.Load() != n {
		t.Errorf("a refused write touched the disk")
	}
	if e, ok := s.Get("before"); !ok || string(e.Value) != "1" {
		t.Errorf("reads must go on after a failure: %+v %v", e, ok)
	}
	if d := s.RetryAfter(); d < time.Minute {
		t.Errorf("RetryAfter %v, want about RetryInterval (1h)", d)
	}
	s.mu.Lock()
	s.retryAt = time.Now() // RetryInterval has passed
	s.mu.Unlock()
	mustPut(t, s, "after", "4") // retried: cut back, new segment, written
	if err := s.Err(); err != nil {
		t.Errorf("Err after a successful retry: %v", err)
	}
	closeT(t, s)
	s = openT(t, dir, Options{})
	defer closeT(t, s)
	for k, v := range map[string]string{"before": "1", "after": "4"} {
		if e, ok := s.Get(k); !ok || string(e.Value) != v {
			t.Errorf("acknowledged write %s lost after reopen: %+v %v", k, e, ok)
		}
	}
	for _, k := range []string{"during", "refused"} {
		if _, ok := s.Get(k); ok {
			t.Errorf("refused write %s is there after reopen", k)
		}
	}
}

func TestFlushFailureIsRetried(t *testing.T) {
	dir := t.TempDir()
	var failing atomic.Bool
	failing.Store(true)
	opts := Options{Buffer: 4, BufferWait: 300 * time.Millisecond, FlushInterval: -1, RetryInterval: 5 * time.Millisecond,
		syncFile: func(f *os.File) error {
			if failing.Load() && filepath.Base(filepath.Dir(f.Name())) == "data" {
				return errors.New("injected EIO on a data file")
			}
			return fdatasync(f)
		}}
	s := openT(t, dir, opts)
	mustPut(t, s, "a", "1")
	mustPut(t, s, "b", "2") // reaches half the buffer: the flush fails, and is retried
	mustPut(t, s, "c", "3") // the log still takes writes
	mustPut(t, s, "d", "4")
	if _, err := s.Put(context.Background(), "svc", "e", []byte("5")); !errors.Is(err, ErrBufferFull) || !strings.Contains(err.Error(), "injected EIO") {
		t.Fatalf("Put into a full buffer whose flush fails: %v, want ErrBufferFull naming the flush's error", err)
	}
	if err := s.Flush(context.Background()); err == nil {
		t.Fatalf("Flush while data files cannot be synced succeeded")
	}
	failing.Store(false)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatalf("Flush once the fault is gone: %v", err)
	}
	mustPut(t, s, "e", "5")
	closeT(t, s)
	s = openT(t, dir, Options{})
	defer closeT(t, s)
	if got := s.List(""); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Errorf("after reopen keys %q, want a..e", got)
	}
	assertNoUnlisted(t, dir)
}

func TestBufferFullPushesBack(t *testing.T) {
	release := make(chan struct{})
	opts := Options{Buffer: 4, BufferWait: 50 * time.Millisecond, FlushInterval: -1, syncFile: func(f *os.File) error {
		if filepath.Base(filepath.Dir(f.Name())) == "data" {
			<-release // the flush is stuck
		}
		return fdatasync(f)
	}}
	s := openT(t, t.TempDir(), opts)
	for i := range 4 {
		mustPut(t, s, fmt.Sprint(i), "v")
	}
	_, err := s.Put(context.Background(), "svc", "over", []byte("v"))
	if !errors.Is(err, ErrBufferFull) {
		t.Fatalf("Put into a full buffer: %v, want ErrBufferFull", err)
	}
	close(release)
	mustPut(t, s, "over", "v") // room again once the flush is done
	closeT(t, s)
}

func TestCrashLeftoversAreRemoved(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{Buffer: 2, FlushInterval: -1})
	for i := range 10 {
		mustPut(t, s, fmt.Sprint(i), "v")
	}
	closeT(t, s)
	for _, p := range []string{"data/deadbeef.parquet", "data/.tmp-123", "manifests/.tmp-9"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = openT(t, dir, Options{})
	defer closeT(t, s)
	assertNoUnlisted(t, dir)
	if n := len(s.List("")); n != 10 {
		t.Errorf("%d keys, want 10", n)
	}
}

func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{FlushInterval: -1})
	mustPut(t, s, "a", "1")
	mustPut(t, s, "b", "2")
	seg := s.wal.path()
	abandon(t, s)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// A third frame torn in the middle.
	torn := appendFrame(nil, []Record{{Seq: 3, Op: OpPut, Key: "c", Value: []byte("3"), Time: time.Now()}})
	if err := os.WriteFile(seg, append(data, torn[:len(torn)-2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	defer closeT(t, s)
	if got := s.List(""); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("keys %q, want a b", got)
	}
	if fi, err := os.Stat(seg); err == nil && fi.Size() != int64(len(data)) {
		t.Errorf("segment is %d bytes, want cut to %d", fi.Size(), len(data))
	}
	mustPut(t, s, "c", "3")
}

func TestCorruptMiddleSegmentIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{FlushInterval: -1})
	mustPut(t, s, "a", "1")
	seg := s.wal.path()
	abandon(t, s)
	s = openT(t, dir, Options{FlushInterval: -1}) // a second segment after the first
	mustPut(t, s, "b", "2")
	abandon(t, s)
	data, _ := os.ReadFile(seg)
	data[len(data)-1] ^= 0xff
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a corrupt older segment: %v, want ErrCorrupt", err)
	}
}

// assertNoUnlisted fails if dir holds a data file that no manifest lists,
// a temporary, or a data file that does not match its name.
func assertNoUnlisted(t *testing.T, dir string) {
	t.Helper()
	gens, err := listManifests(filepath.Join(dir, "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, g := range gens {
		m, err := readManifest(filepath.Join(dir, "manifests"), g)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Files {
			listed[f.Name] = true
			if _, err := readDataFile(filepath.Join(dir, "data"), f); err != nil {
				t.Error(err)
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "data"))
	for _, e := range ents {
		if !listed[e.Name()] {
			t.Errorf("data/%s is listed by no manifest", e.Name())
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "manifests", ".tmp-*"))
	if len(tmps) > 0 {
		t.Errorf("temporaries left: %q", tmps)
	}
}

// TestModel runs random operations against the store and a map, with
// restarts (clean and crash-like) and small buffers so flushes and
// compactions happen often.
func TestModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	opts := Options{Buffer: 8, FlushInterval: -1, CompactRatio: 2}
	model := map[string]string{}
	var events []string
	s := openT(t, dir, opts)
	ctx := context.Background()
	steps := 3000
	if testing.Short() {
		steps = 800
	}
	for step := range steps {
		key := fmt.Sprintf("k%02d", rng.IntN(40))
		switch op := rng.IntN(100); {
		case op < 55:
			v := fmt.Sprintf("v%d-%s", step, bytes.Repeat([]byte("x"), rng.IntN(300)))
			mustPut(t, s, key, v)
			model[key] = v
		case op < 75:
			if _, err := s.Delete(ctx, "svc", key); err != nil {
				t.Fatal(err)
			}
			delete(model, key)
		case op < 82:
			batch := []Mutation{{Op: OpPut, Key: key, Value: []byte("b" + key)}, {Op: OpDelete, Key: "k00"}, {Op: OpEvent, Value: []byte("be")}}
			if _, err := s.Apply(ctx, "svc", batch); err != nil {
				t.Fatal(err)
			}
			model[key] = "b" + key
			delete(model, "k00")
			events = append(events, "be")
		case op < 90:
			ev := fmt.Sprintf("e%d", step)
			if _, err := s.AppendEvent(ctx, "svc", []byte(ev)); err != nil {
				t.Fatal(err)
			}
			events = append(events, ev)
		case op < 94:
			closeT(t, s)
			s = openT(t, dir, opts)
		case op < 97:
			abandon(t, s)
			s = openT(t, dir, opts)
		default:
			checkModel(t, s, model, events)
		}
	}
	checkModel(t, s, model, events)
	closeT(t, s)
	s = openT(t, dir, opts)
	defer closeT(t, s)
	checkModel(t, s, model, events)
	assertNoUnlisted(t, dir)
	st := s.Stats()
	t.Logf("stats after reopen: %+v", st)
}

func checkModel(t *testing.T, s *Store, model map[string]string, events []string) {
	t.Helper()
	keys := s.List("")
	want := make([]string, 0, len(model))
	for k := range model {
		want = append(want, k)
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %q, model %q", keys, want)
	}
	for k, v := range model {
		if e, ok := s.Get(k); !ok || string(e.Value) != v {
			t.Fatalf("Get(%q) = %q %v, model %q", k, e.Value, ok, v)
		}
	}
	evs := s.Events(0, len(events)+10)
	if len(evs) != len(events) {
		t.Fatalf("%d events, model %d", len(evs), len(events))
	}
	for i, e := range evs {
		if string(e.Value) != events[i] || (i > 0 && e.Seq <= evs[i-1].Seq) {
			t.Fatalf("event %d = %q seq %d, model %q", i, e.Value, e.Seq, events[i])
		}
	}
}
