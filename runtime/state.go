//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/runtime/stateadmin"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/proxy"
)

// Each capsule's state lives in <state root>/<capsule>/, which outlives its
// releases. While an instance runs, it owns the store and serves it:
//
//	<instance>/state/state.sock  the capsule's proxy, bound at /run/tori in the
//	                             capsule (TORI_STATE_SOCKET); callers are
//	                             identified by their cgroup, rate-limited
//	<instance>/admin/state.sock  the host's own (root only), for tori-run state
//
// (plan.CapsuleStateSocket; layout names the host's side.)

// StateDir is where a capsule's state lives.
func StateDir(stateRoot, capsule string) string {
	return layout.Layout{StateRoot: stateRoot}.CapsuleState(capsule)
}

func (o *Options) stateRoot() string {
	if o.StateRoot != "" {
		return o.StateRoot
	}
	return layout.DefaultStateRoot
}

// DefaultStateQuota bounds each capsule's state directory unless the
// operator sets another (Options.StateQuota, --state-quota, host.yml).
const DefaultStateQuota = 1 << 30

// DefaultMaxTokensCeiling is the ceiling on a capsule's MAX_TOKENS_PER_MIN
// unless the operator sets another (Options.MaxTokensCeiling).
const DefaultMaxTokensCeiling = proxy.DefaultMaxRatePerMin

// StateLimits are the operator's bounds on one capsule's state (0: none;
// MaxTokensCeiling 0: proxy.DefaultMaxRatePerMin).
type StateLimits = plan.StateLimits

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
	cs, err := openPlanState(i.plan.Capsule, i.plan.State, i.identify, i.opts.Metrics, i.Log)
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

// OpenState opens a capsule's store under stateRoot and makes the proxy
// that serves it (not listening yet), as an instance does: for container
// mode (runtime/incontainer), which compiles no instance plan.
func OpenState(m *specs.Manifest, stateRoot string, identify func(int32) (string, error), metrics *proxy.Metrics, log zerolog.Logger, lim StateLimits) (*state.Store, *proxy.Server, error) {
	cs, err := openPlanState(m.Name, plan.StateOf(m, layout.Layout{StateRoot: stateRoot}, lim), identify, metrics, log)
	if err != nil {
		return nil, nil, err
	}
	return cs.store, cs.srv, nil
}

// openPlanState opens the store a plan names and makes its proxy.
func openPlanState(capsule string, p plan.State, identify func(int32) (string, error), metrics *proxy.Metrics, log zerolog.Logger) (*capsuleState, error) {
	opts := state.Options{Buffer: p.Buffer, Log: log, Quota: p.Limits.Quota,
		EventRetentionCount: p.Limits.EventRetentionCount, EventRetentionAge: p.Limits.EventRetentionAge}
	if metrics != nil {
		opts.OnCommit = metrics.CommitObserver(capsule)
	}
	st, err := state.Open(p.Dir, opts)
	if err != nil {
		return nil, err
	}
	srv, err := proxy.New(st, proxy.Options{Capsule: capsule, RatePerMin: p.RatePerMin, MaxRatePerMin: p.Limits.MaxTokensCeiling,
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
			if i.plan.Service(name) != nil {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("the caller is not a process of a service of capsule %s", i.Manifest.Name)
}

// CapsuleState reads and writes a capsule's state for tori-run state
// (runtime/stateadmin).
type CapsuleState = stateadmin.CapsuleState

// ErrNoKey is a key with no value.
var ErrNoKey = stateadmin.ErrNoKey

// OpenCapsuleState returns the way to a capsule's state: its running
// instance's admin socket, or the store opened directly.
func OpenCapsuleState(root, stateRoot, capsule string) (CapsuleState, error) {
	return stateadmin.Open(root, stateRoot, capsule)
}

// StateReport is what CheckState found or RepairState did.
type StateReport = stateadmin.Report

// CheckState verifies a stopped capsule's state folder without changing it.
func CheckState(stateRoot, capsule string) (StateReport, error) {
	return stateadmin.Check(stateRoot, capsule)
}

// RepairState rewrites a stopped capsule's damaged state folder keeping
// every intact record.
func RepairState(stateRoot, capsule string) (StateReport, error) {
	return stateadmin.Repair(stateRoot, capsule)
}
