package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary plays both parts: the trampoline (ExecCommand) and, with
// TORI_CLONE3_PROBE set, the service it execs, which prints what clone3
// answers it (clone3 with size 0 creates nothing: EINVAL when allowed).
func init() {
	if len(os.Args) > 1 && os.Args[1] == ExecCommand {
		os.Exit(runExec(os.Args[2:]))
	}
	if os.Getenv("TORI_CLONE3_PROBE") == "1" {
		_, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		fmt.Printf("clone3: %v\n", errno)
		os.Exit(0)
	}
}

// trampoline starts the test binary as the init does: through ExecCommand
// with a status pipe on fd 3, to exec path with args.
func trampoline(t *testing.T, path string, args ...string) (out string, execErr, waitErr error) {
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
	cmd := exec.Command(self, append([]string{ExecCommand, trampolineMode(false, true), "3", path}, args...)...)
	cmd.Env = append(os.Environ(), "TORI_CLONE3_PROBE=1")
	cmd.ExtraFiles = []*os.File{w}
	var b strings.Builder
	cmd.Stdout = &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	execErr = readExecStatus(r)
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
	out, execErr, waitErr := trampoline(t, self, "probe")
	if execErr != nil || waitErr != nil {
		t.Fatalf("trampoline: exec %v, wait %v (output %q)", execErr, waitErr, out)
	}
	if want := "clone3: " + unix.ENOSYS.Error(); !strings.Contains(out, want) {
		t.Errorf("through the trampoline the service says %q, want %q", strings.TrimSpace(out), want)
	}
}

// TestTrampolineExecError: a program that cannot be exec'd is reported on
// the status pipe with its errno (the init's start then fails, as a plain
// fork/exec would), and the trampoline exits 127.
func TestTrampolineExecError(t *testing.T) {
	_, execErr, waitErr := trampoline(t, "/nonexistent/tori-service", "x")
	if !errors.Is(execErr, unix.ENOENT) {
		t.Errorf("status = %v, want ENOENT", execErr)
	}
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) || ee.ExitCode() != 127 {
		t.Errorf("trampoline ended with %v, want exit 127", waitErr)
	}
}

// TestNoClone3FilterShape: the program checks the architecture first, and
// answers clone3 and x32's clone3 with ENOSYS.
func TestNoClone3FilterShape(t *testing.T) {
	prog, err := noClone3Filter()
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
