package toritest_test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostcheck"
	"github.com/tori-run/tori-run/toritest"
)

// As a user who is not root (nobody), on this host with no
// cgroup v2 subtree delegated to it: a capsule without limits runs in a
// user namespace, the user as root inside; one with MemoryMax is refused
// with what is missing and how delegation gives it.
func TestRootless(t *testing.T) {
	if os.Getenv("TORITEST_ROOTLESS_CHILD") == "1" {
		rootlessChild(t)
		return
	}
	t.Parallel()
	uid, gid := 65534, 65534 // nobody, where there is no passwd entry (the CI guest)
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	dir, tmp := rootlessFiles(t)
	layerRoot, digests := rootfsLayers(t)
	yml := "name: layered\nversion: \"1.0.0\"\nlayers: [" + strings.Join(digests, ", ") + "]\nservices:\n  sh:\n    command: /bin/sh -c 'exec sleep 3600'\n"
	if err := os.MkdirAll(filepath.Join(dir, "applayer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "applayer", "capsule.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "toritest.test"), "-test.run", "^TestRootless$", "-test.v", "-test.count=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd.Dir = dir
	cmd.Env = []string{"TORITEST_ROOTLESS_CHILD=1", "TORITEST_LAYER_ROOT=" + layerRoot, "TMPDIR=" + tmp, "HOME=" + tmp, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := childOutput(cmd)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRootless") {
		t.Fatalf("as uid %d: %v\n%s", uid, err, out)
	}
	// Everything nobody made went with its cleanup.
	if left, _ := filepath.Glob(filepath.Join(tmp, "toritest-*", "p*")); len(left) > 0 {
		t.Errorf("left behind by the rootless capsules: %v", left)
	}
}

func rootlessChild(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("the rootless child runs as root")
	}
	c := toritest.Start(t, "app")
	out, err := c.Exec("hello", "sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /app/scratch && cat /app/scratch")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 5 || f[0] != "0" || f[1] != "0" || f[2] != strconv.Itoa(os.Geteuid()) || f[3] != "1" || f[4] != "x" {
		t.Fatalf("inside the rootless capsule: %q; want uid 0, mapped from uid %d only, and a writable /app", out, os.Geteuid())
	}
	if _, err := os.Stat(filepath.Join("app", "scratch")); err == nil {
		t.Fatal("a write to /app reached the app folder: no scratch layer")
	}
	// Without subordinate ids only the user is mapped, and validate --host
	// says so; a capsule that runs as another user is refused.
	if f := subidsFinding(t); !strings.Contains(f.Message, "no other id") {
		t.Errorf("validate --host says %+v; want the single mapping", f)
	}
	if msg, _ := startFailing(t, "app1000"); !strings.Contains(msg, "is not mapped") || !strings.Contains(msg, "usermod --add-subuids") {
		t.Errorf("user: 1000 without subordinate ids: %s; want a refusal naming the mapping and usermod", msg)
	}
	// Rootfs layers: mounted inside the capsule's user namespace (OverlayFS
	// there: Linux 5.11+), the root read-only as with root.
	if root := os.Getenv("TORITEST_LAYER_ROOT"); root != "" {
		rootlessLayers(t, root)
	}
	// Listening sockets need no cgroup: held by tori-run, handed to the
	// service as LISTEN_FDS, a unix one bound into the capsule.
	sc := toritest.Start(t, "appsock")
	pid, err := sc.Pid("web")
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if e := strings.Split(string(env), "\x00"); !slices.Contains(e, "LISTEN_FDS=2") || !slices.Contains(e, "LISTEN_FDNAMES=http:ctl") {
		t.Errorf("the service's environment: %q; want LISTEN_FDS=2, LISTEN_FDNAMES=http:ctl", e)
	}
	for _, fd := range []int{3, 4} {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err != nil || !strings.HasPrefix(l, "socket:") {
			t.Errorf("the service's fd %d: %q, %v; want a socket", fd, l, err)
		}
	}
	if conn, err := net.Dial("tcp", sc.Sockets()["http"]); err != nil {
		t.Errorf("dialling the held tcp socket %s: %v", sc.Sockets()["http"], err)
	} else {
		conn.Close()
	}
	if out, err := sc.Exec("web", "sh", "-c", "test -S /run/ctl.sock && echo bound"); err != nil || strings.TrimSpace(string(out)) != "bound" {
		t.Errorf("the unix socket inside the capsule: %q, %v", out, err)
	}
	msg, _ := startFailing(t, "app", toritest.WithLimits("MemoryMax=64M"))
	for _, want := range []string{"MemoryMax", "memory controller", "cgroup v2 subtree delegated to uid", "Delegate=", "chown"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, msg)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// On a cgroup v2 host (the CI guest), a user whose own v2 subtree is
// delegated the way systemd's Delegate=yes does it (the folder and its
// cgroup.procs, cgroup.subtree_control, cgroup.threads chowned to the user,
// the controllers enabled above it) gets the limits it asks for, enforced:
// the capsule's memory.max and pids.max are set, and a process over the
// memory limit is OOM-killed.
func TestRootlessDelegatedLimits(t *testing.T) {
	if os.Getenv("TORITEST_ROOTLESS_CHILD") == "2" {
		delegatedChild(t)
		return
	}
	base := delegationBase(t)
	t.Parallel()
	const uid = 65534
	// The subtree: created by root, handed to the user as systemd does.
	sub := filepath.Join(base, fmt.Sprintf("toritest-user-%d", os.Getpid()))
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroupTree(t, sub) })
	for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
		if err := os.Chown(filepath.Join(sub, f), uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	dir, tmp := rootlessFiles(t)
	cg, err := os.Open(sub)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(filepath.Join(dir, "toritest.test"), "-test.run", "^TestRootlessDelegatedLimits$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"TORITEST_ROOTLESS_CHILD=2", "TMPDIR=" + tmp, "HOME=" + tmp, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid},
		UseCgroupFD: true, CgroupFD: int(cg.Fd())} // born in the delegated subtree
	out, err := childOutput(cmd)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRootlessDelegatedLimits") {
		t.Fatalf("as uid %d in %s: %v\n%s", uid, sub, err, out)
	}
}

// delegationBase is the cgroup v2 folder under which this test may make a
// user's subtree with memory and pids enabled: our own cgroup, or its
// parent when we sit in tori-run's supervisor leaf. It skips where there is
// none (hybrid and v1 hosts).
func delegationBase(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own := ""
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			own = rest
		} else {
			t.Skip("not a cgroup v2-only host (the CI guest is): ", l)
		}
	}
	dir := filepath.Join("/sys/fs/cgroup", own)
	if filepath.Base(dir) == "supervisor" {
		dir = filepath.Dir(dir)
	}
	sc, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil || !strings.Contains(string(sc), "memory") || !strings.Contains(string(sc), "pids") {
		t.Skipf("%s does not enable memory and pids for its children (%q, %v)", dir, sc, err)
	}
	return dir
}

func delegatedChild(t *testing.T) {
	c := toritest.Start(t, "app", toritest.WithLimits("MemoryMax=32M", "TasksMax=40"))
	out, err := c.Exec("hello", "sh", "-c", "id -u; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(out)); len(f) != 3 || f[0] != "0" || f[1] != "33554432" || f[2] != "40" {
		t.Fatalf("in the capsule: %q; want uid 0, memory.max 33554432, pids.max 40", out)
	}
	_, err = c.Exec("hello", "/.tori/tori-run", "workload", "alloc", "128")
	var ee *runtime.ExecError
	if !errors.As(err, &ee) || ee.Exit.Signal != syscall.SIGKILL {
		t.Fatalf("128 MiB under MemoryMax=32M: %v; want an OOM kill (SIGKILL)", err)
	}
}

// rootlessFiles puts the test binary and the app where any user can read
// them, and returns that folder and a short TMPDIR any user can write.
func rootlessFiles(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, os.Args[0], filepath.Join(dir, "toritest.test"), 0o755)
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "testdata/hello/capsule.yml", filepath.Join(dir, "app", "capsule.yml"), 0o644)
	yml := "name: subids\nversion: \"1.0.0\"\nuser: \"1000:1000\"\nservices:\n  hello:\n    command: sleep 3600\n"
	if err := os.MkdirAll(filepath.Join(dir, "app1000"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app1000", "capsule.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	yml = "name: sock\nversion: \"1.0.0\"\nsockets:\n  http: { listen: \"tcp://127.0.0.1:0\" }\n  ctl: { listen: \"unix:///run/ctl.sock\" }\n" +
		"services:\n  web:\n    command: sleep 3600\n"
	if err := os.MkdirAll(filepath.Join(dir, "appsock"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "appsock", "capsule.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	// Short: the capsules' Unix sockets live beneath it.
	tmp, err := os.MkdirTemp("/tmp", "trl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir, tmp
}

// removeCgroupTree removes a cgroup folder and its children, deepest first.
func removeCgroupTree(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(t, filepath.Join(dir, e.Name()))
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup left: %s: %v", dir, err)
	}
}

// As a user that /etc/subuid and /etc/subgid give a range (made for the
// test, removed after it), a capsule runs its service as uid 1000 inside,
// which is the range's start + 999 on the host: the ranges are mapped
// through newuidmap/newgidmap after the user itself (root inside).
// validate --host's rootless/subids says so.
func TestRootlessSubIDs(t *testing.T) {
	if os.Getenv("TORITEST_ROOTLESS_CHILD") == "3" {
		subIDChild(t)
		return
	}
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("makes a user with subordinate ids: needs root, and not under -short")
	}
	for _, tool := range []string{"useradd", "usermod", "userdel", "newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (packages passwd, uidmap)", tool)
		}
	}
	t.Parallel()
	name := fmt.Sprintf("trsub%d", os.Getpid()%1000000)
	start := 300000000 + (os.Getpid()%10000)*65536
	ids := fmt.Sprintf("%d-%d", start, start+65535)
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), name+":") {
				t.Errorf("%s still lists %s", f, name)
			}
		}
	})
	if out, err := exec.Command("usermod", "--add-subuids", ids, "--add-subgids", ids, name).CombinedOutput(); err != nil {
		t.Fatalf("usermod --add-subuids %s %s: %v: %s", ids, name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, tmp := rootlessFiles(t)
	cmd := exec.Command(filepath.Join(dir, "toritest.test"), "-test.run", "^TestRootlessSubIDs$", "-test.v", "-test.count=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd.Dir = dir
	cmd.Env = []string{"TORITEST_ROOTLESS_CHILD=3", "TORITEST_SUBID_START=" + strconv.Itoa(start),
		"TMPDIR=" + tmp, "HOME=" + tmp, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := childOutput(cmd)
	t.Logf("the child as %s:\n%s", name, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRootlessSubIDs") {
		t.Fatalf("as %s (uid %d, subids %s): %v\n%s", name, uid, ids, err, out)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "toritest-*", "p*")); len(left) > 0 {
		t.Errorf("left behind by the rootless capsules: %v", left)
	}
}

func subIDChild(t *testing.T) {
	start, _ := strconv.Atoi(os.Getenv("TORITEST_SUBID_START"))
	c := toritest.Start(t, "app1000")
	pid, err := c.Pid("hello")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(start + 999)
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") && (f[1] != want || f[2] != want) {
			t.Errorf("the service (uid 1000 in the capsule) on the host: %q; want %s, the subordinate range's start + 999", l, want)
		}
	}
	m, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(m)); len(f) != 6 || f[0] != "0" || f[1] != strconv.Itoa(os.Geteuid()) || f[2] != "1" ||
		f[3] != "1" || f[4] != strconv.Itoa(start) || f[5] != "65536" {
		t.Errorf("the capsule's uid_map: %q; want 0 %d 1, then 1 %d 65536", m, os.Geteuid(), start)
	}
	if f := subidsFinding(t); !strings.Contains(f.Message, "newuidmap") || !strings.Contains(f.Message, strconv.Itoa(start)) {
		t.Errorf("validate --host says %+v; want the range through newuidmap", f)
	}
}

// subidsFinding is validate --host's rootless/subids finding.
func subidsFinding(t *testing.T) hostcheck.Finding {
	t.Helper()
	for _, f := range hostcheck.CheckHost(hostcheck.HostOptions{}) {
		if f.Check == "rootless/subids" {
			return f
		}
	}
	t.Fatal("validate --host has no rootless/subids finding")
	return hostcheck.Finding{}
}

// childOutput runs cmd (a copy of the test binary) for its output. A copy
// just written may be held open for writing by a fork of another test's
// copy, until that child's exec closes it: ETXTBSY is then tried again.
func childOutput(cmd *exec.Cmd) ([]byte, error) {
	for try := 0; ; try++ {
		c := exec.Command(cmd.Path, cmd.Args[1:]...)
		c.Dir, c.Env, c.SysProcAttr = cmd.Dir, cmd.Env, cmd.SysProcAttr
		out, err := c.CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) || try == 50 {
			return out, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// layerFiles are the host files a rootfs layer needs to run this test
// binary as the capsules' init and a shell: a static busybox, and when the
// binary is dynamically linked, its loader and libraries (from ldd); why
// says why there are none.
func layerFiles() ([]string, string) {
	if b, err := os.ReadFile("/bin/busybox"); err != nil || !bytesStatic(b) {
		return nil, "no static /bin/busybox (apt-get install busybox-static)"
	}
	files := []string{"/bin/busybox"}
	f, err := elf.Open(os.Args[0])
	if err != nil {
		return nil, err.Error()
	}
	defer f.Close()
	dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	if !dynamic {
		return files, ""
	}
	ldd, err := exec.Command("ldd", os.Args[0]).Output()
	if err != nil {
		return nil, fmt.Sprintf("ldd %s: %v", os.Args[0], err)
	}
	for _, w := range strings.Fields(string(ldd)) {
		if strings.HasPrefix(w, "/") {
			files = append(files, w)
		}
	}
	return files, ""
}

// bytesStatic reports whether an ELF file has no program interpreter.
func bytesStatic(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return false
	}
	return !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
}

// rootfsLayers installs two rootfs layers into a root any user can read,
// and returns the root and their digests, top first (none, and "", where
// the layers cannot be made): a base (a static
// busybox, and the loader and libraries of this test binary, which is the
// capsules' init) and a top one over it (a file in /bin, and a file that
// hides the base's).
func rootfsLayers(t *testing.T) (string, []string) {
	t.Helper()
	base, top := t.TempDir(), t.TempDir()
	files, why := layerFiles()
	if why != "" {
		t.Logf("not testing rootfs layers: %s", why)
		return "", nil
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Join(base, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, f, filepath.Join(base, f), 0o755)
	}
	for _, applet := range []string{"sh", "cat", "test", "sleep", "touch"} {
		if err := os.Symlink("busybox", filepath.Join(base, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(top, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for path, text := range map[string]string{filepath.Join(base, "layer-marker"): "from the base layer\n",
		filepath.Join(top, "layer-marker"): "from the top layer\n", filepath.Join(top, "bin", "top-file"): "top\n"} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	store, err := release.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, l := range []string{top, base} {
		if err := os.WriteFile(filepath.Join(l, "capsule.yml"), []byte("name: layer\nversion: \"1.0.0\"\nservices:\n  none: { command: /bin/sh }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := release.Build(context.Background(), release.BuildOptions{FromDir: l, Manifest: filepath.Join(l, "capsule.yml"), OutputDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.Install(context.Background(), res.Path); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.Digest)
	}
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, digests
}

// rootlessLayers: a capsule on two rootfs layers sees both, the top one's
// files over the base's, read-only, and none of the host's.
func rootlessLayers(t *testing.T, root string) {
	lc := toritest.Start(t, "applayer", toritest.WithRoot(root))
	out, err := lc.Exec("sh", "/bin/sh", "-c", "cat /layer-marker /bin/top-file; test -x /bin/busybox && echo base-bin; touch /bin/x 2>/dev/null || echo ro; test -e /usr/bin || echo no-host-usr")
	if want := "from the top layer\ntop\nbase-bin\nro\nno-host-usr\n"; err != nil || string(out) != want {
		t.Errorf("in a capsule on a rootfs layer without root: %q, %v; want %q: the layer's files, read-only, and no host /usr", out, err, want)
	}
}
