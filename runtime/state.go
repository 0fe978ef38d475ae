package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
	"github.com/tori-run/tori-run/state/proxy"
)

// Each capsule's state lives in <state root>/<capsule>/, which outlives its
// releases. While an instance runs, it owns the store and serves it:
//
//	<instance>/state/state.sock  the capsule's proxy, bound at /run/tori in the
//	                             capsule (TORI_STATE_SOCKET); callers are
//	                             identified by their cgroup, rate-limited
//	<instance>/admin/state.sock  the host's own (root only), for tori-run state
const capsuleStateSocket = "/run/tori/state.sock"

// StateDir is where a capsule's state lives.
func StateDir(stateRoot, capsule string) string { return filepath.Join(stateRoot, capsule) }

func (o *Options) stateRoot() string {
	if o.StateRoot != "" {
		return o.StateRoot
	}
	return DefaultStateRoot
}

// capsuleState is an instance's store and the proxy serving it.
type capsuleState struct {
	store *state.Store
	srv   *proxy.Server
}

// startState opens the capsule's store and serves it on the capsule's and
// the admin socket.
func (i *Instance) startState() error {
	m := i.Manifest
	opts := state.Options{Buffer: m.Settings.StateBuffer, Log: i.Log}
	if i.opts.Metrics != nil {
		opts.OnCommit = i.opts.Metrics.CommitObserver(m.Name)
	}
	st, err := state.Open(StateDir(i.opts.stateRoot(), m.Name), opts)
	if err != nil {
		return fmt.Errorf("capsule state: %w", err)
	}
	srv, err := proxy.New(st, proxy.Options{Capsule: m.Name, RatePerMin: m.Settings.MaxTokensPerMin,
		Identify: i.identify, Metrics: i.opts.Metrics, Log: i.Log})
	if err != nil {
		_ = st.Close()
		return err
	}
	i.state = &capsuleState{store: st, srv: srv}
	for _, p := range []struct {
		path  string
		admin bool
	}{{i.paths.StateSocket, false}, {i.paths.AdminSocket, true}} {
		l, err := proxy.Listen(p.path)
		if err != nil {
			return fmt.Errorf("state socket: %w", err)
		}
		if p.admin {
			if err := os.Chmod(p.path, 0o600); err != nil {
				l.Close()
				return err
			}
			go func() { _ = srv.ServeAdmin(l) }()
		} else {
			go func() { _ = srv.Serve(l) }()
		}
	}
	return nil
}

// stopState stops serving and closes the store (acknowledged writes are
// durable already; closing flushes the buffer into Parquet).
func (i *Instance) stopState(ctx context.Context) error {
	if i.state == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := errors.Join(i.state.srv.Shutdown(sctx), i.state.store.Close())
	i.state = nil
	return err
}

// identify maps a peer's host pid to the service whose cgroup holds it:
// the caller is who its cgroup says, not what it claims.
func (i *Instance) identify(pid int32) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	marker := "/" + i.ID + "/svc-"
	for _, line := range strings.Split(string(b), "\n") {
		if _, rest, ok := strings.Cut(line, marker); ok {
			name, _, _ := strings.Cut(rest, "/")
			if i.Manifest.Service(name) != nil {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("pid %d is not a service of capsule %s", pid, i.Manifest.Name)
}

// StateClient returns a client of a running capsule's state (through its
// admin socket), or nil when the capsule does not run.
func StateClient(root, capsule string) *client.Client {
	socks, _ := filepath.Glob(filepath.Join(root, "instances", capsule+"-*", "admin", "state.sock"))
	for _, s := range socks {
		if c, err := net.Dial("unix", s); err == nil {
			c.Close()
			return client.New(s, client.Options{})
		}
	}
	return nil
}

// OpenState opens a capsule's store directly, when no instance owns it.
func OpenState(stateRoot, capsule string) (*state.Store, error) {
	return state.Open(StateDir(stateRoot, capsule), state.Options{})
}

// ExportState writes a store's current state as "parquet" or "jsonl".
func ExportState(st *state.Store, w io.Writer, format string) error {
	f := state.FormatJSONL
	if format == "parquet" {
		f = state.FormatParquet
	}
	return st.Export(w, f)
}
