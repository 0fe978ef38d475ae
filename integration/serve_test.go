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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
	// Graceful: stop accepting, then finish what was accepted. Serve must
	// have returned before Shutdown counts the connections: a connection
	// accepted just before is not tracked yet, and Shutdown alone would
	// return without it (the process exits, the client reads EOF).
	_ = l.Close()
	<-served
	fmt.Println("no longer accepting")
	if mode == "slow-stop" {
		time.Sleep(3 * time.Second) // a long request in flight
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
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
