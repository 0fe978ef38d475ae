//go:build linux

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

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/specs"
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

// DefaultStateQuota bounds each capsule's state directory unless the
// operator sets another (Options.StateQuota, --state-quota, host.yml).
const DefaultStateQuota = 1 << 30

// DefaultMaxTokensCeiling is the ceiling on a capsule's MAX_TOKENS_PER_MIN
// unless the operator sets another (Options.MaxTokensCeiling).
const DefaultMaxTokensCeiling = proxy.DefaultMaxRatePerMin

// StateLimits are the operator's bounds on one capsule's state (0: none).
type StateLimits struct {
	Quota               int64
	EventRetentionCount int
	EventRetentionAge   time.Duration
	MaxTokensCeiling    int // 0: proxy.DefaultMaxRatePerMin
}

// DefaultStateLimits are the bounds when the operator sets none.
func DefaultStateLimits() StateLimits { return StateLimits{Quota: DefaultStateQuota} }

// stateLimits merges the flags (Options' fields, which win) over the host
// configuration's state: section over the defaults.
func (o *Options) stateLimits() StateLimits {
	l := DefaultStateLimits()
	if o.Host != nil && o.Host.Config != nil {
		hs := o.Host.Config.State
		if hs.Quota != nil {
			l.Quota = int64(min(hs.Quota.Bytes, 1<<62))
			if hs.Quota.Infinity {
				l.Quota = 0
			}
		}
		l.EventRetentionCount, l.EventRetentionAge = hs.EventRetention.Count, hs.EventRetention.Age
		l.MaxTokensCeiling = hs.MaxTokensPerMin
	}
	switch {
	case o.StateQuota > 0:
		l.Quota = o.StateQuota
	case o.StateQuota < 0:
		l.Quota = 0
	}
	if o.EventRetentionCount > 0 {
		l.EventRetentionCount = o.EventRetentionCount
	}
	if o.EventRetentionAge > 0 {
		l.EventRetentionAge = o.EventRetentionAge
	}
	if o.MaxTokensCeiling > 0 {
		l.MaxTokensCeiling = o.MaxTokensCeiling
	}
	return l
}

// StateUsage is a capsule's state store in status: its size against the
// operator's quota.
type StateUsage struct {
	QuotaBytes int64  `json:"quota_bytes"` // 0: none
	UsedBytes  int64  `json:"used_bytes"`
	Keys       int    `json:"keys"`
	Events     int    `json:"events"`
	Failed     string `json:"failed,omitempty"`
}

// StateUsage returns the instance's state store usage, or nil when it has
// none open.
func (i *Instance) StateUsage() *StateUsage {
	if i == nil || i.state == nil {
		return nil
	}
	st := i.state.store.Stats()
	u := &StateUsage{QuotaBytes: st.Quota, UsedBytes: st.Used, Keys: st.Keys, Events: st.Events}
	if st.Failed != nil {
		u.Failed = st.Failed.Error()
	}
	return u
}

// capsuleState is an instance's store and the proxy serving it.
type capsuleState struct {
	store *state.Store
	srv   *proxy.Server
	// shared: the store and server are the capsule's (Options.Shared),
	// served to this instance on ls; stopping closes only those.
	shared bool
	ls     []net.Listener
}

// startState opens the capsule's store and serves it on the capsule's and
// the admin socket.
func (i *Instance) startState() error {
	if i.opts.Metrics != nil {
		i.opts.Metrics.SetRelease(i.Manifest.Name, i.Release, ShowBuildSHA(i.BuildSHA))
	}
	if i.opts.Shared != nil {
		return i.opts.Shared.serveState(i)
	}
	cs, err := openState(i.Manifest, i.opts.stateRoot(), i.identify, i.opts.Metrics, i.Log, i.opts.stateLimits())
	if err != nil {
		return fmt.Errorf("capsule state: %w", err)
	}
	i.state = cs
	srv := cs.srv
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
// durable already; closing flushes the buffer into Parquet). Both are
// bounded by stateStopTimeout: a flush still running then goes on in the
// background (a process that exits meanwhile leaves it to the next Open's
// recovery from the log), and the stop does not wait for it.
func (i *Instance) stopState(ctx context.Context) error {
	if i.state == nil {
		return nil
	}
	if i.state.shared {
		i.opts.Shared.unserveState(i)
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, stateStopTimeout)
	defer cancel()
	st := i.state
	i.state = nil
	err := st.srv.Shutdown(sctx)
	closed := make(chan error, 1)
	go func() { closed <- st.store.Close() }()
	select {
	case cerr := <-closed:
		return errors.Join(err, cerr)
	case <-sctx.Done():
		i.Log.Warn().Dur("after", stateStopTimeout).Msg("the capsule's state store is still flushing; its log holds every acknowledged write")
		return err
	}
}

// stateStopTimeout bounds stopState.
const stateStopTimeout = 5 * time.Second

// openState opens a capsule's store under stateRoot and makes the proxy
// that serves it (not listening yet): what run, the daemon and container
// mode share.
func openState(m *specs.Manifest, stateRoot string, identify func(int32) (string, error), metrics *proxy.Metrics, log zerolog.Logger, lim StateLimits) (*capsuleState, error) {
	opts := state.Options{Buffer: m.Settings.StateBuffer, Log: log, Quota: lim.Quota,
		EventRetentionCount: lim.EventRetentionCount, EventRetentionAge: lim.EventRetentionAge}
	if metrics != nil {
		opts.OnCommit = metrics.CommitObserver(m.Name)
	}
	st, err := state.Open(StateDir(stateRoot, m.Name), opts)
	if err != nil {
		return nil, err
	}
	srv, err := proxy.New(st, proxy.Options{Capsule: m.Name, RatePerMin: m.Settings.MaxTokensPerMin, MaxRatePerMin: lim.MaxTokensCeiling,
		Identify: identify, Metrics: metrics, Log: log})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return &capsuleState{store: st, srv: srv}, nil
}

// identify maps a peer's host pid to the service whose cgroup holds it:
// the caller is who its cgroup says, not what it claims. The proxy holds a
// pidfd of the peer while this runs (proxy.Options.Identify). Its errors
// reach the caller, so they name no pid.
func (i *Instance) identify(pid int32) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("the caller's cgroup cannot be read: %w", errors.Unwrap(err))
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
	return "", fmt.Errorf("the caller is not a process of a service of capsule %s", i.Manifest.Name)
}

// CapsuleState reads and writes a capsule's state for tori-run state:
// through the running capsule's admin socket, or, when it does not run, the
// store opened directly.
type CapsuleState interface {
	Get(ctx context.Context, key string) ([]byte, error) // ErrNoKey when absent
	Put(ctx context.Context, key string, value []byte) error
	List(ctx context.Context, prefix string) ([]string, error)
	Export(ctx context.Context, w io.Writer, format string) error // "parquet" or "jsonl"
	Close() error
}

// ErrNoKey is a key with no value.
var ErrNoKey = errors.New("no such key")

// OpenCapsuleState returns the way to a capsule's state.
func OpenCapsuleState(root, stateRoot, capsule string) (CapsuleState, error) {
	socks, _ := filepath.Glob(filepath.Join(root, "instances", capsule+"-*", "admin", "state.sock"))
	for _, s := range socks {
		if c, err := net.Dial("unix", s); err == nil {
			c.Close()
			return proxyState{client.New(s, client.Options{})}, nil
		}
	}
	st, err := state.Open(StateDir(stateRoot, capsule), state.Options{})
	if err != nil {
		return nil, err
	}
	return storeState{st}, nil
}

type proxyState struct{ *client.Client }

func (p proxyState) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := p.Client.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%q: %w", key, ErrNoKey)
	}
	return v, err
}

func (p proxyState) Close() error { p.Client.Close(); return nil }

type storeState struct{ st *state.Store }

func (s storeState) Get(_ context.Context, key string) ([]byte, error) {
	e, ok := s.st.Get(key)
	if !ok {
		return nil, fmt.Errorf("%q: %w", key, ErrNoKey)
	}
	return e.Value, nil
}

func (s storeState) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.st.Put(ctx, "tori-run", key, value)
	return err
}

func (s storeState) List(_ context.Context, prefix string) ([]string, error) {
	return s.st.List(prefix), nil
}

func (s storeState) Export(_ context.Context, w io.Writer, format string) error {
	f := state.FormatJSONL
	if format == "parquet" {
		f = state.FormatParquet
	}
	return s.st.Export(w, f)
}

func (s storeState) Close() error { return s.st.Close() }

// StateReport is what CheckState found or RepairState did.
type StateReport = state.Report

// CheckState verifies a stopped capsule's state folder (every data file
// against its SHA-256 name, every log frame) without changing it.
func CheckState(stateRoot, capsule string) (StateReport, error) {
	return state.Check(StateDir(stateRoot, capsule))
}

// RepairState rewrites a stopped capsule's damaged state folder keeping
// every intact record; the report's Problems say what it dropped.
func RepairState(stateRoot, capsule string) (StateReport, error) {
	return state.Repair(StateDir(stateRoot, capsule), state.Options{})
}
