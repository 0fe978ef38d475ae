//go:build linux

package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The seed's flow, as a new user runs it on the seed's own files: an app
// zipped on Windows (no Unix modes), the seed's manifest verbatim and its
// slice; capsbuild, capsdeploy install, validate, run under the slice with
// the seed's volume, state read back, stop, gc; nothing left behind.

// seedSlice is the seed's slice file (its "Apply Resource Limits" step).
const seedSlice = "[Slice]\nCPUQuota=80%\nMemoryMax=16G\nIOWeight=100\n"

// seedZip writes the seed's app layout as a Windows tool zips it: creator
// FAT, no Unix modes, folder entries of their own.
func seedZip(t *testing.T, file string) {
	t.Helper()
	files := map[string]string{
		"python/core/start_true_metacognition.py": repo + "/examples/metacog/python/core/start_true_metacognition.py",
		"python/core/tori_state.py":               repo + "/examples/metacog/python/core/tori_state.py",
		"requirements_nodb.txt":                   repo + "/examples/metacog/requirements_nodb.txt",
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, d := range []string{"python/", "python/core/"} {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: d, CreatorVersion: 20, ExternalAttrs: 0x10}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		b, err := os.ReadFile(files[n])
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, CreatorVersion: 20, ExternalAttrs: 0x20,
			Modified: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// seedEnv runs the binary as tool (tori-run, capsbuild, capsdeploy) in dir
// with the roots of one flow.
type seedEnv struct {
	t               *testing.T
	dir, bins       string
	root, run, stat string
}

func (e *seedEnv) env() []string {
	return append(os.Environ(), "TORI_ROOT="+e.root, "TORI_RUN_DIR="+e.run, "TORI_STATE_ROOT="+e.stat)
}

func (e *seedEnv) cmd(tool string, args ...string) *exec.Cmd {
	c := exec.Command(filepath.Join(e.bins, tool), args...)
	c.Dir, c.Env = e.dir, e.env()
	return c
}

// must runs tool and fails the test unless it exits 0.
func (e *seedEnv) must(tool string, args ...string) string {
	e.t.Helper()
	var out bytes.Buffer
	c := e.cmd(tool, args...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		e.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestSeedFlowEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a capsule (mounts, namespaces, cgroups)")
	}
	if testing.Short() {
		t.Skip("-short: runs a capsule end to end")
	}
	e := &seedEnv{t: t, dir: t.TempDir(), bins: t.TempDir(), root: t.TempDir(), run: t.TempDir(), stat: t.TempDir()}
	for _, tool := range []string{"tori-run", "capsbuild", "capsdeploy"} {
		if err := os.Symlink(binary, filepath.Join(e.bins, tool)); err != nil {
			t.Fatal(err)
		}
	}
	// The seed binds /opt/tori/state:/data:rw; make it if this host has
	// none, and remove what was made. The operator allows it below with
	// --allow-volume.
	if _, err := os.Stat("/opt/tori/state"); errors.Is(err, os.ErrNotExist) {
		made := "/opt/tori/state"
		if _, err := os.Stat("/opt/tori"); errors.Is(err, os.ErrNotExist) {
			made = "/opt/tori"
		}
		if err := os.MkdirAll("/opt/tori/state", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(made) })
	}
	manifest, err := os.ReadFile(repo + "/specs/testdata/good/seed-capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"capsule.yml": manifest, "tori-metacog.slice": []byte(seedSlice)} {
		if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seedZip(t, filepath.Join(e.dir, "tori_nodb_complete_v2.zip"))

	// Build the capsule (the seed's command, verbatim but for the glob).
	out := e.must("capsbuild", "--from-zip", "tori_nodb_complete_v2.zip", "--manifest", "capsule.yml", "--output", "capsule-metacog-XYZ.tar.gz")
	digest := regexp.MustCompile(`digest\s+([0-9a-f]{64})`).FindStringSubmatch(out)
	if digest == nil || !strings.Contains(out, "build SHA none") {
		t.Fatalf("capsbuild said:\n%s\nwant a digest and build SHA none (a zip has no git)", out)
	}
	// Deploy it.
	e.must("capsdeploy", "install", "capsule-metacog-XYZ.tar.gz")
	// Validate the archive, the installed release, and the manifest
	// against the zip, as build took them.
	e.must("tori-run", "validate", "capsule-metacog-XYZ.tar.gz")
	e.must("tori-run", "validate", filepath.Join(e.root, "releases", digest[1]))
	e.must("tori-run", "validate", "--manifest", "capsule.yml", "--slice", "tori-metacog.slice", "tori_nodb_complete_v2.zip")

	// Run it under the seed's slice, with metrics.
	addr := freeTCP(t)
	e.must("tori-run", "validate", "--host", "--allow-volume", "/opt/tori/state", "--slice", "tori-metacog.slice", filepath.Join(e.root, "releases", digest[1]))
	run := e.cmd("tori-run", "run", "tori-metacognitive", "--slice", "tori-metacog.slice", "--allow-volume", "/opt/tori/state", "--metrics-addr", addr, "--log-format", "json")
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = run.Process.Signal(syscall.SIGTERM)
			_ = run.Wait()
		}
		if t.Failed() {
			t.Logf("run's log:\n%s", stderr.String())
		}
	}()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	// Both services run and the metacog one records observations.
	deadline := time.After(60 * time.Second)
	for seen := map[string]bool{}; !seen["observer"] || !seen["recorded"]; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("run ended early:\n%s", stderr.String())
			}
			if strings.Contains(l, "tori-observer") {
				seen["observer"] = true
			}
			if strings.Contains(l, "tori-metacog") && strings.Contains(l, "observation") {
				seen["recorded"] = true
			}
		case <-deadline:
			t.Fatal("the seed's services did not start and record within 60 s")
		}
	}
	// State read back while it runs (through the admin socket).
	keys := ""
	for i := 0; i < 100 && !strings.Contains(keys, "observations/"); i++ {
		keys = e.must("tori-run", "state", "ls", "tori-metacognitive")
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(keys, "observations/0") {
		t.Fatalf("state ls shows no observations:\n%s", keys)
	}
	// Metrics name the release and its (absent) build SHA.
	mfs := scrapeText(t, addr)
	found := false
	for _, m := range mfs["tori_capsule_info"].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		found = found || l["capsule"] == "tori-metacognitive" && l["release"] == digest[1] && l["build_sha"] == "none" && l["version"] == "2.1.0"
	}
	if !found {
		t.Errorf("tori_capsule_info has no series for the seed's release: %v", mfs["tori_capsule_info"])
	}

	// Stop: SIGTERM, every service stops cleanly, exit 0.
	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	killed = true
	if err := run.Wait(); err != nil {
		t.Fatalf("run exit: %v\n%s", err, stderr.String())
	}
	// The slice's limits were applied, and the log names the release.
	if !strings.Contains(stderr.String(), `"release":"`+digest[1]+`"`) || !strings.Contains(stderr.String(), `"build_sha":"none"`) {
		t.Errorf("run's log lines do not name release %s with build_sha none", digest[1])
	}
	// The state outlives the instance.
	if got := e.must("tori-run", "state", "get", "tori-metacognitive", strings.Fields(keys)[0]); !strings.Contains(got, "novelty") {
		t.Errorf("state get after stop: %q", got)
	}
	// Under the daemon (the seed's `systemctl start tori@XYZ`): upgrade to
	// a 2.1.1 built from the same zip, then roll back to 2.1.0; the state
	// carries over both ways.
	previous := seedUpgradeRollback(t, e, digest[1], manifest)

	// gc removes the releases nothing references any more. disable dropped
	// the capsule's refs, the previous stable release (refs/NAME/previous,
	// rollback's target) included, so gc removes both 2.1.0 and 2.1.1.
	e.must("tori-run", "gc")
	if list := e.must("tori-run", "list"); strings.Contains(list, digest[1][:12]) || strings.Contains(list, previous[:12]) {
		t.Errorf("after disable and gc, no release should be left:\n%s", list)
	}
	if m, _ := filepath.Glob(filepath.Join(e.root, "refs", "*")); len(m) > 0 {
		t.Errorf("refs left after disable: %v", m)
	}
	// Nothing left: no mounts under the roots, no instance, no container
	// state, no cgroup.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, d := range []string{e.root, e.run} {
		if strings.Contains(string(mounts), d) {
			t.Errorf("mounts left under %s", d)
		}
	}
	for _, g := range []string{filepath.Join(e.root, "instances", "*"), filepath.Join(e.run, "containers", "*"), filepath.Join(e.root, "releases", "[0-9a-f]*")} {
		if m, _ := filepath.Glob(g); len(m) > 0 {
			t.Errorf("left behind: %v", m)
		}
	}
	if left := capsuleCgroups(t); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

// capsuleCgroups lists the tori/tori-metacognitive-* cgroups under ours.
func capsuleCgroups(t *testing.T) []string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrl := strings.TrimPrefix(parts[1], "name=")
		base := filepath.Join("/sys/fs/cgroup", ctrl)
		if ctrl == "" {
			base = "/sys/fs/cgroup/unified"
		}
		m, _ := filepath.Glob(filepath.Join(base, parts[2], "tori", "tori-metacognitive-*"))
		left = append(left, m...)
	}
	return left
}

func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func scrapeText(t *testing.T, addr string) map[string]*dtoFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses /metrics: %v\n%s", err, body)
	}
	return mfs
}

type dtoFamily = dto.MetricFamily

// TestDaemonMetricsFlag: `tori-run daemon --metrics-addr` serves /metrics
// (the flag once got lost on its way to the daemon).
func TestDaemonMetricsFlag(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon's control socket is root only")
	}
	e := &seedEnv{t: t, dir: t.TempDir(), bins: filepath.Dir(binary), root: t.TempDir(), run: t.TempDir(), stat: t.TempDir()}
	addr := freeTCP(t)
	d := e.cmd("tori-run", "daemon", "--socket", filepath.Join(e.run, "tori.sock"), "--metrics-addr", addr)
	var log bytes.Buffer
	d.Stderr = &log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = d.Process.Signal(syscall.SIGTERM)
		if err := d.Wait(); err != nil {
			t.Errorf("daemon exit: %v\n%s", err, log.String())
		}
	}()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i == 100 {
			t.Fatalf("daemon --metrics-addr %s serves nothing: %v\n%s", addr, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if mfs := scrapeText(t, addr); mfs["tori_build_info"] == nil {
		t.Errorf("no tori_build_info on %s", addr)
	}
}

// seedUpgradeRollback runs the seed's capsule under the daemon, upgrades it
// to a 2.1.1 built from the same zip and rolls back, reading the state
// after each step; it leaves the daemon stopped and the capsule disabled.
func seedUpgradeRollback(t *testing.T, e *seedEnv, digest210 string, manifest []byte) (digest211 string) {
	t.Helper()
	sock := filepath.Join(e.run, "tori.sock")
	m211 := strings.Replace(string(manifest), `version: "2.1.0"`, `version: "2.1.1"`, 1) +
		"update: { min_healthy_time: 1s, healthy_deadline: 1m }\n"
	if err := os.WriteFile(filepath.Join(e.dir, "capsule-2.1.1.yml"), []byte(m211), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.must("capsbuild", "--from-zip", "tori_nodb_complete_v2.zip", "--manifest", "capsule-2.1.1.yml", "--output", "capsule-metacog-211.tar.gz")
	d211 := regexp.MustCompile(`digest\s+([0-9a-f]{64})`).FindStringSubmatch(out)
	if d211 == nil {
		t.Fatalf("capsbuild 2.1.1: %s", out)
	}
	daemon := e.cmd("tori-run", "daemon", "--socket", sock, "--allow-volume", "/opt/tori/state", "--log-format", "json")
	var log bytes.Buffer
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = daemon.Process.Signal(syscall.SIGTERM)
			if err := daemon.Wait(); err != nil {
				t.Errorf("daemon exit: %v", err)
			}
		}
	}
	defer func() {
		stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	}()
	for i := 0; ; i++ {
		if err := e.cmd("tori-run", "status", "--socket", sock).Run(); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("the daemon does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.must("tori-run", "enable", "tori-metacognitive", "--socket", sock, "--allow-volume", "/opt/tori/state")
	release := func() string {
		out := e.must("tori-run", "status", "tori-metacognitive", "--socket", sock, "--json")
		return regexp.MustCompile(`"release":\s*"([0-9a-f]{64})"`).FindStringSubmatch(out)[1]
	}
	count := func() int { return len(strings.Fields(e.must("tori-run", "state", "ls", "tori-metacognitive"))) }
	before := count()
	e.must("tori-run", "upgrade", "tori-metacognitive", "capsule-metacog-211.tar.gz", "--socket", sock)
	if got := release(); got != d211[1] {
		t.Fatalf("after upgrade the daemon runs %s, want 2.1.1's %s", got, d211[1])
	}
	if n := count(); n < before {
		t.Errorf("2.1.1 sees %d observations, 2.1.0 left %d", n, before)
	}
	e.must("tori-run", "rollback", "tori-metacognitive", "--socket", sock)
	if got := release(); got != digest210 {
		t.Fatalf("after rollback the daemon runs %s, want 2.1.0's %s", got, digest210)
	}
	e.must("tori-run", "disable", "tori-metacognitive", "--socket", sock)
	stop()
	return d211[1]
}
