package integration

// The walls between a capsule's services and tori-run itself (issue 9, item
// 1 and 6), climbed from inside a real capsule: the init's channel, the
// files tori-run writes, the init's memory and fds, the host's cgroup
// folders, and the state proxy's idea of who is calling. Each workload
// prints one line per attempt, "<what>: refused (<error>)" or
// "<what>: ALLOWED <how>", and the tests fail on any ALLOWED.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/state/client"
	"github.com/tori-run/tori-run/supervisor"
)

// confineWorkload runs one attack inside a capsule: "workload confine NAME ARGS".
func confineWorkload(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "confine: which attack?")
		return 2
	}
	switch args[0] {
	case "init-socket":
		attackInitSocket()
	case "plant":
		attackPlant(args[1])
	case "init-process":
		attackInitProcess()
	case "state":
		return stateAsService(args[1])
	case "state-passed":
		return stateOnPassedConn(args[1])
	case "connect-pass": // a child of state-passed: connect, make one request, hand the connection over on fd 3, exit
		c, err := net.Dial("unix", os.Getenv("TORI_STATE_SOCKET"))
		if err != nil {
			fmt.Println("connect:", err)
			return 1
		}
		// An answer proves the proxy accepted (and identified) the connection.
		fmt.Fprintf(c, "GET /v1/kv/none HTTP/1.1\r\nHost: state\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			fmt.Println("first request:", err)
			return 1
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		f, _ := c.(*net.UnixConn).File()
		return boolExit(unix.Sendmsg(3, []byte{1}, unix.UnixRights(int(f.Fd())), nil, 0) == nil)
	default:
		fmt.Fprintf(os.Stderr, "unknown attack %q\n", args[0])
		return 2
	}
	time.Sleep(time.Hour)
	return 0
}

func boolExit(ok bool) int {
	if ok {
		return 0
	}
	return 1
}

// report prints the outcome of one attempt: err == nil means it worked.
func report(what string, err error, how string) {
	if err != nil {
		fmt.Printf("%s: refused (%v)\n", what, err)
	} else {
		fmt.Printf("%s: ALLOWED %s\n", what, how)
	}
}

// attackInitSocket looks for the init's socket where it used to be, tries
// to take its place, and listens wherever it can as an impostor, reporting
// any connection it gets (the host would be sending it fds).
func attackInitSocket() {
	_, err := os.Stat("/.tori/run")
	report("see the init's socket folder", err, "/.tori/run exists")
	for _, dir := range []string{"/.tori/run", "/.tori", "/.tori/notify", "/run/tori"} {
		p := filepath.Join(dir, "init.sock")
		_ = os.Remove(p)
		l, err := net.Listen("unixpacket", p)
		report("listen at "+p, err, "an impostor listens")
		if err == nil {
			go impostor(l)
		}
	}
	// Through the init's fds: the listening socket is one of them. (Their
	// numbers can be listed; opening one needs ptrace access.)
	ents, _ := os.ReadDir("/proc/1/fd")
	var opened []string
	last := errors.New("no fd")
	for _, e := range ents {
		f, err := os.Open("/proc/1/fd/" + e.Name())
		if err != nil {
			last = err
			continue
		}
		opened = append(opened, e.Name())
		f.Close()
	}
	if len(opened) > 0 {
		last = nil
	}
	report("open the init's fds through /proc/1/fd", last, strings.Join(opened, " "))
	fmt.Println("impostor ready")
}

func impostor(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Printf("impostor at %s: ALLOWED a connection from the host\n", l.Addr())
		c.Close()
	}
}

// attackPlant plants symlinks to victim (a host path) wherever tori-run
// writes for this service, then exits 1 so the supervisor writes again
// (its state file, a new notify socket). It first says READY=1: the notify
// socket must be reachable on its read-only mount.
func attackPlant(victim string) {
	ns := os.Getenv("NOTIFY_SOCKET")
	c, err := net.Dial("unixgram", ns)
	if err == nil {
		_, err = c.Write([]byte("READY=1\nSTATUS=planting"))
		c.Close()
	}
	fmt.Printf("notify ready: %v\n", err)
	// Stay alive a moment: a datagram still queued when its sender's exit is
	// seen is dropped (as systemd drops it without sd_notify_barrier), and
	// under load the exit can win. The wall tested here is the planting.
	time.Sleep(500 * time.Millisecond)
	name := os.Getenv("TORI_SERVICE")
	for _, p := range []string{
		ns, // the notify socket, remade at each start
		filepath.Join(filepath.Dir(ns), "x.notify"),         // a new file in the notify folder
		"/.tori/run/supervisor/" + name + ".state.json",     // where the state file used to be
		"/.tori/run/supervisor/" + name + ".state.json.tmp", // and its temporary file
		"/run/tori/state.sock",                              // the state proxy's socket, remade by a new daemon
		"/run/tori/x",
	} {
		_ = os.Remove(p)
		report("plant "+p, os.Symlink(victim, p), "a symlink to "+victim)
	}
	report("remove "+ns, os.Remove(ns), "the notify socket is gone")
	fmt.Println("planted")
	os.Exit(1)
}

// attackInitProcess tries to reach into PID 1 (the init): it holds the
// other services' output pipes and the host's channel.
func attackInitProcess() {
	err := unix.PtraceAttach(1)
	if err == nil {
		_ = unix.PtraceDetach(1)
	}
	report("ptrace PID 1", err, "attached")
	f, err := os.Open("/proc/1/mem")
	if err == nil {
		f.Close()
	}
	report("open /proc/1/mem", err, "opened")
	_, err = os.ReadFile("/proc/1/environ")
	report("read /proc/1/environ", err, "read")
	_, err = os.Readlink("/proc/1/fd/0")
	report("readlink /proc/1/fd/0", err, "read")
	buf := make([]byte, 8)
	_, err = unix.ProcessVMReadv(1, []unix.Iovec{{Base: &buf[0], Len: 8}}, []unix.RemoteIovec{{Base: 0x400000, Len: 8}}, 0)
	if errors.Is(err, unix.EFAULT) {
		err = nil // permitted; the address was just wrong
	}
	report("process_vm_readv PID 1", err, "permitted")
	pidfd, err := unix.PidfdOpen(1, 0)
	if err != nil {
		report("pidfd_getfd PID 1", err, "")
	} else {
		var got []string
		var last error
		for fd := 0; fd < 64; fd++ {
			nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
			if err == nil {
				l, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", nfd))
				got = append(got, fmt.Sprintf("%d=%s", fd, l))
				unix.Close(nfd)
			} else if !errors.Is(err, unix.EBADF) {
				last = err
			}
		}
		if len(got) == 0 && last == nil {
			last = errors.New("no fd found")
		}
		if len(got) > 0 {
			last = nil
		}
		report("pidfd_getfd PID 1", last, strings.Join(got, " "))
	}
	fmt.Println("done")
}

// stateAsService writes key through the state proxy.
func stateAsService(key string) int {
	cl := client.New(os.Getenv("TORI_STATE_SOCKET"), client.Options{MaxRetries: -1})
	defer cl.Close()
	err := cl.Put(context.Background(), key, []byte(os.Getenv("TORI_SERVICE")))
	fmt.Printf("put %s: %v\n", key, err)
	return boolExit(err == nil)
}

// stateOnPassedConn writes key on a connection made by a child that has
// exited since (its pid free to be reused): it counts as this service (the
// child's), the service that opened it.
func stateOnPassedConn(key string) int {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("socketpair:", err)
		return 1
	}
	child := os.NewFile(uintptr(fds[1]), "child")
	cmd := exec.Command("/.tori/tori-run", "workload", "confine", "connect-pass")
	cmd.ExtraFiles, cmd.Stdout, cmd.Stderr = []*os.File{child}, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("connect-pass:", err)
		return 1
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fds[0], buf, oob, 0)
	if err != nil {
		fmt.Println("recvmsg:", err)
		return 1
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	got, _ := unix.ParseUnixRights(&msgs[0])
	c, err := net.FileConn(os.NewFile(uintptr(got[0]), "passed"))
	if err != nil {
		fmt.Println("conn:", err)
		return 1
	}
	fmt.Fprintf(c, "PUT /v1/kv/%s HTTP/1.1\r\nHost: state\r\nContent-Length: 1\r\n\r\nv", key)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		fmt.Println("response:", err)
		return 1
	}
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("passed put: %d %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
	return 0
}

// collect reads lines until one equal to last, failing on any ALLOWED.
func collect(t *testing.T, lines <-chan string, last string) []string {
	t.Helper()
	var out []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before %q; got:\n%s", last, strings.Join(out, "\n"))
			}
			out = append(out, l)
			if strings.Contains(l, "ALLOWED") {
				t.Errorf("wall breached: %s", l)
			}
			if l == last {
				return out
			}
		case <-timeout:
			t.Fatalf("no %q; got:\n%s", last, strings.Join(out, "\n"))
		}
	}
}

// TestInitSocketCannotBeReplaced: a service cannot find the init's socket,
// take its place or listen where the host would dial; the host's next start
// reaches the real init, and no impostor hears from it.
func TestInitSocketCannotBeReplaced(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  attacker:\n    command: "+wl+"confine init-socket\n  b:\n    command: "+wl+"sleep 60\n"), options(t))
	_, lines := service(t, inst, "attacker")
	out := collect(t, lines, "impostor ready")
	t.Logf("attacker:\n%s", strings.Join(out, "\n"))
	b, _ := service(t, inst, "b")
	if err := b.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ex := wait(t, b); ex.Signal != unix.SIGKILL {
		t.Errorf("b ended %s: it was not started by the real init", ex.String())
	}
	// Anything the impostor heard came before b's start answered.
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, "ALLOWED") {
				t.Errorf("wall breached: %s", l)
			}
			continue
		default:
		}
		break
	}
}

// TestSymlinksPlantedChangeNoHostFile: symlinks to a host file planted
// where tori-run writes for a service (its notify socket, state files, the
// state socket) cannot be made, and after restarts (tori-run writes them
// all again) the host file is untouched. sd_notify still works on the
// read-only socket folder.
func TestSymlinksPlantedChangeNoHostFile(t *testing.T) {
	requireRoot(t)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("host file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := options(t)
	inst := start(t, capsule(t, "services:\n  planter:\n    command: "+wl+"confine plant "+victim+
		"\n    ready: { notify: true, interval: 1s, retries: 60 }\n    restart: always\n    backoff: { initial: 10ms, max: 10ms }\n    max_restarts: 2\n    restart_window: 1h\n"), o)
	sup, err := inst.Supervise()
	if err != nil {
		t.Fatal(err)
	}
	sub := sup.Events()
	defer sub.Close()
	if err := sup.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ready := 0
	deadline := time.After(120 * time.Second)
	for sup.Status()[0].State != supervisor.StateFailed {
		select {
		case ev := <-sub.C():
			if ev.Type == supervisor.EventReady {
				ready++
			}
		case <-deadline:
			t.Fatalf("the planter never ended: %+v", sup.Status())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = sup.Stop(ctx)
	sup.Wait()
	if ready == 0 {
		t.Error("READY=1 never arrived through the read-only notify folder")
	}
	logb, _ := os.ReadFile(supervisor.LogPath(runtime.LogDir(o.Root, "itest"), "planter"))
	if n := strings.Count(string(logb), "planted"); n != 3 {
		t.Errorf("the planter ran %d times, want 3:\n%s", n, logb)
	}
	for _, l := range strings.Split(string(logb), "\n") {
		if strings.Contains(l, "ALLOWED") {
			t.Errorf("wall breached: %s", l)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "host file\n" {
		t.Errorf("the host file changed: %q", b)
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
		t.Errorf("the host file's mode changed: %v", fi.Mode())
	}
	if t.Failed() {
		t.Logf("planter's log:\n%s", logb)
	}
}

// TestInitCannotBeTraced: PID 1 cannot be traced, read or robbed of its fds
// (it holds every service's output pipes and the host's channel); a service
// inherits nothing of it but stdin (/dev/null), stdout and stderr (seen by
// ls, not Go, whose runtime opens fds of its own); and each service is in
// its own cgroup in every hierarchy (on a hybrid host the cgroup2 one comes
// from a detached copy, not a host folder).
func TestInitCannotBeTraced(t *testing.T) {
	requireRoot(t)
	inst := start(t, capsule(t, "services:\n  attacker:\n    command: "+wl+"confine init-process\n  other:\n    command: "+wl+"sleep 60\n"+
		"  fds:\n    command: /bin/ls -l /proc/self/fd/\n"), options(t))
	other, _ := service(t, inst, "other") // its pipes are in the init: a target
	a, lines := service(t, inst, "attacker")
	out := collect(t, lines, "done")
	t.Logf("attacker:\n%s", strings.Join(out, "\n"))
	fds, flines := service(t, inst, "fds")
	wait(t, fds)
	held := map[string]string{}
	for l := range flines {
		if _, rest, ok := strings.Cut(l, ":"); ok {
			if f := strings.Fields(rest); len(f) >= 4 && f[2] == "->" {
				held[f[1]] = f[3]
			}
		}
	}
	if held["0"] != "/dev/null" || !strings.HasPrefix(held["1"], "pipe:") || !strings.HasPrefix(held["2"], "pipe:") {
		t.Errorf("stdin, stdout, stderr: %v", held)
	}
	for fd, target := range held {
		lsOwn := fd == "3" && strings.HasSuffix(target, "/fd") // ls's own listing of /proc/self/fd
		if fd != "0" && fd != "1" && fd != "2" && !lsOwn {
			t.Errorf("a service inherited fd %s -> %s", fd, target)
		}
	}
	if len(held) < 3 {
		t.Errorf("ls showed no fds: %v", held)
	}
	for _, s := range []*runtime.Service{a, other} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", s.HostPid))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, l := range lines {
			if strings.HasSuffix(l, ":/") {
				continue // a hierarchy tori-run does not use (our own cgroup is its root)
			}
			if len(lines) > 1 && strings.HasPrefix(l, "0::") {
				// Hybrid: born in the v1 hierarchies alone, since being born in
				// the (controller-less) unified one takes clone3, which the
				// capsule's filter answers with ENOSYS (docs/SECURITY.md).
				if strings.Contains(l, "/svc-"+s.Name) {
					t.Errorf("%s is in its cgroup2 leaf on a hybrid host (%s): started with clone3", s.Name, l)
				}
				continue
			}
			if !strings.Contains(l, "/svc-"+s.Name) {
				t.Errorf("%s is not in its cgroup in every hierarchy: %s", s.Name, l)
			}
		}
	}
}

// TestStateProxyKnowsItsCaller: writes are recorded as the service whose
// process opened the connection, also when written by another process of
// that service on a connection whose opener has exited (its pid free for
// reuse); a process in no service's cgroup (here the host's test process) is
// refused, and the 403 names no host pid.
func TestStateProxyKnowsItsCaller(t *testing.T) {
	requireRoot(t)
	o := options(t)
	inst := start(t, capsule(t, "services:\n  a:\n    command: "+wl+"confine state from-a\n  b:\n    command: "+wl+"confine state-passed from-b\n"), o)
	for _, name := range []string{"a", "b"} {
		s, lines := service(t, inst, name)
		ex := wait(t, s)
		var out []string
		for l := range lines {
			out = append(out, l)
		}
		if ex.Code != 0 {
			t.Fatalf("%s: %s:\n%s", name, ex.String(), strings.Join(out, "\n"))
		}
		t.Logf("%s: %s", name, strings.Join(out, "; "))
	}
	st, err := runtime.OpenCapsuleState(o.Root, o.StateRoot, "itest")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Who wrote is the record's service (not the value): the export says.
	var exp strings.Builder
	if err := st.Export(context.Background(), &exp, "jsonl"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(exp.String(), "\n") {
		for key, want := range map[string]string{"from-a": "a", "from-b": "b"} {
			if strings.Contains(l, `"key":"`+key+`"`) {
				seen[key] = true
				if !strings.Contains(l, `"service":"`+want+`"`) {
					t.Errorf("%s recorded as another service than %s: %s", key, want, l)
				}
			}
		}
	}
	if !seen["from-a"] || !seen["from-b"] {
		t.Errorf("from-a and from-b were not both recorded:\n%s", exp.String())
	}
	socks, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*", "state", "state.sock"))
	if len(socks) != 1 {
		t.Fatalf("state sockets: %v", socks)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socks[0])
	}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("PUT", "http://state/v1/kv/from-host", strings.NewReader("x"))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a process in no service's cgroup: %d %s, want 403", resp.StatusCode, body)
	}
	if regexp.MustCompile(`\d{2,}`).Match(body) || strings.Contains(string(body), fmt.Sprint(os.Getpid())) {
		t.Errorf("the 403 names a number (a host pid?): %s", body)
	}
}

// BenchmarkServiceStart: one start of a service that exits at once, to its exit, through the init (what the
// walls cost per start: on v2 the init's own open of the cgroup, on a hybrid host the detached cgroup2 copy).
func BenchmarkServiceStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	o := runtime.Options{Root: b.TempDir(), RunDir: b.TempDir(), StateRoot: b.TempDir()}
	app := b.TempDir()
	m := filepath.Join(app, "capsule.yml")
	if err := os.WriteFile(m, []byte("name: itest\nversion: \"1.0.0\"\nservices:\n  x:\n    command: /bin/true\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	tgt, err := runtime.Resolve(m, o)
	if err != nil {
		b.Fatal(err)
	}
	inst, err := runtime.Create(context.Background(), tgt, o)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = inst.Destroy(context.Background()) }()
	devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer devnull.Close()
	for b.Loop() {
		s, err := inst.StartService(context.Background(), "x", devnull, devnull)
		if err != nil {
			b.Fatal(err)
		}
		<-s.Done()
	}
}
