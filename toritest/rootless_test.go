package toritest_test

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/toritest"
)

// As a user who is not root (nobody, through setpriv), on this host with no
// cgroup v2 subtree delegated to it: a capsule without limits runs in a
// user namespace, the user as root inside; one with MemoryMax is refused
// with what is missing and how delegation gives it.
func TestRootless(t *testing.T) {
	if os.Getenv("TORITEST_ROOTLESS_CHILD") == "1" {
		rootlessChild(t)
		return
	}
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv (util-linux):", err)
	}
	// The test binary and the app, where nobody can read them; its
	// temporary folders where it can write.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "toritest.test")
	copyFile(t, os.Args[0], bin, 0o755)
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "testdata/hello/capsule.yml", filepath.Join(dir, "app", "capsule.yml"), 0o644)
	// Short: the capsules' Unix sockets live beneath it.
	tmp, err := os.MkdirTemp("/tmp", "trl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid="+nobody.Uid, "--regid="+nobody.Gid, "--clear-groups",
		bin, "-test.run", "^TestRootless$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"TORITEST_ROOTLESS_CHILD=1", "TMPDIR=" + tmp, "HOME=" + tmp, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestRootless") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	// Everything nobody made went with its cleanup.
	if left, _ := filepath.Glob(filepath.Join(tmp, "toritest-*", "*")); len(left) > 0 {
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
