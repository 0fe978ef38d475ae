// Command upgrade measures blue-green switches of a capsule under a client
// load: N upgrades back and forth between two releases of a web service on
// a declared TCP socket, with W clients requesting it on new connections
// throughout. It reports the switch time (the daemon's: from the new
// release found healthy to the old one no longer accepting, its services
// stopped) and every failed request.
//
//	upgrade [-n 100] [-workers 4] [-short]
//
// Run as root; it works in a temporary folder and removes it. Exit status 1
// if any request failed. The binary is also the capsule's init and its web
// service ("workload serve").
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/daemon"
)

func init() {
	runtime.MaybeInit()
	if len(os.Args) > 2 && os.Args[1] == "workload" && os.Args[2] == "serve" {
		os.Exit(serve())
	}
}

func main() {
	n := flag.Int("n", 100, "switches")
	workers := flag.Int("workers", 4, "concurrent clients")
	short := flag.Bool("short", false, "3 switches, for make test")
	flag.Parse()
	if *short {
		*n = 3
	}
	if err := run(*n, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "bench-upgrade:", err)
		os.Exit(1)
	}
}

func run(n, workers int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (namespaces, mounts, cgroups)")
	}
	tmp, err := os.MkdirTemp("", "tori-bench-upgrade-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o := runtime.Options{Root: filepath.Join(tmp, "root"), RunDir: filepath.Join(tmp, "run"), StateRoot: filepath.Join(tmp, "state"),
		Log: zerolog.New(os.Stderr).Level(zerolog.WarnLevel)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var digests []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		d, err := install(tmp, o.Root, v, port)
		if err != nil {
			return err
		}
		digests = append(digests, d)
	}
	if _, _, err := daemon.Enable(o.Root, digests[0]); err != nil {
		return err
	}
	socket := filepath.Join(tmp, "tori.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Options: o, Socket: socket, StopDeadline: 30 * time.Second})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "daemon:", err)
		}
	}()
	c := daemon.NewClient(socket)
	if err := waitServing(c); err != nil {
		return err
	}
	h := startLoad(fmt.Sprintf("127.0.0.1:%d", port), workers)
	var times []time.Duration
	failedAt := 0
	for i := range n {
		before := h.fail.Load()
		v, err := c.Upgrade(context.Background(), "web", digests[(i+1)%2], daemon.KindUpgrade, func(p daemon.UpgradeProgress) {
			if os.Getenv("BENCH_VERBOSE") != "" {
				fmt.Fprintf(os.Stderr, "%s %s %s\n", p.Time.Format("15:04:05.000000"), p.Phase, p.Message)
			}
		})
		if os.Getenv("BENCH_VERBOSE") != "" {
			fmt.Fprintf(os.Stderr, "%s verdict %s\n", time.Now().Format("15:04:05.000000"), v.Message)
		}
		if err != nil {
			h.stop()
			return err
		}
		if !v.OK {
			h.stop()
			return fmt.Errorf("switch %d: %s", i+1, v.Message)
		}
		times = append(times, v.SwitchTime)
		if h.fail.Load() > before {
			failedAt++
		}
	}
	time.Sleep(100 * time.Millisecond)
	h.stop()
	slices.Sort(times)
	pct := func(p float64) time.Duration { return times[min(len(times)-1, int(p*float64(len(times))))] }
	fmt.Printf("switches %d  workers %d  requests %d  failed %d (in %d switches)\n", n, workers, h.ok.Load()+h.fail.Load(), h.fail.Load(), failedAt)
	fmt.Printf("switch time  median %s  p90 %s  max %s\n", pct(0.5).Round(10*time.Microsecond), pct(0.9).Round(10*time.Microsecond), times[len(times)-1].Round(10*time.Microsecond))
	if h.fail.Load() > 0 {
		return fmt.Errorf("%d requests failed; first: %v", h.fail.Load(), h.errs)
	}
	return nil
}

func install(tmp, root, version string, port int) (string, error) {
	dir := filepath.Join(tmp, "app-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	manifest := fmt.Sprintf(`name: web
version: "%s"
env: { VERSION: "%s" }
services:
  web:
    command: /.tori/tori-run workload serve
    ready: { notify: true, interval: 100ms, retries: 100 }
sockets:
  http: { listen: "tcp://127.0.0.1:%d" }
update: { min_healthy_time: 0s, healthy_deadline: 30s }
`, version, version, port)
	if err := os.WriteFile(filepath.Join(dir, "capsule.yml"), []byte(manifest), 0o644); err != nil {
		return "", err
	}
	res, err := release.Build(context.Background(), release.BuildOptions{FromDir: dir, Manifest: filepath.Join(dir, "capsule.yml"), OutputDir: tmp})
	if err != nil {
		return "", err
	}
	store, err := release.Open(root)
	if err != nil {
		return "", err
	}
	if _, _, err := store.Install(context.Background(), res.Path); err != nil {
		return "", err
	}
	return res.Digest, nil
}

func waitServing(c *daemon.Client) error {
	for range 600 {
		st, err := c.Status(context.Background(), "web")
		if err == nil && len(st) == 1 && len(st[0].Services) == 1 && st[0].Services[0].State == "ready" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the capsule did not become ready")
}

type load struct {
	stopc    chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	errs     []string
}

func startLoad(addr string, workers int) *load {
	h := &load{stopc: make(chan struct{})}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for range workers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stopc:
					return
				default:
				}
				resp, err := hc.Get("http://" + addr + "/")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						h.ok.Add(1)
						continue
					}
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				h.fail.Add(1)
				h.mu.Lock()
				if len(h.errs) < 5 {
					h.errs = append(h.errs, time.Now().Format("15:04:05.000000 ")+err.Error())
				}
				h.mu.Unlock()
			}
		}()
	}
	return h
}

func (h *load) stop() {
	close(h.stopc)
	h.wg.Wait()
}

// serve is the capsule's web service: it accepts on the socket tori-run
// passes (LISTEN_FDS), says READY=1, and at SIGTERM stops accepting, then
// finishes what it accepted.
func serve() int {
	if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n != 1 {
		fmt.Println("no socket passed")
		return 3
	}
	l, err := net.FileListener(os.NewFile(3, "http"))
	if err != nil {
		fmt.Println(err)
		return 3
	}
	var drain drainServer
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ConnState: drain.track, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "version=%s\n", os.Getenv("VERSION"))
	})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
		_, _ = c.Write([]byte("READY=1"))
		c.Close()
	}
	<-term
	drain.stop(srv, l, served, 5*time.Second)
	return 0
}

// drainServer is a graceful stop that loses no request: stop accepting,
// let every accepted connection finish the request it has or is about to
// send, then Shutdown (which closes the idle keep-alive connections).
// Shutdown alone is not enough: net/http drops a request whose headers it
// reads after Shutdown began (server.go: "if c.server.shuttingDown() {
// return }"), and a connection accepted just before is not tracked until
// Serve has looked at it. track must be the server's ConnState.
type drainServer struct {
	mu   sync.Mutex // guards busy and idle
	busy map[net.Conn]bool
	idle chan struct{} // closed when busy empties, while stop waits
}

func (d *drainServer) track(c net.Conn, st http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy == nil {
		d.busy = map[net.Conn]bool{}
	}
	switch st {
	case http.StateNew, http.StateActive:
		d.busy[c] = true
	default: // idle, closed, hijacked
		delete(d.busy, c)
	}
	if len(d.busy) == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
}

func (d *drainServer) stop(srv *http.Server, l net.Listener, served <-chan struct{}, timeout time.Duration) {
	_ = l.Close()
	<-served // Serve returned: every accepted connection is tracked
	d.mu.Lock()
	var idle chan struct{}
	if len(d.busy) > 0 {
		d.idle = make(chan struct{})
		idle = d.idle
	}
	d.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-time.After(timeout):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
