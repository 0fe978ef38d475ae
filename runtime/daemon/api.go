//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/supervisor"
)

// The control API: JSON over HTTP/1.1 on a Unix socket that only root may
// use (mode 0600, and each peer's SO_PEERCRED checked). Client is its
// other end.

// DefaultSocket is where the daemon serves its control API.
var DefaultSocket = layout.New("", "", "").ControlSocket()

// CapsuleStatus is one capsule as the daemon reports it.
type CapsuleStatus struct {
	Name     string                     `json:"name"`
	Release  string                     `json:"release"`
	BuildSHA string                     `json:"build_sha,omitempty"` // BuildSHAAbsent when the release records none
	Instance string                     `json:"instance,omitempty"`
	State    CapsuleState               `json:"state"`
	Error    string                     `json:"error,omitempty"`
	Services []supervisor.ServiceStatus `json:"services,omitempty"`
	Since    time.Time                  `json:"since"`
	Adopted  bool                       `json:"adopted,omitempty"`
	// Seccomp is the capsule's system call filter: default, unconfined or
	// "profile FILE" (runtime.SeccompMode).
	Seccomp string `json:"seccomp,omitempty"`
	// Previous is the previous stable release (tori-run rollback's target).
	Previous string `json:"previous,omitempty"`
	// Upgrade is the upgrade under way, if any.
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// Sockets are the capsule's listening sockets' addresses by name.
	Sockets map[string]string   `json:"sockets,omitempty"`
	Storage *runtime.StateUsage `json:"storage,omitempty"` // the state store against its quota
}

// Event is a supervision event of one capsule's service.
type Event struct {
	Capsule string `json:"capsule"`
	// Release is set on events of an upgrade and of its new release.
	Release string `json:"release,omitempty"`
	supervisor.Event
}

func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("a daemon already answers at %s", path)
	}
	_ = os.Remove(path)
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// The control API: JSON over HTTP/1.1 on the Unix socket.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.status(r.URL.Query().Get("capsule")))
	})
	for _, action := range []string{"start", "stop", "restart"} {
		mux.HandleFunc("POST /v1/"+action, func(w http.ResponseWriter, r *http.Request) {
			if err := d.act(r.Context(), action, r.URL.Query().Get("target")); err != nil {
				writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"ok": action})
		})
	}
	mux.HandleFunc("POST /v1/upgrade", d.serveUpgrade)
	mux.HandleFunc("GET /v1/events", d.serveEvents)
	mux.HandleFunc("GET /v1/logs", d.serveLogs)
	return rootOnly(mux)
}

// act starts, stops or restarts NAME or NAME/SERVICE.
func (d *Daemon) act(ctx context.Context, action, target string) error {
	name, service, _ := strings.Cut(target, "/")
	if name == "" {
		return errors.New("no target: expected NAME or NAME/SERVICE")
	}
	sctx, cancel := context.WithTimeout(ctx, d.o.StopDeadline)
	defer cancel()
	if service == "" {
		switch action {
		case "start":
			return d.start(name)
		case "stop":
			return d.stop(sctx, name)
		default:
			if err := d.stop(sctx, name); err != nil {
				return err
			}
			return d.start(name)
		}
	}
	d.mu.Lock()
	m := d.capsules[name]
	running := m != nil && m.state == StateRunning
	d.mu.Unlock()
	if !running {
		return fmt.Errorf("capsule %q is not running", name)
	}
	switch action {
	case "start":
		return m.sup.StartService(service)
	case "stop":
		return m.sup.StopService(sctx, service)
	default:
		return m.sup.RestartService(sctx, service)
	}
}

func (d *Daemon) serveEvents(w http.ResponseWriter, r *http.Request) {
	c := make(chan Event, 256)
	d.mu.Lock()
	d.subs[c] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, c)
		d.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flush(w)
	enc := json.NewEncoder(w)
	for {
		select {
		case ev := <-c:
			if enc.Encode(ev) != nil {
				return
			}
			flush(w)
		case <-r.Context().Done():
			return
		}
	}
}

func (d *Daemon) serveLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts, err := parseLogQuery(q)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	_ = runtime.ReadCapsuleLogs(r.Context(), d.o.Root, q.Get("target"), opts, func(l runtime.LogLine) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		flush(w)
		return nil
	})
}

func parseLogQuery(q map[string][]string) (supervisor.ReadOptions, error) {
	var o supervisor.ReadOptions
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if v := get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, fmt.Errorf("tail=%q: expected a count", v)
		}
		o.Tail = n
	}
	if v := get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return o, fmt.Errorf("since=%q: expected an RFC 3339 time", v)
		}
		o.Since = t
	}
	o.Follow = get("follow") == "1"
	return o, nil
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type peerKey struct{}

// peerOf reads the connecting process's credentials (nil if unknown).
func peerOf(c net.Conn) *unix.Ucred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cred
}

// rootOnly refuses every peer that is not root. The socket's mode (0600)
// already keeps others out; this holds even if the mode is changed.
func rootOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, _ := r.Context().Value(peerKey{}).(*unix.Ucred)
		if cred == nil || cred.Uid != 0 {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "the control API is for root only"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
