//go:build linux

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runContainerMode runs `tori-run run --in-container DIR` as a plain child
// (not PID 1: tori-run makes itself a subreaper) with the state under dir.
func runContainerMode(t *testing.T, dir, manifest string, files ...string) (int, string) {
	t.Helper()
	app := filepath.Join(dir, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(files); i += 2 {
		if err := os.WriteFile(filepath.Join(app, files[i]), []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(app, "capsule.yml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "--root", filepath.Join(dir, "root"), "--log-format", "json", "run", "--in-container", app)
	cmd.Env = append(os.Environ(), "TORI_STATE_ROOT="+filepath.Join(dir, "state"), "TORI_STATE_SOCKET="+filepath.Join(dir, "run", "state.sock"),
		"TORI_STATUS_FILE="+filepath.Join(dir, "run", "status.json"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// TestContainerModeReapsAndServesState: container mode runs the services
// as its children, serves the state proxy (the caller is named by its
// process ancestry), reaps the orphan a service leaves and kills what is
// left once every service is done, and exits 0 when all exited 0.
func TestContainerModeReapsAndServesState(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	dir := t.TempDir()
	put := `import http.client, socket, os
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(os.environ['TORI_STATE_SOCKET'])
c = C('s')
c.request('PUT', '/v1/kv/hello', b'world'); r = c.getresponse(); r.read(); assert r.status == 204, r.status
c.request('GET', '/v1/kv/hello'); r = c.getresponse(); assert r.read() == b'world'
print('state ok')
`
	manifest := "name: cmode\nversion: \"1.0.0\"\nservices:\n" +
		"  orphaner:\n    command: sh -c \"setsid sleep 300 & echo $! > " + dir + "/orphan.pid\"\n    restart: never\n" +
		"  putter:\n    command: python3 put.py\n    restart: never\n"
	code, out := runContainerMode(t, dir, manifest, "put.py", put)
	if code != 0 {
		t.Fatalf("exit status %d, want 0:\n%s", code, out)
	}
	if !strings.Contains(out, "state ok") {
		t.Errorf("the putter did not get its value back:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "orphan.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("orphan.pid: %q", b)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the orphan %d a service left still exists after container mode ended (kill 0: %v)", pid, err)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if p, _ := filepath.Glob(filepath.Join(dir, "state", "cmode", "data", "*.parquet")); len(p) == 0 {
		t.Errorf("no Parquet file under TORI_STATE_ROOT after the store closed")
	}
	if !strings.Contains(out, `"service":"putter"`) {
		t.Errorf("no log line names the putter service:\n%s", out)
	}
}

// TestContainerModeExitsWithTheCapsulesResult: a service that fails makes
// container mode exit 1, with the summary naming it.
func TestContainerModeExitsWithTheCapsulesResult(t *testing.T) {
	dir := t.TempDir()
	code, out := runContainerMode(t, dir, "name: cfail\nversion: \"1.0.0\"\nservices:\n  bad:\n    command: sh -c \"exit 3\"\n    restart: never\n  good:\n    command: \"true\"\n    restart: never\n")
	if code != 1 {
		t.Fatalf("exit status %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, "bad: failed") || !strings.Contains(out, "exited with status 3") {
		t.Errorf("the summary does not say bad failed with status 3:\n%s", out)
	}
}

// TestContainerModeForwardsSignalsAndReportsReady: SIGHUP reaches the
// services, container-ready says ready once they are, and SIGTERM stops
// them (exit 0: stopped on request).
func TestContainerModeForwardsSignalsAndReportsReady(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest := "name: csig\nversion: \"1.0.0\"\nservices:\n  hup:\n    command: sh -c 'trap \"echo hup >> " + dir + "/hup\" HUP; trap \"exit 0\" TERM; while :; do sleep 0.05; done'\n    ready:\n      exec: \"true\"\n      interval: 100ms\n"
	if err := os.WriteFile(filepath.Join(app, "capsule.yml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, "run", "status.json")
	env := append(os.Environ(), "TORI_STATE_ROOT="+filepath.Join(dir, "state"), "TORI_STATE_SOCKET="+filepath.Join(dir, "run", "state.sock"), "TORI_STATUS_FILE="+status)
	cmd := exec.Command(binary, "--root", filepath.Join(dir, "root"), "run", "--in-container", app)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ready := func() bool {
		c := exec.Command(binary, "container-ready")
		c.Env = env
		return c.Run() == nil
	}
	waitFor(t, "container-ready", ready)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forwarded SIGHUP", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "hup"))
		return strings.Contains(string(b), "hup")
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0:\n%s", err, out.String())
	}
	if ready() {
		t.Errorf("container-ready says ready after the capsule stopped")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s within 10 s", what)
}

// TestContainerModeRunsAsTheManifestsUser: user: runs the services as that
// user, with no supplementary group of root's, and they can still reach the
// state proxy.
func TestContainerModeRunsAsTheManifestsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change user")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	put := "import http.client, socket, os\nclass C(http.client.HTTPConnection):\n    def connect(self):\n        self.sock = socket.socket(socket.AF_UNIX)\n        self.sock.connect(os.environ['TORI_STATE_SOCKET'])\nc = C('s')\nc.request('PUT', '/v1/kv/who', str(os.getuid()).encode()); r = c.getresponse(); r.read()\nprint('uid', os.getuid(), 'groups', os.getgroups(), 'put', r.status)\n"
	code, out := runContainerMode(t, dir, "name: cuser\nversion: \"1.0.0\"\nuser: \"65534:65534\"\nservices:\n  who:\n    command: python3 who.py\n    restart: never\n", "who.py", put)
	if code != 0 {
		t.Fatalf("exit status %d:\n%s", code, out)
	}
	if !strings.Contains(out, "uid 65534 groups [] put 204") {
		t.Errorf("want the service as uid 65534 with no supplementary groups, its PUT accepted:\n%s", out)
	}
}
