package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tori-run/tori-run/state/client"
)

// serve is a web service on the socket tori-run passes (systemd's
// LISTEN_FDS): GET / answers its release and pid, GET /state?key=K reads
// the capsule's state. At start it writes seen/$VERSION to the state. mode:
// ok (READY=1 once serving), never-ready (never says so), crash (exits 1
// soon), slow-stop (as ok, but takes 3 s to stop at SIGTERM). A service
// accepts on the shared socket only once it can answer: never-ready (stuck,
// as on a database that never answers) never accepts.
func serve(mode string) int {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if n < 1 || pid != os.Getpid() || !strings.HasPrefix(os.Getenv("LISTEN_FDNAMES"), "http") {
		fmt.Printf("bad socket activation: LISTEN_FDS=%q LISTEN_PID=%q (pid %d) LISTEN_FDNAMES=%q\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getpid(), os.Getenv("LISTEN_FDNAMES"))
		return 3
	}
	l, err := net.FileListener(os.NewFile(3, "http"))
	if err != nil {
		fmt.Println("listener:", err)
		return 3
	}
	switch mode {
	case "crash":
		time.Sleep(300 * time.Millisecond)
		fmt.Println("crashing on purpose")
		return 1
	case "never-ready":
		fmt.Println("stuck")
		time.Sleep(time.Hour)
	}
	st, err := client.FromEnv(client.Options{})
	if err != nil {
		fmt.Println("state:", err)
		return 3
	}
	ctx := context.Background()
	if err := st.Put(ctx, "seen/"+os.Getenv("VERSION"), []byte(os.Getenv("TORI_RELEASE"))); err != nil {
		fmt.Println("state put:", err)
		return 3
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "version=%s pid=%d\n", os.Getenv("VERSION"), os.Getpid())
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		v, err := st.Get(r.Context(), r.URL.Query().Get("key"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(v)
	})
	var drain drainServer
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ConnState: drain.track}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if mode != "never-ready" {
		if err := notifyReady(); err != nil {
			fmt.Println("notify:", err)
		}
	}
	fmt.Println("serving")
	<-term
	fmt.Println("SIGTERM: stopping")
	if mode == "slow-stop" {
		_ = l.Close()
		time.Sleep(3 * time.Second) // a long request in flight
	}
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

func notifyReady() error {
	c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("READY=1\nSTATUS=serving"))
	return err
}
