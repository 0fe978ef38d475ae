package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime"
)

// The escape suite: a capsule service tries, one by one, what a hostile
// artifact would, and prints "escape NAME: refused (why)" or "escape NAME:
// SUCCEEDED (what)". The tests run it under the default confinement and
// under seccomp: unconfined, and compare each outcome with what
// docs/SECURITY.md says.

// escapes are the attacks, in order; each returns nil when it worked.
var escapes = []struct {
	name string
	try  func() error
}{
	{"read-shadow", func() error { _, err := os.ReadFile("/etc/shadow"); return err }},
	{"read-gshadow", func() error { _, err := os.ReadFile("/etc/gshadow"); return err }},
	{"list-sys-firmware", func() error {
		des, err := os.ReadDir("/sys/firmware")
		if err == nil && len(des) == 0 {
			return fmt.Errorf("empty (masked)")
		}
		return err
	}},
	{"mknod-disk", func() error {
		// A block device node of the host's first disk (8:0), then open it.
		p := "/tmp/escape-disk"
		if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		defer os.Remove(p)
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		return f.Close()
	}},
	{"mount-tmpfs", func() error {
		if err := unix.Mount("none", "/tmp", "tmpfs", 0, ""); err != nil {
			return err
		}
		return unix.Unmount("/tmp", unix.MNT_DETACH)
	}},
	{"unshare-user", func() error { return unshareOnThread(unix.CLONE_NEWUSER) }},
	{"clone-newuser", func() error { return spawnIn(unix.CLONE_NEWUSER) }},
	// CLONE_NEWTIME makes Go use clone3, whose flags seccomp cannot see.
	{"clone3-newuser", func() error { return spawnIn(unix.CLONE_NEWUSER | unix.CLONE_NEWTIME) }},
	{"unshare-mount", func() error { return unshareOnThread(unix.CLONE_NEWNS) }},
	{"add-key", func() error {
		_, err := unix.AddKey("user", "tori-escape", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		return err
	}},
	{"keyctl-join", func() error {
		_, err := unix.KeyctlJoinSessionKeyring("tori-escape")
		return err
	}},
	{"ptrace-sibling", func() error { return ptraceAttach(siblingPid()) }},
	{"ptrace-init", func() error { return ptraceAttach(1) }},
	{"af-packet", func() error { return socketOK(unix.AF_PACKET, unix.SOCK_RAW, 0x0300) }},
	{"raw-socket", func() error { return socketOK(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP) }},
	{"io-uring-setup", func() error {
		var params [120]byte // struct io_uring_params
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != 0 {
			return errno
		}
		return unix.Close(int(fd))
	}},
}

func unshareOnThread(flag int) error {
	done := make(chan error)
	go func() {
		// The thread is left locked: Go discards it with its namespaces.
		goruntime.LockOSThread()
		done <- unix.Unshare(flag)
	}()
	return <-done
}

// spawnIn starts a child in new namespaces (clone, or clone3 with
// CLONE_NEWTIME), as unshare -U does without a single-threaded process.
func spawnIn(flags uintptr) error {
	cmd := exec.Command("/.tori/tori-run", "workload", "exit", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	return cmd.Run()
}

func ptraceAttach(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("no sibling process found")
	}
	done := make(chan error)
	go func() {
		goruntime.LockOSThread()
		if err := unix.PtraceAttach(pid); err != nil {
			done <- err
			return
		}
		_ = unix.PtraceDetach(pid)
		done <- nil
	}()
	return <-done
}

// siblingPid is another service's process: not us, not the init.
func siblingPid() int {
	des, _ := os.ReadDir("/proc")
	for _, d := range des {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == 1 || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline"); err == nil && strings.Contains(string(b), "sleep") {
			return pid
		}
	}
	return 0
}

func socketOK(domain, typ, proto int) error {
	fd, err := unix.Socket(domain, typ, proto)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// writableMounts tries to create a file at every mount point the capsule
// has and returns those where it could.
func writableMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return []string{"(no mountinfo: " + err.Error() + ")"}
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || seen[fields[4]] {
			continue
		}
		mp := fields[4]
		seen[mp] = true
		if fi, err := os.Stat(mp); err != nil || !fi.IsDir() {
			// A file bind (/etc/passwd): write the file itself.
			if fh, err := os.OpenFile(mp, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				fh.Close()
				out = append(out, mp)
			}
			continue
		}
		p := filepath.Join(mp, ".tori-escape-probe")
		if fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
			fh.Close()
			os.Remove(p)
			out = append(out, mp)
		}
	}
	return out
}

func escape() int {
	for _, e := range escapes {
		if err := e.try(); err != nil {
			fmt.Printf("escape %s: refused (%v)\n", e.name, err)
		} else {
			fmt.Printf("escape %s: SUCCEEDED\n", e.name)
		}
	}
	fmt.Printf("writable: %s\n", strings.Join(writableMounts(), " "))
	fmt.Println("escape done")
	time.Sleep(time.Hour)
	return 0
}

// runEscapes runs the suite in a capsule with the given manifest lines and
// returns each attack's outcome (true: it succeeded) and the writable mounts.
func runEscapes(t *testing.T, extra string, o runtime.Options) (map[string]bool, map[string]bool, map[string]string) {
	t.Helper()
	data, ref := t.TempDir(), t.TempDir()
	// A read-only volume with a mount inside it: ro must hold for it too
	// (rro), not only for the volume's own mount.
	sub := filepath.Join(ref, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })
	o.Host = &runtime.HostConfig{Volumes: []runtime.AllowedVolume{{Path: data, From: "test"}, {Path: ref, ReadOnly: true, From: "test"}}}
	body := extra + "volumes: [\"" + data + ":/data:rw\", \"" + ref + ":/ref:ro\"]\nservices:\n  victim:\n    command: " + wl + "sleep 60\n  attacker:\n    command: " + wl + "escape\n"
	inst := start(t, capsule(t, body), o)
	service(t, inst, "victim")
	_, lines := service(t, inst, "attacker")
	got := map[string]bool{}
	writable := map[string]bool{}
	refusals := map[string]string{} // the refused attacks' errors
	for {
		l := expectLine(t, lines, "")
		t.Log(l)
		switch {
		case l == "escape done":
			if _, err := os.Stat(filepath.Join(data, ".tori-escape-probe")); err == nil {
				t.Errorf("the probe file was left in the volume")
			}
			return got, writable, refusals
		case strings.HasPrefix(l, "writable: "):
			for _, m := range strings.Fields(strings.TrimPrefix(l, "writable: ")) {
				writable[m] = true
			}
		case strings.HasPrefix(l, "escape "):
			name, rest, _ := strings.Cut(strings.TrimPrefix(l, "escape "), ": ")
			got[name] = strings.HasPrefix(rest, "SUCCEEDED")
			if !got[name] {
				refusals[name] = rest
			}
		}
	}
}

// writableByDesign are the mounts a service may write: its private tmpfs
// folders, the app's scratch layer (discarded at stop) and the declared,
// allowed rw volume. Nothing of tori-run's own is (confine_init_test.go).
// The masked /proc files are /dev/null bound over them.
var writableByDesign = map[string]bool{"/tmp": true, "/run": true, "/dev": true, "/dev/shm": true, "/dev/mqueue": true,
	"/app": true, "/data": true, "/proc/keys": true, "/proc/timer_list": true, "/proc/kcore": true,
	"/proc/latency_stats": true, "/proc/timer_stats": true, "/proc/sched_debug": true}

// knownGaps are attacks the default confinement does not refuse today
// (docs/SECURITY.md): none.
var knownGaps = map[string]bool{}

// refusedWith are attacks that must be refused by one particular error:
// clone3 answers ENOSYS, as in moby's profile, so that libc and Go fall
// back to clone(2), whose flags the filter checks. On cgroup v1 and hybrid
// hosts the capsule's filter answers it; on v2, where the init needs clone3
// to start services born in their cgroup, the trampoline's filter does
// (runtime/capinit/trampoline_linux.go).
var refusedWith = map[string]string{"clone3-newuser": unix.ENOSYS.Error()}

// unconfinedSucceeds are the attacks only the seccomp filter refuses
// (docs/SECURITY.md): with seccomp: unconfined they work.
var unconfinedSucceeds = map[string]bool{"clone-newuser": true, "clone3-newuser": true, "add-key": true, "keyctl-join": true,
	"ptrace-sibling": true, "io-uring-setup": true}

func TestEscapeRefused(t *testing.T) {
	requireRoot(t)
	got, writable, refusals := runEscapes(t, "", options(t))
	for _, e := range escapes {
		if ok, seen := got[e.name]; !seen || ok != knownGaps[e.name] {
			t.Errorf("escape %s: succeeded=%v (tried: %v); docs/SECURITY.md says %v", e.name, ok, seen, knownGaps[e.name])
		}
		if want := refusedWith[e.name]; want != "" && !strings.Contains(refusals[e.name], want) {
			t.Errorf("escape %s: refused with %q, want %q", e.name, refusals[e.name], want)
		}
	}
	for m := range writable {
		if !writableByDesign[m] {
			t.Errorf("a service can write %s", m)
		}
	}
	if !writable["/data"] {
		t.Errorf("the allowed rw volume /data is not writable; writable: %v", writable)
	}
	if !writable["/data"] || writable["/ref"] || writable["/ref/sub"] {
		t.Errorf("want /data writable, /ref and the mount inside it /ref/sub not (rro): writable %v", writable)
	}
}

func TestEscapeUnconfined(t *testing.T) {
	requireRoot(t)
	got, _, _ := runEscapes(t, "seccomp: unconfined\n", options(t))
	for _, e := range escapes {
		if e.name == "unshare-user" {
			// unshare(2) of a user namespace needs a single-threaded process,
			// which a Go program is not (EINVAL either way): clone-newuser
			// stands for it. ptrace-init stays refused: the init is not
			// dumpable.
			continue
		}
		if got[e.name] != unconfinedSucceeds[e.name] {
			t.Errorf("escape %s under seccomp: unconfined: succeeded=%v, docs/SECURITY.md says %v", e.name, got[e.name], unconfinedSucceeds[e.name])
		}
	}
}

// TestEscapeVolumesRefused: volumes the operator did not allow, and
// tori-run's own folders, are refused before anything is made, naming the
// manifest's line, the volume and how to allow one.
func TestEscapeVolumesRefused(t *testing.T) {
	requireRoot(t)
	o := options(t)
	allowed := t.TempDir()
	o.Host = &runtime.HostConfig{Volumes: []runtime.AllowedVolume{{Path: allowed, ReadOnly: true, From: "host.yml:3"}}}
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink("/", link); err != nil {
		t.Fatal(err)
	}
	// Even an operator who allows everything (/) cannot give a capsule
	// tori-run's own folders.
	everything := &runtime.HostConfig{Volumes: []runtime.AllowedVolume{{Path: "/", From: "test"}}}
	for _, tc := range []struct {
		vol, want string
		host      *runtime.HostConfig
	}{
		{"/:/host:rw", "capsule.yml:4: volumes: /:/host:rw: the host path / holds tori-run's own", everything},
		{link + ":/host", "the host path " + link + " (that is /) holds tori-run's own", everything},
		{o.Root + ":/r", "holds tori-run's own " + filepath.Join(o.Root, "releases"), everything},
		{o.StateRoot + "/other-capsule:/s", "is inside tori-run's own " + o.StateRoot, everything},
		{o.RunDir + ":/s", "is inside tori-run's own " + o.RunDir, everything},
		{allowed + ":/a:rw", "is allowed read-only only (host.yml:3)", o.Host},
	} {
		t.Run(tc.vol, func(t *testing.T) {
			o := o
			o.Host = tc.host
			err := tryCreate(t, capsule(t, "volumes:\n  - "+tc.vol+"\nservices:\n  a: { command: /bin/true }\n"), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--allow-volume") && !strings.Contains(err.Error(), "no flag allows it") {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			assertNothingLeft(t, o)
		})
	}
	o.Host = nil
	err := tryCreate(t, capsule(t, "volumes: [\""+allowed+":/a\"]\nservices:\n  a: { command: /bin/true }\n"), o)
	if err == nil || !strings.Contains(err.Error(), "not allowed on this host: the operator allows it with --allow-volume "+allowed) ||
		!strings.Contains(err.Error(), "- path: "+allowed) {
		t.Fatalf("error %v, want the flag and the host.yml lines that allow it", err)
	}
}

// tryCreate creates an instance of manifest and returns the error; one
// that was made after all is destroyed.
func tryCreate(t *testing.T, manifest string, o runtime.Options) error {
	tgt, err := runtime.Resolve(manifest, o)
	if err != nil {
		return err
	}
	inst, err := runtime.Create(context.Background(), tgt, o)
	if err == nil {
		_ = inst.Destroy(context.Background())
	}
	return err
}

func asUser() int {
	b, err := os.ReadFile("/app/hello.txt")
	fmt.Printf("uid %d gid %d\n", os.Getuid(), os.Getgid())
	fmt.Printf("read app: %q %v\n", strings.TrimSpace(string(b)), err)
	c, err := net.Dial("unix", os.Getenv("TORI_STATE_SOCKET"))
	if err == nil {
		c.Close()
	}
	fmt.Printf("state socket: %v\n", err)
	fmt.Printf("write tmp: %v\n", os.WriteFile("/tmp/x", []byte("x"), 0o600))
	return 0
}

// TestNonRootUser: user: runs the services as that user, looked up in the
// host's /etc/passwd on the host layer, and such a service can read its app,
// reach the state proxy and use /tmp.
func TestNonRootUser(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct{ user, want string }{{"nobody", "uid 65534 gid 65534"}, {"1234:4321", "uid 1234 gid 4321"}} {
		t.Run(tc.user, func(t *testing.T) {
			inst := start(t, capsule(t, "user: \""+tc.user+"\"\nservices:\n  a:\n    command: "+wl+"as-user\n"), options(t))
			_, lines := service(t, inst, "a")
			for _, want := range []string{tc.want, `read app: "from the release" <nil>`, "state socket: <nil>", "write tmp: <nil>"} {
				if l := expectLine(t, lines, strings.Fields(want)[0]); l != want {
					t.Errorf("got %q, want %q", l, want)
				}
			}
		})
	}
}

// BenchmarkStartSeccomp: the cost of the filter at start. Create (the
// capsule's init running, under its filter or not) and Destroy, the two
// manifests interleaved so that a loaded machine weighs on both alike;
// reported as ms per start of each and their ratio.
func BenchmarkStartSeccomp(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	o := runtime.Options{Root: b.TempDir(), RunDir: b.TempDir(), StateRoot: b.TempDir()}
	var targets [2]*runtime.Target
	for k, extra := range []string{"", "seccomp: unconfined\n"} {
		app := b.TempDir()
		m := filepath.Join(app, "capsule.yml")
		if err := os.WriteFile(m, []byte("name: bench\nversion: \"1.0.0\"\n"+extra+"services:\n  a: { command: /bin/true }\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		t, err := runtime.Resolve(m, o)
		if err != nil {
			b.Fatal(err)
		}
		targets[k] = t
	}
	var spent [2]time.Duration
	for i := 0; i < b.N; i++ {
		for k, t := range targets {
			start := time.Now()
			inst, err := runtime.Create(context.Background(), t, o)
			if err != nil {
				b.Fatal(err)
			}
			spent[k] += time.Since(start)
			if err := inst.Destroy(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(spent[0].Microseconds())/1000/float64(b.N), "ms/start-seccomp")
	b.ReportMetric(float64(spent[1].Microseconds())/1000/float64(b.N), "ms/start-unconfined")
	b.ReportMetric(float64(spent[0])/float64(spent[1]), "ratio")
}
