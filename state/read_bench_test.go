package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchStore fills a store the way bench/state does (n keys of ~200-byte
// values, in batches) and flushes it, so that every value is in a data file.
func benchStore(b *testing.B, n int) (*Store, []string) {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	keys := make([]string, n)
	rng := rand.New(rand.NewPCG(7, 7))
	ctx := context.Background()
	var muts []Mutation
	for i := range n {
		keys[i] = fmt.Sprintf("obs/%06d", i)
		v := fmt.Sprintf(`{"id":%d,"at":%d,"note":"%s"}`, i, rng.IntN(1e6), strings.Repeat("observed latency ", 10))
		muts = append(muts, Mutation{Op: OpPut, Key: keys[i], Value: []byte(v)})
		if len(muts) == 100 || i == n-1 {
			if _, err := s.Apply(ctx, "bench", muts); err != nil {
				b.Fatal(err)
			}
			muts = muts[:0]
		}
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return s, keys
}

// BenchmarkRead measures random point reads of flushed values (the read
// phase of bench/state), after one pass that warms the cache.
func BenchmarkRead(b *testing.B) {
	for _, n := range []int{20_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, keys := benchStore(b, n)
			for _, k := range keys {
				if _, ok, err := s.Read(k); !ok || err != nil {
					b.Fatalf("Read(%s): %v %v", k, ok, err)
				}
			}
			rng := rand.New(rand.NewPCG(3, 3))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok, _ := s.Read(keys[rng.IntN(n)]); !ok {
					b.Fatal("missing")
				}
			}
		})
	}
}
