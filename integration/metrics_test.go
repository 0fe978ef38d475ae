package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/daemon"
	"github.com/tori-run/tori-run/supervisor"
)

func metricsDaemonMain(root, runDir, socket, addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	o := daemon.Options{Options: runtime.Options{Root: root, RunDir: runDir, StateRoot: filepath.Join(runDir, "state"),
		Log: zerolog.New(os.Stderr), MetricsAddr: addr}, Socket: socket, StopDeadline: 20 * time.Second}
	if err := daemon.Run(ctx, o); err != nil {
		println(err.Error())
		return 1
	}
	return 0
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape GETs /metrics and parses it with the Prometheus text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses /metrics: %v", err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// series returns the metrics of family name whose labels include want,
// failing when the family is missing or has another type.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, want map[string]string) []*dto.Metric {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("%s is a %s, want a %s", name, mf.GetType(), typ)
	}
	var out []*dto.Metric
	for _, m := range mf.GetMetric() {
		l := labelsOf(m)
		ok := true
		for k, v := range want {
			if l[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no series with %v; it has %v", name, want, mf.GetMetric())
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return -1
}

// TestDaemonMetrics scrapes a real daemon running a real capsule: build
// info, capsule info with release digest and build SHA, the capsule's
// memory and CPU from its cgroups, per-service up, restarts, OOM kills and
// start time, the state proxy's series; a killed service moves its
// restarts counter.
func TestDaemonMetrics(t *testing.T) {
	requireRoot(t)
	o := options(t)
	digest := installFolder(t, o, filepath.Dir(capsule(t, "services:\n  a:\n    command: "+wl+"sleep 600\n  b:\n    command: "+wl+"sleep 600\n")))
	if _, _, err := daemon.Enable(o.Root, "itest"); err != nil {
		t.Fatal(err)
	}
	socket, addr := filepath.Join(o.RunDir, "tori.sock"), freeAddr(t)
	logf, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", b)
		}
	}()
	cmd := exec.Command(os.Args[0], "workload", "metrics-daemon", o.Root, o.RunDir, socket, addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("daemon exit: %v", err)
		}
		assertNothingLeft(t, o)
	}
	defer stop()
	client := daemon.NewClient(socket)
	pids := map[string]int{}
	for i := 0; len(pids) < 2; i++ {
		if i == 300 {
			t.Fatal("the capsule did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
		st, err := client.Status(context.Background(), "itest")
		if err != nil || len(st) != 1 {
			continue
		}
		for _, s := range st[0].Services {
			if s.State == supervisor.StateReady {
				pids[s.Name] = s.Pid
			}
		}
	}

	mfs := scrape(t, addr)
	bi := series(t, mfs, "tori_build_info", dto.MetricType_GAUGE, nil)[0]
	for _, l := range []string{"version", "revision", "goversion"} {
		if labelsOf(bi)[l] == "" {
			t.Errorf("tori_build_info has no %s label: %v", l, labelsOf(bi))
		}
	}
	id := map[string]string{"capsule": "itest", "release": digest, "build_sha": runtime.BuildSHAAbsent}
	info := series(t, mfs, "tori_capsule_info", dto.MetricType_GAUGE, id)
	if labelsOf(info[0])["version"] != "1.0.0" || value(info[0]) != 1 {
		t.Errorf("tori_capsule_info = %v %v", labelsOf(info[0]), value(info[0]))
	}
	if v := value(series(t, mfs, "tori_capsule_memory_working_set_bytes", dto.MetricType_GAUGE, id)[0]); v <= 0 {
		t.Errorf("working set %v bytes; a running capsule uses some memory", v)
	}
	if v := value(series(t, mfs, "tori_capsule_cpu_usage_seconds_total", dto.MetricType_COUNTER, id)[0]); v <= 0 || v > 1e6 {
		t.Errorf("cpu usage %v s: not seconds", v)
	}
	for _, name := range []string{"a", "b"} {
		sid := map[string]string{"capsule": "itest", "release": digest, "build_sha": runtime.BuildSHAAbsent, "service": name}
		if v := value(series(t, mfs, "tori_service_up", dto.MetricType_GAUGE, sid)[0]); v != 1 {
			t.Errorf("tori_service_up{service=%s} = %v", name, v)
		}
		if v := value(series(t, mfs, "tori_service_restarts_total", dto.MetricType_COUNTER, sid)[0]); v != 0 {
			t.Errorf("tori_service_restarts_total{service=%s} = %v before any restart", name, v)
		}
		if v := value(series(t, mfs, "tori_service_oom_kills_total", dto.MetricType_COUNTER, sid)[0]); v != 0 {
			t.Errorf("tori_service_oom_kills_total{service=%s} = %v", name, v)
		}
		if v := value(series(t, mfs, "tori_service_start_time_seconds", dto.MetricType_GAUGE, sid)[0]); v < 1e9 || v > float64(time.Now().Unix()+1) {
			t.Errorf("tori_service_start_time_seconds{service=%s} = %v: not seconds since the epoch", name, v)
		}
	}
	series(t, mfs, "tori_state_buffer_records", dto.MetricType_GAUGE, map[string]string{"capsule": "itest", "release": digest})
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "tori_") {
			t.Errorf("%s: every series of tori-run has the tori_ prefix", name)
		}
		for _, m := range mf.GetMetric() {
			if l := labelsOf(m); l["pid"] != "" || l["cpu"] != "" {
				t.Errorf("%s%v: no per-pid or per-CPU series", name, l)
			}
		}
	}

	// The Grafana dashboard uses only series the daemon serves.
	dash, err := os.ReadFile("../examples/grafana/tori-run.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\btori_[a-z_]+`).FindAllString(string(dash), -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if mfs[name] == nil && mfs[base] == nil && name != "tori_state_requests_total" && name != "tori_state_rate_limited_total" && !strings.HasPrefix(name, "tori_state_write_seconds") {
			t.Errorf("examples/grafana/tori-run.json uses %s, which /metrics does not serve", name)
		}
	}

	// A killed service is restarted, and the counter says so.
	if err := syscall.Kill(pids["a"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sid := map[string]string{"capsule": "itest", "service": "a"}
	for i := 0; ; i++ {
		if v := value(series(t, scrape(t, addr), "tori_service_restarts_total", dto.MetricType_COUNTER, sid)[0]); v == 1 {
			break
		} else if i == 300 {
			t.Fatalf("tori_service_restarts_total{service=a} = %v after the kill, want 1", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Errorf("%s still serves metrics after the daemon stopped", addr)
	}
	checkCapsuleLogLines(t, logf.Name(), digest, runtime.BuildSHAAbsent)
}

// checkCapsuleLogLines reads a JSON log: every line about a capsule (it
// names a capsule or a service) carries the capsule, its release digest
// and its build SHA, never an empty one.
func checkCapsuleLogLines(t *testing.T, file, release, buildSHA string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	about := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue // not a log record (a service's own output)
		}
		_, c := rec["capsule"]
		_, s := rec["service"]
		if !c && !s {
			continue
		}
		about++
		if rec["release"] != release || rec["build_sha"] != buildSHA {
			t.Errorf("log line about a capsule without release %s and build_sha %s: %s", release, buildSHA, line)
		}
	}
	if about < 3 {
		t.Errorf("only %d log lines about the capsule in %s", about, file)
	}
}
