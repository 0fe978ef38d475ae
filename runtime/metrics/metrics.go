//go:build linux

// Package metrics serves tori-run's Prometheus metrics (SPEC §5), for
// `daemon --metrics-addr` and `run --metrics-addr`. It reads what it is
// given (Sample) and runs nothing. Capsule and service series are read at
// scrape time from what
// the daemon (or the foreground run) knows, through one custom collector:
// no per-pid or per-CPU series, and a capsule's series go when it stops.
// Every capsule and service series carries capsule, release and build_sha
// (runtime.BuildSHAAbsent when the release has none); the state proxy's series get
// capsule, release and build_sha from proxy.Metrics.SetRelease.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/state/proxy"
	"github.com/tori-run/tori-run/supervisor"
)

// Sample is what one scrape reads of a running capsule.
type Sample struct {
	Capsule, Release, BuildSHA, Version string
	// Group is the capsule's cgroup (nil: no cgroup series); services'
	// cgroups are its children svc-NAME.
	Group    *cgroups.Group
	Host     *cgroups.Host
	Services []supervisor.ServiceStatus
}

// The labels are the log's field names (runtime.FieldCapsule, ...), so a
// series and a log line of the same capsule match.
const (
	labelCapsule  = "capsule"
	labelRelease  = "release"
	labelBuildSHA = "build_sha"
	labelService  = "service"
)

var (
	capsuleLabels = []string{labelCapsule, labelRelease, labelBuildSHA}
	serviceLabels = []string{labelCapsule, labelRelease, labelBuildSHA, labelService}

	descCapsuleInfo = prometheus.NewDesc("tori_capsule_info",
		"A capsule running here: 1, labelled by capsule name, release digest, build SHA and version.",
		[]string{labelCapsule, labelRelease, labelBuildSHA, "version"}, nil)
	descWorkingSet = prometheus.NewDesc("tori_capsule_memory_working_set_bytes",
		"Memory of the capsule's cgroup less its inactive file cache (as cAdvisor's container_memory_working_set_bytes).",
		capsuleLabels, nil)
	descCapsuleCPU = prometheus.NewDesc("tori_capsule_cpu_usage_seconds_total",
		"CPU time used by every process of the capsule's cgroup (as cAdvisor's container_cpu_usage_seconds_total, summed over CPUs).",
		capsuleLabels, nil)
	descServiceUp = prometheus.NewDesc("tori_service_up",
		"1 when the service's process runs (starting, ready or not), 0 otherwise.", serviceLabels, nil)
	descRestarts = prometheus.NewDesc("tori_service_restarts_total",
		"Times the supervisor started the service again after it ended.", serviceLabels, nil)
	descOOMKills = prometheus.NewDesc("tori_service_oom_kills_total",
		"Processes of the service's cgroup killed by the kernel's OOM killer (oom_kill of its memory cgroup).", serviceLabels, nil)
	descStartTime = prometheus.NewDesc("tori_service_start_time_seconds",
		"Start time of the service's current process, seconds since the Unix epoch (only while it runs).", serviceLabels, nil)
	descScrapeErrors = prometheus.NewDesc("tori_metrics_read_errors",
		"Capsule cgroup files that could not be read during this scrape (0 when all were read).", nil, nil)
)

// capsuleCollector reads the capsules that source returns at each scrape.
type capsuleCollector struct {
	source func() []Sample
	log    zerolog.Logger
}

func (c capsuleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCapsuleInfo, descWorkingSet, descCapsuleCPU, descServiceUp, descRestarts, descOOMKills, descStartTime, descScrapeErrors} {
		ch <- d
	}
}

func (c capsuleCollector) Collect(ch chan<- prometheus.Metric) {
	readErrors := 0
	for _, s := range c.source() {
		ch <- prometheus.MustNewConstMetric(descCapsuleInfo, prometheus.GaugeValue, 1, s.Capsule, s.Release, s.BuildSHA, s.Version)
		if s.Group != nil {
			if st, err := s.Group.Stats(); err == nil {
				ch <- prometheus.MustNewConstMetric(descWorkingSet, prometheus.GaugeValue, float64(st.MemoryWorkingSet), s.Capsule, s.Release, s.BuildSHA)
				ch <- prometheus.MustNewConstMetric(descCapsuleCPU, prometheus.CounterValue, st.CPUUsage.Seconds(), s.Capsule, s.Release, s.BuildSHA)
			} else {
				readErrors++
				c.log.Debug().Err(err).Str(labelCapsule, s.Capsule).Msg("metrics: capsule cgroup stats")
			}
		}
		for _, svc := range s.Services {
			lv := []string{s.Capsule, s.Release, s.BuildSHA, svc.Name}
			up := 0.0
			if svc.Pid != 0 {
				up = 1
				ch <- prometheus.MustNewConstMetric(descStartTime, prometheus.GaugeValue, float64(svc.Started.UnixNano())/float64(time.Second), lv...)
			}
			ch <- prometheus.MustNewConstMetric(descServiceUp, prometheus.GaugeValue, up, lv...)
			ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(svc.Restarts), lv...)
			if s.Group == nil || s.Host == nil {
				continue
			}
			n, err := serviceOOMKills(s.Host, s.Group, svc.Name)
			if err != nil {
				if !errors.Is(err, cgroups.ErrNotExist) { // not started yet
					readErrors++
					c.log.Debug().Err(err).Str(labelCapsule, s.Capsule).Str(labelService, svc.Name).Msg("metrics: oom kills")
				}
				n = 0
			}
			ch <- prometheus.MustNewConstMetric(descOOMKills, prometheus.CounterValue, float64(n), lv...)
		}
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, float64(readErrors))
}

// serviceOOMKills reads the OOM kills of a service's cgroup (svc-NAME
// under the capsule's, as StartService makes it).
func serviceOOMKills(h *cgroups.Host, capsule *cgroups.Group, service string) (uint64, error) {
	g, err := cgroups.Load(h, path.Join(capsule.Path(), "svc-"+service))
	if err != nil {
		return 0, err
	}
	return g.OOMKills()
}

// Build is this binary, as tori_build_info labels it.
type Build struct{ Version, Revision, Go string }

// buildInfoCollector is tori_build_info{version,revision,goversion,...} in
// the shape of client_golang's version collector, with this binary's
// version and build SHA.
func buildInfoCollector(b Build) prometheus.Collector {
	return versioncollector.NewCollector("tori", versioncollector.WithExtraConstLabels(prometheus.Labels{
		"version": b.Version, "revision": b.Revision, "goversion": b.Go,
	}))
}

// Server serves /metrics on a TCP address.
type Server struct {
	// State records the state proxies' series; give it to Options.Metrics.
	State *proxy.Metrics
	// Registry holds every collector served; more can be registered.
	Registry *prometheus.Registry
	srv      *http.Server
	addr     net.Addr
}

// Start listens on addr and serves the registry: build info (b), the
// capsules source returns at each scrape, and the state proxies' series.
func Start(addr string, b Build, source func() []Sample, log zerolog.Logger) (*Server, error) {
	reg := prometheus.NewRegistry()
	st, err := proxy.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{buildInfoCollector(b), capsuleCollector{source: source, log: log}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: zerologPrinter{log}}))
	s := &Server{State: st, Registry: reg, addr: l.Addr(),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", addr).Msg("metrics server")
		}
	}()
	log.Info().Str("addr", l.Addr().String()).Msg("serving metrics on /metrics")
	return s, nil
}

// Addr is where the server listens (the port chosen for ":0").
func (s *Server) Addr() string { return s.addr.String() }

// Close stops serving.
func (s *Server) Close() error { return s.srv.Close() }

// zerologPrinter lets promhttp report gathering errors on our log.
type zerologPrinter struct{ l zerolog.Logger }

func (p zerologPrinter) Println(v ...any) { p.l.Warn().Msg(fmt.Sprint(v...)) }
