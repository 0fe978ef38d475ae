//go:build linux

package capinit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	// The C fast path of ExecCommand, as tori-run links it (the fallback
	// init); the small cmd/tori-init takes the Go path (goExecCommand here).
	_ "github.com/tori-run/tori-run/runtime/trampoline"
)

// The test binary plays both parts: the trampoline (ExecCommand: the C
// constructor of runtime/trampoline, or the Go path without cgo;
// goExecCommand: the Go path always) and, with TORI_CLONE3_PROBE set, the
// service it execs, which prints what clone3 answers it (clone3 with size 0
// creates nothing: EINVAL when allowed).
const goExecCommand = "go-" + ExecCommand

// trampolines are both ways in: each must close clone3.
var trampolines = []string{ExecCommand, goExecCommand}

func init() {
	if len(os.Args) > 1 && (os.Args[1] == ExecCommand || os.Args[1] == goExecCommand) {
		os.Exit(Exec(os.Args[2:]))
	}
	if os.Getenv("TORI_CLONE3_PROBE") == "1" {
		_, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		fmt.Printf("clone3: %v\npid %d LISTEN_PID=%s\n", errno, os.Getpid(), os.Getenv("LISTEN_PID"))
		os.Exit(0)
	}
}

// trampoline starts the test binary as the init does: through ExecCommand
// with a status pipe on fd 3, to exec path with args.
func trampoline(t *testing.T, via, mode, path string, args ...string) (out string, execErr, waitErr error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{via, mode, "3", path}, args...)...)
	cmd.Env = append(os.Environ(), "TORI_CLONE3_PROBE=1")
	cmd.ExtraFiles = []*os.File{w}
	var b strings.Builder
	cmd.Stdout = &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	execErr = ReadExecStatus(r)
	waitErr = cmd.Wait()
	return b.String(), execErr, waitErr
}

// TestTrampolineClosesClone3: a program exec'd by the trampoline gets
// ENOSYS from clone3 (so libc and Go fall back to clone(2), whose flags the
// capsule's filter checks), where the same program started directly gets
// the kernel's EINVAL. This is the v2 half of the clone3-newuser wall
// (integration/escape_test.go runs it in a capsule in the v2 guest).
func TestTrampolineClosesClone3(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	direct := exec.Command(self)
	direct.Env = append(os.Environ(), "TORI_CLONE3_PROBE=1")
	b, err := direct.Output()
	if err != nil || !strings.Contains(string(b), unix.EINVAL.Error()) {
		t.Skipf("clone3 is not open to this test (%q, %v): nothing to close", b, err)
	}
	for _, via := range trampolines {
		out, execErr, waitErr := trampoline(t, via, Mode(false, true), self, "probe")
		if execErr != nil || waitErr != nil {
			t.Fatalf("%s: exec %v, wait %v (output %q)", via, execErr, waitErr, out)
		}
		if want := "clone3: " + unix.ENOSYS.Error(); !strings.Contains(out, want) {
			t.Errorf("through %s the service says %q, want %q", via, strings.TrimSpace(out), want)
		}
	}
}

// TestTrampolineListenPid: with listen-pid (a service given sockets) the
// service sees LISTEN_PID = its own pid, and clone3 stays open to it unless
// no-clone3 is asked for too.
func TestTrampolineListenPid(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, via := range trampolines {
		out, execErr, waitErr := trampoline(t, via, Mode(true, false), self, "probe")
		if execErr != nil || waitErr != nil {
			t.Fatalf("%s: exec %v, wait %v (output %q)", via, execErr, waitErr, out)
		}
		m := regexp.MustCompile(`pid (\d+) LISTEN_PID=(\d*)`).FindStringSubmatch(out)
		if m == nil || m[1] != m[2] {
			t.Errorf("%s: output %q, want LISTEN_PID = the service's pid", via, out)
		}
		if strings.Contains(out, unix.ENOSYS.Error()) {
			t.Errorf("%s: clone3 closed without no-clone3: %q", via, out)
		}
	}
}

// TestTrampolineExecError: a program that cannot be exec'd is reported on
// the status pipe with its errno (the init's start then fails, as a plain
// fork/exec would), and the trampoline exits 127.
func TestTrampolineExecError(t *testing.T) {
	for _, via := range trampolines {
		_, execErr, waitErr := trampoline(t, via, Mode(true, true), "/nonexistent/tori-service", "x")
		if !errors.Is(execErr, unix.ENOENT) {
			t.Errorf("%s: status = %v, want ENOENT", via, execErr)
		}
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 127 {
			t.Errorf("%s ended with %v, want exit 127", via, waitErr)
		}
	}
}

// TestNoClone3FilterShape: the program checks the architecture first, and
// answers clone3 and x32's clone3 with ENOSYS.
func TestNoClone3FilterShape(t *testing.T) {
	prog, err := NoClone3Filter()
	if err != nil {
		t.Skip(err)
	}
	if prog[0].K != 4 {
		t.Errorf("first instruction loads offset %d, want the arch (4)", prog[0].K)
	}
	last := prog[len(prog)-1]
	if last.K != unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS) {
		t.Errorf("the refusal returns %#x, want ERRNO|ENOSYS", last.K)
	}
}
