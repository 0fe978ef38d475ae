//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/proxy"
)

// Shared is what every instance of one capsule shares while the daemon runs
// it, so that two instances (the old and the new release during an
// upgrade) can run side by side: the listening sockets, opened once, and
// the state store, opened once (its folder has one owner). Each instance
// gets its own proxy over that store, which identifies the callers among
// its own services and has its own rate budget: during the overlap the old
// release's requests are not charged to the new one, which would otherwise
// see 429s because of the upgrade (SPEC §4: a request never fails because
// of it). The reference capsule, whose new release reads every observation
// at start, crashed on such a 429 before this.
type Shared struct {
	capsule string
	o       Options

	mu      sync.Mutex // guards every field below
	socks   *Listeners
	store   *state.Store
	servers []*proxy.Server // the latest last; shut down at Close

	gate probeGate // its own lock (shared_probe.go)
}

// NewShared makes the shared part of capsule's instances.
func NewShared(capsule string, o Options) *Shared {
	return &Shared{capsule: capsule, o: o}
}

func (s *Shared) listeners() *Listeners {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socks
}

// TakeSockets makes the capsule's sockets those of inst (a share of the
// same open sockets): after a start, an adoption or a switch. Sockets the
// previous set held and inst does not are closed.
func (s *Shared) TakeSockets(inst *Instance) error {
	l, err := inst.sockets.Derive(inst.Manifest, inst.opts.RunDir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.socks
	s.socks = l
	s.mu.Unlock()
	if old != nil {
		old.RemoveDropped(l)
		old.Close()
	}
	return nil
}

// serveState serves the capsule's store to inst's services and the admin
// socket of inst, opening the store on first use.
func (s *Shared) serveState(i *Instance) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store == nil {
		m := i.Manifest
		lim := s.o.stateLimits()
		opts := state.Options{Buffer: m.Settings.StateBuffer, Log: i.Log, Quota: lim.Quota,
			EventRetentionCount: lim.EventRetentionCount, EventRetentionAge: lim.EventRetentionAge}
		if s.o.Metrics != nil {
			opts.OnCommit = s.o.Metrics.CommitObserver(m.Name)
		}
		st, err := state.Open(StateDir(s.o.stateRoot(), m.Name), opts)
		if err != nil {
			return fmt.Errorf("capsule state: %w", err)
		}
		s.store = st
	}
	srv, err := proxy.New(s.store, proxy.Options{Capsule: i.Manifest.Name, RatePerMin: i.Manifest.Settings.MaxTokensPerMin,
		MaxRatePerMin: s.o.stateLimits().MaxTokensCeiling, Identify: i.identify, Metrics: s.o.Metrics, Log: i.Log})
	if err != nil {
		return err
	}
	cs := &capsuleState{store: s.store, srv: srv, shared: true}
	for _, p := range []struct {
		path  string
		admin bool
	}{{i.paths.StateSocket, false}, {i.paths.AdminSocket, true}} {
		l, err := proxy.Listen(p.path)
		if err != nil {
			for _, l := range cs.ls {
				l.Close()
			}
			return fmt.Errorf("state socket: %w", err)
		}
		if p.admin {
			if err := os.Chmod(p.path, 0o600); err != nil {
				l.Close()
				return err
			}
		}
		cs.ls = append(cs.ls, l)
		if p.admin {
			go func() { _ = srv.ServeAdmin(l) }()
		} else {
			go func() { _ = srv.Serve(l) }()
		}
	}
	s.servers = append(s.servers, srv)
	i.state = cs
	return nil
}

// unserveState stops accepting on inst's sockets; requests in flight
// finish; the store stays open for the other instance. (Its proxy is not
// shut down: that would drop the capsule's metrics series, which the other
// instance's proxy shares.)
func (s *Shared) unserveState(i *Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range i.state.ls {
		_ = l.Close()
	}
	s.servers = slices.DeleteFunc(s.servers, func(p *proxy.Server) bool { return p == i.state.srv && len(s.servers) > 1 })
	i.state = nil
}

// Close ends what the capsule's instances shared, once none is left: the
// state is flushed and closed, the sockets closed and their files removed.
func (s *Shared) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown(sctx))
	}
	s.servers = nil
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store = nil
	}
	if s.socks != nil {
		s.socks.RemovePaths()
		s.socks.Close()
		s.socks = nil
	}
	return errors.Join(errs...)
}
