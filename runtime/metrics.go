//go:build linux

package runtime

import (
	"sync/atomic"

	"github.com/tori-run/tori-run/runtime/metrics"
	"github.com/tori-run/tori-run/supervisor"
)

// The metrics of what runtime runs (runtime/metrics serves them).

// SampleOf reads a running instance and its supervisor.
func SampleOf(i *Instance, sup *supervisor.Supervisor) metrics.Sample {
	s := metrics.Sample{Capsule: i.Manifest.Name, Release: i.Release, BuildSHA: ShowBuildSHA(i.BuildSHA),
		Version: i.Manifest.Version, Group: i.group, Host: i.host}
	if sup != nil {
		s.Services = sup.Status()
	}
	return s
}

// MetricsBuild is this binary for tori_build_info.
func MetricsBuild() metrics.Build {
	v := Version()
	return metrics.Build{Version: v.Version, Revision: ShowBuildSHA(v.BuildSHA), Go: v.Go}
}

// runMetrics serves the metrics of a foreground run when o.MetricsAddr is
// set: it sets o.Metrics for the state proxy, and returns set, to call
// once the instance is supervised, and closeFn.
func runMetrics(o *Options) (set func(*Instance, *supervisor.Supervisor), closeFn func(), err error) {
	if o.MetricsAddr == "" {
		return func(*Instance, *supervisor.Supervisor) {}, func() {}, nil
	}
	var cur atomic.Pointer[capsuleSampler]
	ms, err := metrics.Start(o.MetricsAddr, MetricsBuild(), func() []metrics.Sample {
		if c := cur.Load(); c != nil {
			return []metrics.Sample{SampleOf(c.inst, c.sup)}
		}
		return nil
	}, o.Log)
	if err != nil {
		return nil, nil, err
	}
	o.Metrics = ms.State
	return func(i *Instance, sup *supervisor.Supervisor) { cur.Store(&capsuleSampler{i, sup}) }, func() { _ = ms.Close() }, nil
}

type capsuleSampler struct {
	inst *Instance
	sup  *supervisor.Supervisor
}
