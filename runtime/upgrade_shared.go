package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/proxy"
)

// Shared is what every instance of one capsule shares while the daemon runs
// it, so that two instances (the old and the new release during an
// upgrade) can run side by side: the listening sockets, opened once, and
// the state store, opened once (its folder has one owner) and served by
// one proxy to both instances' services.
type Shared struct {
	capsule string
	o       Options

	mu    sync.Mutex // guards every field below
	socks *Listeners
	store *state.Store
	srv   *proxy.Server
	insts map[string]*Instance // instances served by the proxy, by id
}

// NewShared makes the shared part of capsule's instances.
func NewShared(capsule string, o Options) *Shared {
	return &Shared{capsule: capsule, o: o, insts: map[string]*Instance{}}
}

func (s *Shared) listeners() *Listeners {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socks
}

// takeSockets makes the capsule's sockets those of inst (a share of the
// same open sockets): after a start, an adoption or a switch. Sockets the
// previous set held and inst does not are closed.
func (s *Shared) takeSockets(inst *Instance) error {
	l, err := inst.sockets.derive(inst.Manifest, inst.opts.RunDir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.socks
	s.socks = l
	s.mu.Unlock()
	if old != nil {
		for _, h := range old.socks {
			if l.find(h.spec) == nil && h.hostPath != "" {
				_ = os.Remove(h.hostPath)
			}
		}
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
		opts := state.Options{Buffer: m.Settings.StateBuffer, Log: i.Log}
		if s.o.Metrics != nil {
			opts.OnCommit = s.o.Metrics.CommitObserver(m.Name)
		}
		st, err := state.Open(StateDir(s.o.stateRoot(), m.Name), opts)
		if err != nil {
			return fmt.Errorf("capsule state: %w", err)
		}
		srv, err := proxy.New(st, proxy.Options{Capsule: m.Name, RatePerMin: m.Settings.MaxTokensPerMin,
			Identify: s.identify, Metrics: s.o.Metrics, Log: i.Log})
		if err != nil {
			_ = st.Close()
			return err
		}
		s.store, s.srv = st, srv
	}
	cs := &capsuleState{store: s.store, srv: s.srv, shared: true}
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
		srv := s.srv
		if p.admin {
			go func() { _ = srv.ServeAdmin(l) }()
		} else {
			go func() { _ = srv.Serve(l) }()
		}
	}
	s.insts[i.ID] = i
	i.state = cs
	return nil
}

// unserveState stops accepting on inst's sockets; requests in flight
// finish; the store stays open for the other instance.
func (s *Shared) unserveState(i *Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range i.state.ls {
		_ = l.Close()
	}
	delete(s.insts, i.ID)
	i.state = nil
}

// identify finds the service, in whichever instance, whose cgroup holds pid.
func (s *Shared) identify(pid int32) (string, error) {
	s.mu.Lock()
	insts := make([]*Instance, 0, len(s.insts))
	for _, i := range s.insts {
		insts = append(insts, i)
	}
	s.mu.Unlock()
	var errs []error
	for _, i := range insts {
		name, err := i.identify(pid)
		if err == nil {
			return name, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", fmt.Errorf("pid %d: capsule %s has no running instance", pid, s.capsule)
	}
	return "", errs[0]
}

// Close ends what the capsule's instances shared, once none is left: the
// state is flushed and closed, the sockets closed and their files removed.
func (s *Shared) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.srv != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		errs = append(errs, s.srv.Shutdown(sctx))
		cancel()
		errs = append(errs, s.store.Close())
		s.srv, s.store = nil, nil
	}
	if s.socks != nil {
		s.socks.RemovePaths()
		s.socks.Close()
		s.socks = nil
	}
	return errors.Join(errs...)
}
