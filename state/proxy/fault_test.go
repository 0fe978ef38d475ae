package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
)

// smallFS mounts a tmpfs of size bytes in a temporary directory for the
// test and unmounts it in Cleanup.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts a small tmpfs (skipped under -short)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt, err := os.MkdirTemp("", "tsp-full")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		os.Remove(mnt)
		t.Fatalf("mount a %s tmpfs on %s: %v", size, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
		os.Remove(mnt)
	})
	return mnt
}

// served is a store on dir served by a proxy on a socket of its own.
type served struct {
	store *state.Store
	srv   *Server
	cl    *client.Client
	done  chan error
}

func serveDir(t *testing.T, dir string, sopts state.Options) *served {
	t.Helper()
	st, err := state.Open(dir, sopts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	sockDir, err := os.MkdirTemp("", "tsp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	self := int32(os.Getpid())
	srv, err := New(st, Options{Capsule: "full", RatePerMin: 1 << 30, Burst: 1 << 20, Identify: func(pid int32) (string, error) {
		if pid == self {
			return "svc", nil
		}
		return "", fmt.Errorf("pid %d is no service", pid)
	}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "s.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{store: st, srv: srv, cl: client.New(sock, client.Options{MaxRetries: -1}), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(l) }()
	return s
}

// stop shuts the proxy down and closes the store; it returns Close's error.
func (s *served) stop(t *testing.T) error {
	t.Helper()
	s.cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-s.done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	return s.store.Close()
}

// incompressible returns n bytes that zstd cannot shrink, fixed by i.
func incompressible(i, n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 99))
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	return b
}

// fillUntilRefused writes 300 KB values through the proxy until it refuses
// five in a row; it returns the keys acknowledged and checks every refusal
// is a 507 or a 503 with a Retry-After.
func fillUntilRefused(t *testing.T, s *served, prefix string, acked map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	refused := 0
	for i := 0; refused < 5; i++ {
		if i > 200 {
			t.Fatalf("200 writes of 300 KB into a few MiB and none refused")
		}
		key := fmt.Sprintf("%s/%03d", prefix, i)
		val := incompressible(len(acked)*1000+i, 300<<10)
		err := s.cl.Put(ctx, key, val)
		if err == nil {
			acked[key] = val
			refused = 0
			continue
		}
		var se *client.StatusError
		if !errors.As(err, &se) || (se.Code != http.StatusInsufficientStorage && se.Code != http.StatusServiceUnavailable) || se.RetryAfter <= 0 {
			t.Fatalf("write %s refused with %v, want 507 (or 503) with Retry-After", key, err)
		}
		refused++
		time.Sleep(30 * time.Millisecond) // let the flush timer run while the disk is full
	}
}

func checkAcked(t *testing.T, s *served, acked map[string][]byte) {
	t.Helper()
	for k, want := range acked {
		got, err := s.cl.Get(context.Background(), k)
		if err != nil {
			t.Errorf("acknowledged write %s: %v", k, err)
		} else if string(got) != string(want) {
			t.Errorf("acknowledged write %s reads back %d bytes that differ", k, len(got))
		}
	}
}

// TestFullDiskRecovers fills a real 4 MiB tmpfs through the proxy, frees
// space, and checks that the store takes writes again by itself and that
// every acknowledged write reads back, then and after a reopen; then fills
// it again, closes the store while full, grows the filesystem and checks
// the next open recovers everything (the scenario).
func TestFullDiskRecovers(t *testing.T) {
	mnt := smallFS(t, "4m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "state")
	sopts := state.Options{FlushInterval: 20 * time.Millisecond, RetryInterval: 20 * time.Millisecond, BufferWait: 200 * time.Millisecond}
	s := serveDir(t, dir, sopts)
	acked := map[string][]byte{}
	fillUntilRefused(t, s, "a", acked)
	if len(acked) == 0 {
		t.Fatal("no write acknowledged before the disk was full")
	}
	t.Logf("%d writes of 300 KB acknowledged before the disk was full: %v", len(acked), s.store.Err())
	checkAcked(t, s, acked)

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.cl.Put(context.Background(), "after/free", []byte("back"))
		if err == nil {
			acked["after/free"] = []byte("back")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("1 MiB freed, and the store still refuses writes: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkAcked(t, s, acked)
	if err := s.stop(t); err != nil && !errors.Is(err, state.ErrNoSpace) {
		t.Errorf("Close: %v", err)
	}
	s = serveDir(t, dir, sopts)
	checkAcked(t, s, acked)

	// Full again; closed while full; the volume grows; the next open recovers.
	fillUntilRefused(t, s, "b", acked)
	if err := s.stop(t); err != nil && !errors.Is(err, state.ErrNoSpace) && !strings.Contains(err.Error(), "no space") {
		t.Errorf("Close of a full store: %v", err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, "size=64m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	s = serveDir(t, dir, sopts)
	checkAcked(t, s, acked)
	if err := s.cl.Put(context.Background(), "after/grow", []byte("ok")); err != nil {
		t.Errorf("write after the volume grew: %v", err)
	}
	if err := s.stop(t); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestQuotaIs507(t *testing.T) {
	h := startProxy(t, state.Options{Quota: 16 << 10}, Options{RatePerMin: 1 << 20, Burst: 1 << 10})
	big := strings.Repeat("v", 8<<10)
	var resp *http.Response
	var body string
	for i := range 10 {
		resp, body = h.raw(t, "PUT", fmt.Sprintf("/v1/kv/k%d", i), strings.NewReader(big))
		if resp.StatusCode != http.StatusNoContent {
			break
		}
	}
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(body, "quota is 16384") || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("over quota: %d %q, want 507 with a JSON body naming the quota", resp.StatusCode, body)
	}
	if resp, body := h.raw(t, "DELETE", "/v1/kv/k0", nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("delete over quota: %d %s", resp.StatusCode, body)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.track("q", h.store)
	n, err := testutil.GatherAndCount(reg, "tori_state_quota_bytes", "tori_state_used_bytes", "tori_state_quota_refused_total")
	if err != nil || n != 3 {
		t.Errorf("quota metrics: %d series, %v", n, err)
	}
}

func TestRateCeiling(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{RatePerMin: 1_000_000, MaxRatePerMin: 600})
	if got := h.srv.opts.RatePerMin; got != 600 {
		t.Errorf("MAX_TOKENS_PER_MIN 1000000 under a ceiling of 600: rate %d/min", got)
	}
	if got := float64(h.srv.limiter.Limit()) * 60; got != 600 {
		t.Errorf("the token bucket refills %v a minute, want 600", got)
	}
	h2 := startProxy(t, state.Options{}, Options{RatePerMin: 1_000_000})
	if got := h2.srv.opts.RatePerMin; got != DefaultMaxRatePerMin {
		t.Errorf("no ceiling given: rate %d/min, want the default ceiling %d", got, DefaultMaxRatePerMin)
	}
}

func TestBatchIsOneAtomicCommit(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{RatePerMin: 1 << 20, Burst: 1 << 10})
	ctx := context.Background()
	if err := h.cl.Put(ctx, "b/gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	commits := h.store.Stats().Commits
	ops := []client.Op{{Key: "b/a", Value: []byte("one")}, {Key: "b/bin", Value: []byte{0, 0xff}}, {Delete: true, Key: "b/gone"}, {Event: []byte(`{"n":1}`)}}
	seq, err := h.cl.Batch(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.store.Stats().Commits - commits; got != 1 {
		t.Errorf("a batch of %d took %d commits, want 1", len(ops), got)
	}
	for k, want := range map[string]string{"b/a": "one", "b/bin": "\x00\xff"} {
		if v, err := h.cl.Get(ctx, k); err != nil || string(v) != want {
			t.Errorf("after the batch %s = %q, %v", k, v, err)
		}
	}
	if _, err := h.cl.Get(ctx, "b/gone"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("deleted by the batch: %v", err)
	}
	if evs, err := h.cl.Events(ctx, seq-1, 1); err != nil || len(evs) != 1 || evs[0].Seq != seq {
		t.Errorf("the batch's event: %+v %v (seq %d)", evs, err, seq)
	}
	if _, err := h.cl.Batch(ctx, []client.Op{{Key: "b/ok", Value: []byte("v")}, {Key: "bad\x01", Value: []byte("v")}}); err == nil {
		t.Error("a batch with a bad key was accepted")
	}
	if _, err := h.cl.Get(ctx, "b/ok"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("half a refused batch was applied: %v", err)
	}
}
