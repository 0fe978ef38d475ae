package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// smallValue is a value of the kind warm caches (well under warmValueMax)
// that names its key and version, so a read from a wrong page or slot shows.
func smallValue(key string, version int) []byte {
	return fmt.Appendf(nil, "%s=%d;%s", key, version, strings.Repeat("v", 100))
}

func putRound(t *testing.T, s *Store, keys []string, version, batch int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(keys); i += batch {
		var muts []Mutation
		for _, k := range keys[i:min(len(keys), i+batch)] {
			muts = append(muts, Mutation{Op: OpPut, Key: k, Value: smallValue(k, version)})
		}
		if _, err := s.Apply(ctx, "svc", muts); err != nil {
			t.Fatal(err)
		}
	}
}

func checkAll(t *testing.T, s *Store, keys []string, version int) {
	t.Helper()
	for _, k := range keys {
		e, ok, err := s.Read(k)
		if err != nil || !ok {
			t.Fatalf("Read(%s): %v, found %v", k, err, ok)
		}
		if want := smallValue(k, version); string(e.Value) != string(want) {
			t.Fatalf("Read(%s) = %.20q..., want %.20q...", k, e.Value, want)
		}
	}
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k/%05d", i)
	}
	return keys
}

// A flush caches the pages it writes from the buffer's copies of the
// values, and a compaction copies the cached pages of the files it merges
// into the pages of the file it writes: reading what was just written (and
// flushed, and compacted) decodes no page.
func TestReadsAfterFlushAndCompactionDecodeNothing(t *testing.T) {
	// A tiny CompactRatio: no compaction until more than maxFiles files.
	s := openT(t, t.TempDir(), Options{Buffer: 4096, FlushInterval: -1, CompactRatio: 1e-9})
	defer closeT(t, s)
	ctx := context.Background()
	keys := testKeys(3000)
	putRound(t, s, keys, 1, 100)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, keys, 1)
	if st := s.Stats(); st.PageLoads != 0 || st.Compactions != 0 {
		t.Fatalf("after a flush: %d pages decoded (want 0: the flush caches them), %d compactions (want 0)", st.PageLoads, st.Compactions)
	}
	// maxFiles more flushes: the last one is followed by a compaction of
	// maxMerge files (more than maxFiles files).
	for i := range maxFiles {
		putRound(t, s, keys[i*50:(i+1)*50], 2, 50)
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitCompactions(t, s)
	if st := s.Stats(); st.Compactions != 1 {
		t.Fatalf("%d compactions, want 1 (the test needs one)", st.Compactions)
	}
	for i, k := range keys {
		version := 1
		if i < maxFiles*50 {
			version = 2
		}
		checkAll(t, s, []string{k}, version)
	}
	if st := s.Stats(); st.PageLoads != 0 {
		t.Fatalf("after a compaction: %d pages decoded, want 0 (the compaction moves the cached pages)", st.PageLoads)
	}
}

// The cache stays within CacheBytes while reads evict, and every read is
// right; large values are not cached by a flush.
func TestCacheIsBoundedInBytes(t *testing.T) {
	const limit = 16 << 10
	s := openT(t, t.TempDir(), Options{Buffer: 200, FlushInterval: -1, CacheBytes: limit})
	defer closeT(t, s)
	keys := testKeys(2000)
	putRound(t, s, keys, 1, 50)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		checkAll(t, s, []string{keys[rng.IntN(len(keys))]}, 1)
		if b := s.Stats().CacheBytes; b > limit {
			t.Fatalf("cache holds %d bytes, over CacheBytes %d", b, limit)
		}
	}
	if st := s.Stats(); st.PageLoads == 0 {
		t.Fatalf("no page was decoded: the test needs a cache smaller than the data")
	}

	big := openT(t, t.TempDir(), Options{FlushInterval: -1})
	defer closeT(t, big)
	mustPut(t, big, "big", strings.Repeat("x", warmValueMax+1))
	if err := big.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := big.Stats(); st.CacheBytes != 0 {
		t.Fatalf("a flush cached %d bytes of a value over warmValueMax", st.CacheBytes)
	}
}

// CLOCK: a page read since the hand last passed survives the next eviction;
// one not read does not.
func TestPageCacheSecondChance(t *testing.T) {
	page := func() *cachedPage { return &cachedPage{data: make([]byte, 1000), offs: []uint32{0, 1000}} }
	size := page().size()
	c := newPageCache(3 * size)
	refs := make([]*pageRef, 5)
	for i := range refs {
		refs[i] = &pageRef{slot: -1}
	}
	a, b, cc, d, e := refs[0], refs[1], refs[2], refs[3], refs[4]
	for _, p := range []*pageRef{a, b, cc} {
		c.insert(p, page())
	}
	c.insert(d, page()) // every page was just inserted: the hand clears them all, then takes the first
	if a.cp.Load() != nil || b.cp.Load() == nil || cc.cp.Load() == nil || d.cp.Load() == nil {
		t.Fatalf("after the 4th insert: cached a %v b %v c %v d %v, want b, c, d", a.cp.Load() != nil, b.cp.Load() != nil, cc.cp.Load() != nil, d.cp.Load() != nil)
	}
	// The hand stands at c (it took a's slot). A read of c gives it a second
	// chance: the next insert evicts b, which nobody read since the hand
	// cleared its bit.
	cc.ref.Store(true) // what a hit does (readValue)
	c.insert(e, page())
	if cc.cp.Load() == nil {
		t.Fatal("the page read since the hand passed was evicted")
	}
	if b.cp.Load() != nil {
		t.Fatal("the page not read since the hand passed was kept")
	}
	if got := c.used(); got != 3*size {
		t.Fatalf("cache accounts %d bytes, want %d", got, 3*size)
	}
}

// Readers run beside writers whose flushes and compactions move values
// between files and pages: every read returns the value of its key (run it
// with -race).
func TestConcurrentReadsDuringCompactions(t *testing.T) {
	s := openT(t, t.TempDir(), Options{Buffer: 64, FlushInterval: -1})
	defer closeT(t, s)
	keys := testKeys(200)
	putRound(t, s, keys, 0, 20)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 3 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[rng.IntN(len(keys))]
				e, ok, err := s.Read(k)
				if err != nil || !ok || !strings.HasPrefix(string(e.Value), k+"=") {
					errs <- fmt.Errorf("Read(%s) = %.20q, %v, %v", k, e.Value, ok, err)
					return
				}
			}
		})
	}
	for v := 1; v <= 6; v++ {
		putRound(t, s, keys, v, 20)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkAll(t, s, keys, 6)
	if st := s.Stats(); st.Compactions == 0 {
		t.Fatal("no compaction ran: the test needs some")
	}
}
