//go:build linux

package runtime

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// The runtime's side of the supervisor: a Runner that starts services
// through the capsule's init, Processes tracked by pidfd and cgroup, and a
// Prober that runs exec probes inside the capsule.

type capsuleRunner struct{ inst *Instance }

func (r capsuleRunner) Start(ctx context.Context, name string, out supervisor.Output) (supervisor.Process, error) {
	var env []string
	if out.NotifySocket != "" {
		env = append(env, "NOTIFY_SOCKET="+r.inst.capsulePath(out.NotifySocket))
	}
	svc, err := r.inst.StartService(ctx, name, out.Stdout, out.Stderr, env...)
	if err != nil {
		return nil, err
	}
	return serviceProcess{svc}, nil
}

// serviceProcess is a Service as the supervisor sees it.
type serviceProcess struct{ *Service }

func (p serviceProcess) Pid() int { return p.HostPid }

func (p serviceProcess) Stats() (supervisor.Stats, error) {
	if p.Group == nil {
		return supervisor.Stats{}, errNoCgroup
	}
	st, err := p.Group.Stats()
	if err != nil {
		return supervisor.Stats{}, err
	}
	return supervisor.Stats{MemoryBytes: st.MemoryCurrent, CPU: st.CPUUsage, Pids: int(st.Pids)}, nil
}

// BelongsTo reports whether a host pid is in the service's cgroup: whose
// sd_notify messages count as the service's.
func (p serviceProcess) BelongsTo(pid int) bool {
	if p.Group == nil {
		return pid == p.HostPid
	}
	procs, err := p.Group.Procs()
	return err == nil && slices.Contains(procs, pid)
}

// capsulePath maps a host path under the instance's notify folder to where
// the capsule sees it.
func (i *Instance) capsulePath(host string) string {
	rel, err := filepath.Rel(i.paths.Notify, host)
	if err != nil {
		return host
	}
	return filepath.Join(capsuleNotifyDir, rel)
}

// capsuleProber runs exec probes inside the capsule, in the service's
// cgroup, through the init; http and tcp probes go from the host, which
// shares the capsule's network unless it has network: none.
type capsuleProber struct{ inst *Instance }

func (c capsuleProber) Probe(ctx context.Context, service string, p *supervisor.Probe) error {
	if p.Kind != supervisor.ProbeExec {
		if c.inst.plan.NetworkNone {
			return fmt.Errorf("%s probes cannot reach a capsule with network: none; use an exec probe", p.Kind)
		}
		defer c.inst.opts.Shared.probeAlone(c.inst, p)() // during an upgrade (shared_probe.go)
		return supervisor.HostProber{}.Probe(ctx, service, p)
	}
	return c.inst.Exec(ctx, service, p.Exec)
}

// supervisorConfigs hands the plan's services to the supervisor.
func supervisorConfigs(services []plan.Service) []supervisor.ServiceConfig {
	out := make([]supervisor.ServiceConfig, len(services))
	for i, s := range services {
		v := s.Supervision
		out[i] = supervisor.ServiceConfig{
			Name:          s.Name,
			Restart:       supervisor.Policy(v.Restart),
			Backoff:       supervisor.Backoff{Initial: v.Backoff.Initial, Max: v.Backoff.Max, ResetAfter: v.Backoff.ResetAfter},
			MaxRestarts:   v.MaxRestarts,
			RestartWindow: v.RestartWindow,
			StopSignal:    v.StopSignal,
			StopTimeout:   v.StopTimeout,
			After:         v.After,
			Ready:         probeConfig(v.Ready),
			Health:        probeConfig(v.Health),
		}
	}
	return out
}

// ManifestSupervision is the supervisor's configs of a manifest's services
// (for container mode, runtime/incontainer, where no instance plan is
// compiled).
func ManifestSupervision(m *specs.Manifest) []supervisor.ServiceConfig {
	return supervisorConfigs(plan.CompileServices(plan.Input{Manifest: m}, nil))
}

func probeConfig(p *plan.Probe) *supervisor.Probe {
	if p == nil {
		return nil
	}
	return &supervisor.Probe{Kind: supervisor.ProbeKind(p.Kind), Exec: p.Exec, URL: p.URL, Addr: p.Addr,
		Interval: p.Interval, Timeout: p.Timeout, Retries: p.Retries, OnFailure: supervisor.OnFailure(p.OnFailure)}
}
