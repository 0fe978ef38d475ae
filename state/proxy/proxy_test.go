package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
)

type harness struct {
	store *state.Store
	srv   *Server
	sock  string
	cl    *client.Client
}

// startProxy opens a store in a temporary directory and serves it on a
// socket. Identify maps this process to service "svc" unless opts says
// otherwise.
func startProxy(t *testing.T, sopts state.Options, opts Options) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "tsp") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st, err := state.Open(filepath.Join(dir, "state"), sopts)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Identify == nil {
		self := int32(os.Getpid())
		opts.Identify = func(pid int32) (string, error) {
			if pid == self {
				return "svc", nil
			}
			return "", fmt.Errorf("pid %d is in no service of this capsule", pid)
		}
	}
	if opts.Capsule == "" {
		opts.Capsule = "test"
	}
	srv, err := New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "state.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	cl := client.New(sock, client.Options{MaxRetries: -1})
	t.Cleanup(cl.Close)
	return &harness{store: st, srv: srv, sock: sock, cl: cl}
}

// raw sends one request over the socket and returns the response.
func (h *harness) raw(t *testing.T, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://state"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestAPI(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{RatePerMin: 1 << 20, Burst: 1 << 20})
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string // substring of the body
	}{
		{"PUT", "/v1/kv/obs/1", "hello", 204, ""},
		{"GET", "/v1/kv/obs/1", "", 200, "hello"},
		{"PUT", "/v1/kv/obs%2F2", "x", 204, ""},
		{"GET", "/v1/kv?prefix=obs/", "", 200, `["obs/1","obs/2"]`},
		{"GET", "/v1/kv?prefix=nothing", "", 200, `[]`},
		{"DELETE", "/v1/kv/obs/1", "", 204, ""},
		{"GET", "/v1/kv/obs/1", "", 404, `"error"`},
		{"DELETE", "/v1/kv/never", "", 204, ""},
		{"PUT", "/v1/kv/bad%01key", "v", 400, "control character"},
		{"PUT", "/v1/kv/", "v", 400, "empty"},
		{"PUT", "/v1/kv/" + strings.Repeat("k", 513), "v", 413, "limit"},
		{"PUT", "/v1/kv/big", strings.Repeat("v", 1<<20+1), 413, "limit"},
		{"POST", "/v1/events", `{"kind":"note"}`, 200, `"seq"`},
		{"POST", "/v1/events", `{not json`, 400, "JSON"},
		{"GET", "/v1/events?since=0&limit=10", "", 200, `"event":{"kind":"note"}`},
		{"GET", "/v1/events?since=x", "", 400, "since"},
		{"GET", "/v1/events?limit=0", "", 400, "limit"},
		{"GET", "/v1/nope", "", 404, "no such endpoint"},
		{"GET", "/v1/export", "", 404, "no such endpoint"}, // admin only
	} {
		resp, body := h.raw(t, tc.method, tc.path, strings.NewReader(tc.body))
		if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.want)
		}
		if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: error with Content-Type %q, want JSON", tc.method, tc.path, resp.Header.Get("Content-Type"))
		}
	}
	e, ok := h.store.Get("obs/2")
	if !ok || e.Service != "svc" {
		t.Errorf("obs/2 = %+v, %v; want written by svc (the peer's identity)", e, ok)
	}
}

func TestUnknownPeerIsRefused(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{Identify: func(pid int32) (string, error) {
		return "", fmt.Errorf("pid %d: not in this capsule's cgroups", pid)
	}})
	resp, body := h.raw(t, "PUT", "/v1/kv/k", strings.NewReader("v"))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not in this capsule") {
		t.Fatalf("unknown peer: %d %s, want 403", resp.StatusCode, body)
	}
	if _, ok := h.store.Get("k"); ok {
		t.Error("an unknown peer wrote")
	}
	// Not a connection accepted by Serve: no credentials, refused too.
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/kv/k", nil))
	if rec.Code != http.StatusForbidden {
		t.Errorf("request without peer credentials: %d, want 403", rec.Code)
	}
}

// fakeClock is the token bucket's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimitRetryAfter(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	h := startProxy(t, state.Options{}, Options{RatePerMin: 60, Burst: 3, now: clk.now})
	ctx := context.Background()
	for i := range 3 {
		if err := h.cl.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatalf("within the burst: %v", err)
		}
	}
	resp, body := h.raw(t, "PUT", "/v1/kv/over", strings.NewReader("v"))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d Retry-After %q %s; want 429 and 1 second (60/min)", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	clk.add(999 * time.Millisecond)
	if resp, _ := h.raw(t, "GET", "/v1/kv/0", nil); resp.StatusCode != 429 {
		t.Fatalf("before the token is due: %d, want 429", resp.StatusCode)
	}
	clk.add(time.Millisecond)
	if resp, _ := h.raw(t, "GET", "/v1/kv/0", nil); resp.StatusCode != 200 {
		t.Fatalf("when the token is due: %d, want 200", resp.StatusCode)
	}
}

// TestRateLimitAdmittedRate drives the bucket with a fake clock over a
// simulated window: clients that retry as soon as they are refused get
// exactly the configured rate (plus the initial burst). The benchmark
// checks the same over a real minute.
func TestRateLimitAdmittedRate(t *testing.T) {
	for _, tc := range []struct{ perMin, burst int }{{200, 20}, {6000, 100}, {60, 1}} {
		clk := &fakeClock{t: time.Unix(1e9, 0)}
		st, err := state.Open(t.TempDir(), state.Options{})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(st, Options{RatePerMin: tc.perMin, Burst: tc.burst, now: clk.now, Identify: func(int32) (string, error) { return "s", nil }})
		if err != nil {
			t.Fatal(err)
		}
		const window = 10 * time.Minute
		admitted := 0
		for elapsed := time.Duration(0); elapsed < window; elapsed += 7 * time.Millisecond {
			for {
				rec := httptest.NewRecorder()
				if !srv.admit(rec) {
					break
				}
				admitted++
			}
			clk.add(7 * time.Millisecond)
		}
		want := float64(tc.perMin)*window.Minutes() + float64(tc.burst)
		if dev := (float64(admitted) - want) / want; dev > 0.01 || dev < -0.01 {
			t.Errorf("%d/min burst %d: admitted %d over %v, want %.0f ±1%%", tc.perMin, tc.burst, admitted, window, want)
		}
		st.Close()
	}
}

func TestBufferFullIs503(t *testing.T) {
	h := startProxy(t, state.Options{Buffer: 2, BufferWait: time.Nanosecond}, Options{RatePerMin: 1 << 20, Burst: 1 << 20})
	deadline := time.Now().Add(10 * time.Second)
	var got503 atomic.Bool
	var retry atomic.Value
	for !got503.Load() && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				err := h.cl.Put(context.Background(), fmt.Sprint("k", w), []byte("v"))
				var se *client.StatusError
				if errors.As(err, &se) && se.Code == http.StatusServiceUnavailable {
					got503.Store(true)
					retry.Store(se.RetryAfter)
				} else if err != nil {
					t.Errorf("Put: %v", err)
				}
			})
		}
		wg.Wait()
	}
	if !got503.Load() {
		t.Fatal("16 writers on a buffer of 2 that never waits: no 503")
	}
	if ra, _ := retry.Load().(time.Duration); ra < time.Second {
		t.Errorf("503 with Retry-After %v, want at least 1s", ra)
	}
}

func TestSlowClientsCannotExhaust(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{MaxConns: 2, ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	// Two stuck clients take both connection slots, sending half a header.
	var stuck []net.Conn
	for range 2 {
		c, err := net.Dial("unix", h.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	// The header timeout frees their slots: a third client gets through.
	start := time.Now()
	if _, err := h.cl.List(context.Background(), ""); err != nil {
		t.Fatalf("third client: %v", err)
	}
	t.Logf("third client served after %v", time.Since(start).Round(time.Millisecond))
	for _, c := range stuck {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			// A 408 or the connection closed are both fine; a hang is not.
			continue
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("a stuck client's connection was never closed")
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, state.Options{OnCommit: m.CommitObserver("alpha")}, Options{Capsule: "alpha", Metrics: m, RatePerMin: 60, Burst: 2})
	ctx := context.Background()
	_ = h.cl.Put(ctx, "a", []byte("1"))
	_ = h.cl.Put(ctx, "b", []byte("2"))
	_ = h.cl.Put(ctx, "c", []byte("3")) // 429
	if got := testutil.ToFloat64(m.requests.WithLabelValues("alpha", "PUT", "204")); got != 2 {
		t.Errorf("requests{code=204} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.rateLimited.WithLabelValues("alpha")); got != 1 {
		t.Errorf("rate limited = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"tori_state_requests_total", "tori_state_write_seconds", "tori_state_group_commit_records", "tori_state_fsyncs_total", "tori_state_buffer_records", "tori_state_rate_limited_total"} {
		if !seen[name] {
			t.Errorf("metric %s missing", name)
		}
	}
}

func TestAdminHandlerExports(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{RatePerMin: 1, Burst: 1})
	adminSock := h.sock + ".admin"
	l, err := Listen(adminSock)
	if err != nil {
		t.Fatal(err)
	}
	go h.srv.ServeAdmin(l)
	admin := client.New(adminSock, client.Options{MaxRetries: -1})
	defer admin.Close()
	ctx := context.Background()
	for i := range 5 { // no rate limit on the admin socket
		if err := admin.Put(ctx, fmt.Sprint("k", i), []byte(`{"v":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if e, _ := h.store.Get("k0"); e.Service != "tori-run" {
		t.Errorf("admin write recorded as %q", e.Service)
	}
	var jl strings.Builder
	if err := admin.Export(ctx, &jl, "jsonl"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(jl.String()), "\n")
	var first state.JSONLine
	if len(lines) != 5 || json.Unmarshal([]byte(lines[0]), &first) != nil || first.Key != "k0" || *first.Value != `{"v":1}` {
		t.Errorf("jsonl export: %q", jl.String())
	}
	var pq strings.Builder
	if err := admin.Export(ctx, &pq, "parquet"); err != nil {
		t.Fatal(err)
	}
	if s := pq.String(); !strings.HasPrefix(s, "PAR1") || !strings.HasSuffix(s, "PAR1") {
		t.Errorf("parquet export is not a Parquet file (%d bytes)", len(s))
	}
}

func TestClientRetriesAfter429(t *testing.T) {
	h := startProxy(t, state.Options{}, Options{RatePerMin: 60, Burst: 1})
	cl := client.New(h.sock, client.Options{MaxRetries: 3})
	defer cl.Close()
	ctx := context.Background()
	start := time.Now()
	for i := range 2 {
		if err := cl.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("second Put after %v: it did not wait for Retry-After", d)
	}
	if got, err := cl.Get(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get(nope) = %q, %v; want ErrNotFound", got, err)
	}
}

// TestPythonClient runs clients/python's unittest against two real proxies.
func TestPythonClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: the Python client's test cannot run")
	}
	var pyPid atomic.Int32
	identify := func(pid int32) (string, error) {
		if pid == pyPid.Load() {
			return "py", nil
		}
		return "", fmt.Errorf("pid %d is not the python test", pid)
	}
	h := startProxy(t, state.Options{}, Options{RatePerMin: 1 << 20, Burst: 1 << 20, Identify: identify})
	limited := startProxy(t, state.Options{}, Options{RatePerMin: 60, Burst: 1, Identify: identify})
	dir := filepath.Join("..", "..", "clients", "python")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "-v", "test_tori_state")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), client.SocketEnv+"="+h.sock, "TORI_STATE_SOCKET_LIMITED="+limited.sock)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pyPid.Store(int32(cmd.Process.Pid))
	err = cmd.Wait()
	t.Logf("python3 -m unittest -v test_tori_state (in %s):\n%s", dir, out.String())
	if err != nil {
		t.Fatalf("python client tests failed: %v", err)
	}
	if strings.Contains(out.String(), "skipped") {
		t.Error("python tests skipped although the proxies run")
	}
	if e, ok := h.store.Get("py/b"); !ok || e.Service != "py" {
		t.Errorf("py/b = %+v %v: want written by service py (from SO_PEERCRED)", e, ok)
	}
}
