package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/daemon"
)

// webApp writes an app folder of capsule "web" at version, whose service
// serves on a declared TCP socket at port, and returns the folder.
func webApp(t *testing.T, version, mode string, port int, update string) string {
	return webAppReady(t, version, mode, port, update, "{ notify: true, interval: 100ms, retries: 100 }")
}

func webAppReady(t *testing.T, version, mode string, port int, update, ready string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf(`name: web
version: "%s"
env: { VERSION: "%s" }
services:
  web:
    command: %sserve %s
    ready: %s
    stop_timeout: 10s
sockets:
  http: { listen: "tcp://127.0.0.1:%d", service: web }
%s`, version, version, wl, mode, ready, port, update)
	if err := os.WriteFile(filepath.Join(dir, "capsule.yml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testDaemon runs tori-run daemon as a child process (so that it can be
// SIGKILLed) and returns a client; stop ends it with SIGTERM.
type testDaemon struct {
	t      *testing.T
	o      runtime.Options
	socket string
	log    *os.File
	cmd    *exec.Cmd
	client *daemon.Client
}

func newTestDaemon(t *testing.T, o runtime.Options) *testDaemon {
	logf, err := os.Create(filepath.Join(t.TempDir(), "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := &testDaemon{t: t, o: o, socket: filepath.Join(o.RunDir, "tori.sock"), log: logf}
	d.client = daemon.NewClient(d.socket)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("daemon log:\n%s", b)
		}
	})
	return d
}

func (d *testDaemon) start() {
	d.cmd = exec.Command(os.Args[0], "workload", "daemon", d.o.Root, d.o.RunDir, d.socket)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
}

func (d *testDaemon) kill() {
	_ = d.cmd.Process.Kill()
	_ = d.cmd.Wait()
}

func (d *testDaemon) stop() {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		d.t.Errorf("daemon exit: %v", err)
	}
}

// status waits until cond holds for capsule web's status.
func (d *testDaemon) waitFor(what string, cond func(daemon.CapsuleStatus) bool) daemon.CapsuleStatus {
	d.t.Helper()
	var last []daemon.CapsuleStatus
	for i := 0; i < 600; i++ {
		st, err := d.client.Status(context.Background(), "web")
		if err == nil && len(st) == 1 && cond(st[0]) {
			return st[0]
		}
		last = st
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("web never %s: %+v", what, last)
	return daemon.CapsuleStatus{}
}

func serving(st daemon.CapsuleStatus) bool {
	return st.State == "running" && len(st.Services) == 1 && st.Services[0].State == "ready"
}

// hammer requests GET / on addr, each on a new connection, until stopped,
// and counts failures and the versions that answered.
type hammer struct {
	addr     string
	stopc    chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
	mu       sync.Mutex
	versions map[string]int
	errs     []string
}

func startHammer(addr string, workers int) *hammer {
	h := &hammer{addr: addr, stopc: make(chan struct{}), versions: map[string]int{}}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for range workers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stopc:
					return
				default:
				}
				resp, err := hc.Get("http://" + addr + "/")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						h.ok.Add(1)
						v, _, _ := strings.Cut(strings.TrimPrefix(string(b), "version="), " ")
						h.mu.Lock()
						h.versions[v]++
						h.mu.Unlock()
						continue
					}
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				h.fail.Add(1)
				h.mu.Lock()
				if len(h.errs) < 5 {
					h.errs = append(h.errs, time.Now().Format("15:04:05.000000 ")+err.Error())
				}
				h.mu.Unlock()
			}
		}()
	}
	return h
}

func (h *hammer) stop(t *testing.T) {
	t.Helper()
	close(h.stopc)
	h.wg.Wait()
	t.Logf("requests: %d ok, %d failed; versions %v", h.ok.Load(), h.fail.Load(), h.versions)
	if h.fail.Load() > 0 {
		t.Errorf("%d requests failed, first: %v", h.fail.Load(), h.errs)
	}
	if h.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func upgrade(t *testing.T, d *testDaemon, ref, kind string) daemon.UpgradeProgress {
	t.Helper()
	v, err := d.client.Upgrade(context.Background(), "web", ref, kind, func(p daemon.UpgradeProgress) {
		t.Logf("%s %s %-15s %s", p.Time.Format("15:04:05.000000"), kind, p.Phase, p.Message)
	})
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	t.Logf("%s verdict: ok=%v %s (switch %s)", kind, v.OK, v.Message, v.SwitchTime)
	return v
}

// TestUpgradeUnderLoad: a client hammering the capsule's declared socket
// through an upgrade and a rollback sees no failed request; the new release
// reads what the old one wrote to the state; status names the previous
// release; nothing is left once the daemon stops.
func TestUpgradeUnderLoad(t *testing.T) {
	requireRoot(t)
	o := options(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	quick := "update: { min_healthy_time: 300ms, healthy_deadline: 30s }\n"
	v1 := installFolder(t, o, webApp(t, "1.0.0", "ok", port, quick))
	v2 := installFolder(t, o, webApp(t, "2.0.0", "ok", port, quick))
	if _, _, err := daemon.Enable(o.Root, v1); err != nil {
		t.Fatal(err)
	}
	d := newTestDaemon(t, o)
	d.start()
	d.waitFor("served", serving)
	if code, body := get(t, "http://"+addr+"/"); code != 200 || !strings.HasPrefix(body, "version=1.0.0") {
		t.Fatalf("before: %d %q", code, body)
	}

	h := startHammer(addr, 4)
	time.Sleep(200 * time.Millisecond)
	if v := upgrade(t, d, v2, daemon.KindUpgrade); !v.OK {
		t.Fatalf("upgrade failed: %s", v.Message)
	}
	time.Sleep(200 * time.Millisecond)
	h.stop(t)
	if h.versions["1.0.0"] == 0 || h.versions["2.0.0"] == 0 {
		t.Errorf("both releases should have answered during the run: %v", h.versions)
	}
	if code, body := get(t, "http://"+addr+"/"); code != 200 || !strings.HasPrefix(body, "version=2.0.0") {
		t.Fatalf("after: %d %q", code, body)
	}
	// The new release reads what the old one wrote.
	if code, body := get(t, "http://"+addr+"/state?key=seen/1.0.0"); code != 200 || body != "sha256:"+v1 && body != v1 {
		t.Errorf("state written by 1.0.0, read by 2.0.0: %d %q", code, body)
	}
	st := d.waitFor("at 2.0.0", serving)
	if st.Release != v2 || st.Previous != v1 || st.Upgrade != nil {
		t.Errorf("status after the upgrade: release %s previous %s upgrade %+v", st.Release, st.Previous, st.Upgrade)
	}
	if dirs, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*")); len(dirs) != 1 {
		t.Errorf("instances after the switch: %v", dirs)
	}

	h = startHammer(addr, 4)
	if v := upgrade(t, d, "", daemon.KindRollback); !v.OK {
		t.Fatalf("rollback failed: %s", v.Message)
	}
	h.stop(t)
	if code, body := get(t, "http://"+addr+"/"); code != 200 || !strings.HasPrefix(body, "version=1.0.0") {
		t.Fatalf("after the rollback: %d %q", code, body)
	}
	st = d.waitFor("back at 1.0.0", serving)
	if st.Release != v1 || st.Previous != v2 {
		t.Errorf("status after the rollback: release %s previous %s", st.Release, st.Previous)
	}
	d.stop()
	assertNothingLeft(t, o)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the socket is still open after the daemon stopped")
	}
}

// TestUpgradeRollsBackByItself: a release that never gets ready and one
// that crashes are stopped, with the old release serving throughout; a
// second upgrade while one is under way is refused.
func TestUpgradeRollsBackByItself(t *testing.T) {
	requireRoot(t)
	o := options(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	v1 := installFolder(t, o, webApp(t, "1.0.0", "ok", port, ""))
	never := installFolder(t, o, webApp(t, "2.0.0", "never-ready", port, "update: { min_healthy_time: 0s, healthy_deadline: 2s }\n"))
	crash := installFolder(t, o, webApp(t, "2.0.1", "crash", port, ""))
	if _, _, err := daemon.Enable(o.Root, v1); err != nil {
		t.Fatal(err)
	}
	d := newTestDaemon(t, o)
	d.start()
	d.waitFor("served", serving)
	h := startHammer(addr, 2)

	done := make(chan daemon.UpgradeProgress, 1)
	go func() {
		v, _ := d.client.Upgrade(context.Background(), "web", never, daemon.KindUpgrade, func(daemon.UpgradeProgress) {})
		done <- v
	}()
	d.waitFor("upgrading", func(st daemon.CapsuleStatus) bool { return st.Upgrade != nil })
	if _, err := d.client.Upgrade(context.Background(), "web", crash, daemon.KindUpgrade, func(daemon.UpgradeProgress) {}); err == nil || !strings.Contains(err.Error(), "already under way") {
		t.Errorf("a second upgrade at once: %v", err)
	}
	if v := <-done; v.OK || !strings.Contains(v.Message, "not ready within healthy_deadline") {
		t.Errorf("never-ready release: ok=%v %q", v.OK, v.Message)
	}
	if v := upgrade(t, d, crash, daemon.KindUpgrade); v.OK || !strings.Contains(v.Message, "crashed") {
		t.Errorf("crashing release: ok=%v %q", v.OK, v.Message)
	}
	h.stop(t)
	if h.versions["2.0.0"]+h.versions["2.0.1"] != 0 {
		t.Errorf("a failed release answered: %v", h.versions)
	}
	st := d.waitFor("still at 1.0.0", serving)
	if st.Release != v1 || st.Previous != "" {
		t.Errorf("status: release %s previous %s", st.Release, st.Previous)
	}
	if dirs, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*")); len(dirs) != 1 {
		t.Errorf("instances after the rollbacks: %v", dirs)
	}
	d.stop()
	assertNothingLeft(t, o)
}

// TestUpgradeDaemonKilled: a daemon SIGKILLed at each phase of an upgrade;
// the next one finishes or rolls it back as the recorded phase says,
// leaving exactly one serving release, the socket never closed (a client
// hammering it sees no failure), and nothing leaked once it stops.
func TestUpgradeDaemonKilled(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		phase            daemon.Phase
		oldMode, newMode string
		update           string
		keepNew          bool
	}{
		{daemon.PhaseWaitingReady, "ok", "never-ready", "update: { min_healthy_time: 0s, healthy_deadline: 60s }\n", false},
		{daemon.PhaseWaitingHealthy, "ok", "ok", "update: { min_healthy_time: 60s, healthy_deadline: 120s }\n", false},
		{daemon.PhaseSwitching, "slow-stop", "ok", "update: { min_healthy_time: 0s, healthy_deadline: 60s }\n", true},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			o := options(t)
			port := freePort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			v1 := installFolder(t, o, webApp(t, "1.0.0", tc.oldMode, port, ""))
			v2 := installFolder(t, o, webApp(t, "2.0.0", tc.newMode, port, tc.update))
			if _, _, err := daemon.Enable(o.Root, v1); err != nil {
				t.Fatal(err)
			}
			d := newTestDaemon(t, o)
			d.start()
			d.waitFor("served", serving)
			h := startHammer(addr, 2)
			go func() {
				_, _ = d.client.Upgrade(context.Background(), "web", v2, daemon.KindUpgrade, func(daemon.UpgradeProgress) {})
			}()
			d.waitFor("in phase "+string(tc.phase), func(st daemon.CapsuleStatus) bool {
				return st.Upgrade != nil && st.Upgrade.Phase == tc.phase
			})
			d.kill()
			time.Sleep(200 * time.Millisecond) // served by the capsules alone
			d.start()
			want := v1
			if tc.keepNew {
				want = v2
			}
			st := d.waitFor("serving one release", func(st daemon.CapsuleStatus) bool { return serving(st) && st.Release == want })
			time.Sleep(200 * time.Millisecond)
			h.stop(t)
			if st.Upgrade != nil {
				t.Errorf("an upgrade still shows: %+v", st.Upgrade)
			}
			if dirs, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*")); len(dirs) != 1 {
				t.Errorf("instances after recovery: %v", dirs)
			}
			if _, err := os.Stat(filepath.Join(o.Root, "upgrades", "web.json")); err == nil {
				t.Error("the upgrade record is still there")
			}
			wantVersion := "version=1.0.0"
			if tc.keepNew {
				wantVersion = "version=2.0.0"
				if st.Previous != v1 {
					t.Errorf("previous = %s, want %s", st.Previous, v1)
				}
			}
			if code, body := get(t, "http://"+addr+"/"); code != 200 || !strings.HasPrefix(body, wantVersion) {
				t.Errorf("after recovery: %d %q, want %s", code, body, wantVersion)
			}
			d.stop()
			assertNothingLeft(t, o)
		})
	}
}

// TestUpgradeProbeOnSharedSocket: a new release whose readiness is an http
// probe of the shared socket's port, and which never accepts, is not
// declared ready by the old release's answers: while it is probed the old
// release is frozen, so the probe reaches the new one alone. It rolls back,
// and the clients (whose connections wait in the queue meanwhile) see no
// failure.
func TestUpgradeProbeOnSharedSocket(t *testing.T) {
	requireRoot(t)
	o := options(t)
	port := freePort(t)
	ready := fmt.Sprintf("{ http: \"http://127.0.0.1:%d/\", interval: 200ms, timeout: 300ms, retries: 100 }", port)
	v1 := installFolder(t, o, webAppReady(t, "1.0.0", "ok", port, "", ready))
	stuck := installFolder(t, o, webAppReady(t, "2.0.0", "never-ready", port, "update: { min_healthy_time: 0s, healthy_deadline: 2s }\n", ready))
	if _, _, err := daemon.Enable(o.Root, v1); err != nil {
		t.Fatal(err)
	}
	d := newTestDaemon(t, o)
	d.start()
	d.waitFor("served", serving)
	h := startHammer(fmt.Sprintf("127.0.0.1:%d", port), 2)
	if v := upgrade(t, d, stuck, daemon.KindUpgrade); v.OK || !strings.Contains(v.Message, "not ready within healthy_deadline") {
		t.Errorf("a release that never accepts, probed on the shared port: ok=%v %q", v.OK, v.Message)
	}
	h.stop(t)
	if st := d.waitFor("still at 1.0.0", serving); st.Release != v1 {
		t.Errorf("release %s", st.Release)
	}
	d.stop()
	assertNothingLeft(t, o)
}
