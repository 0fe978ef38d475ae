package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime"
)

// The capsules of these tests run the init a tori-run built by make runs:
// the small cmd/tori-init, bound at /.tori/init as PID 1, built once here
// (or given by TORI_INIT_BINARY, as make test-vm does for its guest). The
// test binary is still bound at /.tori/tori-run, for the workloads. With
// neither a Go toolchain nor TORI_INIT_BINARY the capsules fall back to the
// test binary as their init, as a tori-run built without make does.
var testInit string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tori-init-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testInit, err = buildTestInit(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildTestInit(dir string) (string, error) {
	if p := os.Getenv("TORI_INIT_BINARY"); p != "" {
		return p, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", nil // the fallback: see testInit
	}
	out := filepath.Join(dir, "tori-init")
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", out, "github.com/tori-run/tori-run/cmd/tori-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/tori-init: %v\n%s", err, b)
	}
	return out, nil
}

// withTestInit makes o's capsules run testInit as PID 1 (if there is one)
// and bind the test binary for the workloads.
func withTestInit(t *testing.T, o runtime.Options) runtime.Options {
	if testInit == "" {
		t.Log("capsule init: the test binary (no Go toolchain to build cmd/tori-init, TORI_INIT_BINARY unset)")
		return o
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.InitBinary, o.Binary = testInit, self
	return o
}

// initExe finds the capsule's PID 1 on the host (the parent of a service's
// process) and stats its executable.
func initExe(t *testing.T, svc *runtime.Service) unix.Stat_t {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(svc.HostPid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	var st unix.Stat_t
	// The init is not dumpable; root on the host still reads its exe link.
	if err := unix.Stat("/proc/"+f[1]+"/exe", &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func sameFile(t *testing.T, st unix.Stat_t, path string) bool {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	return st.Dev == want.Dev && st.Ino == want.Ino
}

// TestCapsuleInitBinary: with a small init (Options.InitBinary, which a
// tori-run built by make fills in from the init it embeds) the capsule's
// PID 1 runs that binary, not tori-run; without one (a tori-run built by go
// build, as here) PID 1 is tori-run itself, and its services run either way.
func TestCapsuleInitBinary(t *testing.T) {
	requireRoot(t)
	if testInit == "" {
		t.Skip("no small init to check: no Go toolchain and TORI_INIT_BINARY unset")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(t *testing.T) string { return capsule(t, "services:\n  s:\n    command: /bin/sleep 60\n") }
	startSleep := func(t *testing.T, inst *runtime.Instance) *runtime.Service {
		s, err := inst.StartService(context.Background(), "s", os.Stderr, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("small", func(t *testing.T) {
		inst := start(t, manifest(t), withTestInit(t, options(t)))
		if st := initExe(t, startSleep(t, inst)); !sameFile(t, st, testInit) {
			t.Errorf("PID 1 of the capsule is not %s", testInit)
		}
	})
	t.Run("fallback", func(t *testing.T) {
		o := options(t)
		o.InitBinary, o.Binary = "", "" // as a tori-run without an embedded init
		inst := start(t, manifest(t), o)
		if st := initExe(t, startSleep(t, inst)); !sameFile(t, st, self) {
			t.Errorf("PID 1 of the capsule is not tori-run (here the test binary %s)", self)
		}
	})
}
