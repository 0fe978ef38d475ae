//go:build linux

package runtime

import (
	"net"
	"net/url"
	"sync"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/supervisor"
)

// During an upgrade both releases accept from the same sockets, so an http
// or tcp probe of the new release aimed at a declared socket's port could
// be answered by the old release: a release that never gets ready would
// look ready. For the length of such a probe the old release's cgroup is
// frozen: only the new release can accept, and clients' connections wait in
// the socket's queue (none is refused) until one of them takes it.

// probeGate is the old release to freeze while the candidate is probed.
type probeGate struct {
	mu        sync.Mutex // held for a whole frozen probe; guards the fields
	candidate string     // instance id
	old       *cgroups.Group
}

// GateProbes freezes old (the release that serves) during those probes of
// candidate that could reach either release; UngateProbes ends it.
func (s *Shared) GateProbes(candidate, old *Instance) { s.setProbeGate(candidate.ID, old.group) }

// UngateProbes ends GateProbes: it waits for a probe under way and leaves
// the old release thawed.
func (s *Shared) UngateProbes() { s.setProbeGate("", nil) }

// setProbeGate starts (old != nil) or ends freezing old during candidate's
// probes; ending waits for a probe under way and leaves old thawed.
func (s *Shared) setProbeGate(candidate string, old *cgroups.Group) {
	if s == nil {
		return
	}
	s.gate.mu.Lock()
	defer s.gate.mu.Unlock()
	s.gate.candidate, s.gate.old = candidate, old
}

// probeAlone prepares a probe of inst: if it must reach inst alone, the old
// release is frozen until the returned func is called.
func (s *Shared) probeAlone(inst *Instance, p *supervisor.Probe) func() {
	if s == nil || (p.Kind != supervisor.ProbeHTTP && p.Kind != supervisor.ProbeTCP) {
		return func() {}
	}
	s.gate.mu.Lock()
	if s.gate.old == nil || s.gate.candidate != inst.ID || !s.probesSocket(p) {
		s.gate.mu.Unlock()
		return func() {}
	}
	old := s.gate.old
	if err := old.SetFrozen(true); err != nil {
		inst.Log.Warn().Err(err).Msg("cannot freeze the old release for the new one's probe; the probe may reach either")
		s.gate.mu.Unlock()
		return func() {}
	}
	return func() {
		if err := old.SetFrozen(false); err != nil {
			inst.Log.Error().Err(err).Msg("thawing the old release after a probe")
		}
		s.gate.mu.Unlock()
	}
}

// probesSocket says whether the probe connects to a port the capsule's
// declared sockets listen on.
func (s *Shared) probesSocket(p *supervisor.Probe) bool {
	addr := p.Addr
	if p.Kind == supervisor.ProbeHTTP {
		u, err := url.Parse(p.URL)
		if err != nil {
			return false
		}
		addr = u.Host
		if u.Port() == "" {
			port := "80"
			if u.Scheme == "https" {
				port = "443"
			}
			addr = net.JoinHostPort(u.Hostname(), port)
		}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	for _, a := range s.listeners().Addrs() {
		if _, p, err := net.SplitHostPort(a); err == nil && p == port {
			return true
		}
	}
	return false
}
