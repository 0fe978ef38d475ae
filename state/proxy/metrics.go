package proxy

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/tori-run/tori-run/state"
)

// Metrics are the state proxy's Prometheus metrics, every one labelled by
// capsule. Create one per registry with NewMetrics and share it between the
// capsules' proxies.
type Metrics struct {
	requests     *prometheus.CounterVec
	writeSeconds *prometheus.HistogramVec
	rateLimited  *prometheus.CounterVec
	commitBatch  *prometheus.HistogramVec
	fsyncSeconds *prometheus.HistogramVec

	mu       sync.Mutex // guards stores and releases
	stores   map[string]*state.Store
	releases map[string][2]string // capsule -> release digest, build SHA
	descs    storeDescs
}

type storeDescs struct {
	buffered, bufferCap, fsyncs, commits, keys, events, fileBytes, files, flushes, compactions, failed *prometheus.Desc
	quota, used, quotaRefused, eventsDropped, cacheBytes, pageLoads                                    *prometheus.Desc
}

// NewMetrics creates the metrics and registers them with reg (for instance
// the registry the daemon serves on its metrics address).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	capsule := []string{"capsule"}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tori_state_requests_total", Help: "State proxy requests by capsule, method and HTTP status code.",
		}, []string{"capsule", "method", "code"}),
		writeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tori_state_write_seconds", Help: "Time from a write request to its durable acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, capsule),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tori_state_rate_limited_total", Help: "Requests refused with 429 by the capsule's token bucket.",
		}, capsule),
		commitBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tori_state_group_commit_records", Help: "Records made durable by one group commit (one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}, capsule),
		fsyncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tori_state_log_fsync_seconds", Help: "Duration of the log write and fsync of a group commit.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}, capsule),
		stores:   map[string]*state.Store{},
		releases: map[string][2]string{},
	}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, capsule, nil) }
	m.descs = storeDescs{
		buffered:    d("tori_state_buffer_records", "Records acknowledged and not yet in a Parquet file."),
		bufferCap:   d("tori_state_buffer_capacity_records", "Size of the write buffer."),
		fsyncs:      d("tori_state_fsyncs_total", "fsyncs of the log, data files and manifests."),
		commits:     d("tori_state_group_commits_total", "Group commits (one log fsync each)."),
		keys:        d("tori_state_keys", "Live keys."),
		events:      d("tori_state_events", "Events in the event log."),
		fileBytes:   d("tori_state_file_bytes", "Bytes in the current manifest's Parquet files."),
		files:       d("tori_state_files", "Parquet files in the current manifest."),
		flushes:     d("tori_state_flushes_total", "Buffer flushes into Parquet files."),
		compactions: d("tori_state_compactions_total", "Compactions."),
		failed:      d("tori_state_failed", "1 when the store refuses writes after a failed fsync."),

		quota:         d("tori_state_quota_bytes", "The operator's quota on the capsule's state (0: none)."),
		used:          d("tori_state_used_bytes", "Bytes the quota is checked against: current data files and the log."),
		quotaRefused:  d("tori_state_quota_refused_total", "Writes refused with 507 over the quota."),
		eventsDropped: d("tori_state_events_dropped_total", "Events dropped by the event retention."),
		cacheBytes:    d("tori_state_cache_bytes", "Decoded value pages held in memory."),
		pageLoads:     d("tori_state_page_loads_total", "Value pages read and decoded from data files (cache misses)."),
	}
	for _, c := range []prometheus.Collector{m.requests, m.writeSeconds, m.rateLimited, m.commitBatch, m.fsyncSeconds, storeCollector{m}} {
		// Each series also gets its capsule's release and build_sha
		// labels (SetRelease), so that SPEC §3's promise holds for them.
		if err := reg.Register(releaseLabelled{c: c, m: m}); err != nil {
			return nil, fmt.Errorf("register state metrics: %w", err)
		}
	}
	return m, nil
}

// CommitObserver returns the function to pass as state.Options.OnCommit when
// opening capsule's store, to record group-commit batch sizes and fsync times.
func (m *Metrics) CommitObserver(capsule string) func(records int, fsync time.Duration) {
	if m == nil {
		return nil
	}
	batch, fsync := m.commitBatch.WithLabelValues(capsule), m.fsyncSeconds.WithLabelValues(capsule)
	return func(records int, d time.Duration) {
		batch.Observe(float64(records))
		fsync.Observe(d.Seconds())
	}
}

func (m *Metrics) track(capsule string, s *state.Store) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stores[capsule] = s
}

// forget drops a capsule's series when its proxy shuts down.
func (m *Metrics) forget(capsule string) {
	m.mu.Lock()
	delete(m.stores, capsule)
	m.mu.Unlock()
	l := prometheus.Labels{"capsule": capsule}
	m.requests.DeletePartialMatch(l)
	m.writeSeconds.DeletePartialMatch(l)
	m.rateLimited.DeletePartialMatch(l)
	m.commitBatch.DeletePartialMatch(l)
	m.fsyncSeconds.DeletePartialMatch(l)
}

// storeCollector reads each tracked store's Stats at scrape time.
type storeCollector struct{ m *Metrics }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.m.descs
	for _, x := range []*prometheus.Desc{d.buffered, d.bufferCap, d.fsyncs, d.commits, d.keys, d.events, d.fileBytes, d.files, d.flushes, d.compactions, d.failed,
		d.quota, d.used, d.quotaRefused, d.eventsDropped, d.cacheBytes, d.pageLoads} {
		ch <- x
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	stores := make(map[string]*state.Store, len(c.m.stores))
	for k, v := range c.m.stores {
		stores[k] = v
	}
	c.m.mu.Unlock()
	d := c.m.descs
	for capsule, s := range stores {
		st := s.Stats()
		failed := 0.0
		if st.Failed != nil {
			failed = 1
		}
		g := func(desc *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, capsule)
		}
		cnt := func(desc *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), capsule)
		}
		g(d.buffered, float64(st.Buffered))
		g(d.bufferCap, float64(st.BufferCap))
		cnt(d.fsyncs, st.Fsyncs)
		cnt(d.commits, st.Commits)
		g(d.keys, float64(st.Keys))
		g(d.events, float64(st.Events))
		g(d.fileBytes, float64(st.FileBytes))
		g(d.files, float64(st.Files))
		cnt(d.flushes, st.Flushes)
		cnt(d.compactions, st.Compactions)
		g(d.failed, failed)
		g(d.quota, float64(st.Quota))
		g(d.used, float64(st.Used))
		cnt(d.quotaRefused, st.QuotaRefused)
		cnt(d.eventsDropped, st.EventsDropped)
		g(d.cacheBytes, float64(st.CacheBytes))
		cnt(d.pageLoads, st.PageLoads)
	}
}

// Labels every state series gets besides capsule: the release the capsule
// runs and its build SHA (SPEC §3: every metric of a capsule carries them).
const (
	LabelRelease  = "release"
	LabelBuildSHA = "build_sha"
)

// SetRelease says which release of capsule the proxy serves, for the
// release and build_sha labels of its series (buildSHA as it should be
// shown: the runtime passes "none" when the release has none). During an
// upgrade both releases share the capsule's state; the labels name the
// release that opened it last.
func (m *Metrics) SetRelease(capsule, release, buildSHA string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releases[capsule] = [2]string{release, buildSHA}
}

func (m *Metrics) releaseOf(capsule string) (string, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.releases[capsule]
	if !ok {
		return "unknown", "unknown"
	}
	return r[0], r[1]
}

// releaseLabelled adds the release and build_sha labels of each metric's
// capsule to what c collects. It is an unchecked collector (it describes
// nothing), since its label sets are c's plus two.
type releaseLabelled struct {
	c prometheus.Collector
	m *Metrics
}

func (releaseLabelled) Describe(chan<- *prometheus.Desc) {}

func (l releaseLabelled) Collect(ch chan<- prometheus.Metric) {
	inner := make(chan prometheus.Metric)
	go func() {
		l.c.Collect(inner)
		close(inner)
	}()
	for metric := range inner {
		var pb dto.Metric
		if err := metric.Write(&pb); err != nil {
			ch <- prometheus.NewInvalidMetric(metric.Desc(), err)
			continue
		}
		capsule := ""
		for _, lp := range pb.GetLabel() {
			if lp.GetName() == "capsule" {
				capsule = lp.GetValue()
			}
		}
		rel, sha := l.m.releaseOf(capsule)
		ch <- withLabels{Metric: metric, extra: []*dto.LabelPair{
			{Name: proto.String(LabelBuildSHA), Value: proto.String(sha)},
			{Name: proto.String(LabelRelease), Value: proto.String(rel)},
		}}
	}
}

// withLabels is a metric with extra label pairs.
type withLabels struct {
	prometheus.Metric
	extra []*dto.LabelPair
}

func (w withLabels) Write(out *dto.Metric) error {
	if err := w.Metric.Write(out); err != nil {
		return err
	}
	out.Label = append(out.Label, w.extra...)
	sort.Slice(out.Label, func(i, j int) bool { return out.Label[i].GetName() < out.Label[j].GetName() })
	return nil
}
