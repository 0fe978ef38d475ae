//go:build linux

package capinit

import (
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ExecCommand is the hidden argument of the service trampoline: tori-run's
// init starts a service as
//
//	/proc/self/exe capsule-exec MODE STATUS-FD PATH ARGV0 ARGS...
//
// when it must act between fork and exec, which Go cannot. MODE is a comma
// list of (Mode):
//
//   - listen-pid: the service gets sockets (fds 3.., LISTEN_FDS); set
//     LISTEN_PID to the trampoline's pid, which the service keeps across
//     exec, where systemd sets it (runtime/sockets.go).
//   - no-clone3: the init's own seccomp filter lets clone3 through (cgroup
//     v2 hosts, where the init needs clone3(CLONE_INTO_CGROUP) to start a
//     service born in its cgroup; runtime's capsuleSeccomp). Add one more filter,
//     clone3 -> ENOSYS and everything else left to the capsule's filter:
//     no service can call clone3, whose namespace flags (CLONE_NEWUSER …)
//     no filter can see because they are passed in memory. ENOSYS is
//     moby's answer too: glibc and Go fall back to clone(2), whose flags
//     the capsule's filter checks.
//
// STATUS-FD is the write end of a close-on-exec pipe: a successful exec
// closes it unwritten; a failure writes its errno in decimal before the
// trampoline exits 127, so that the init reports a missing or unexecutable
// program as a failed start, as a plain fork/exec would (Go's own
// forkExec does the same).
//
// In tori-run itself (the fallback init) the work is done by a C
// constructor (runtime/trampoline) before the Go runtime starts, when the
// binary is built with cgo; Exec is the same in Go, the only path of the
// small pure-Go cmd/tori-init, whose runtime starts in about a millisecond.
const ExecCommand = "capsule-exec"

// clone3Nr is clone3's number: one number for every architecture since the
// tables were unified (Linux 5.3), the compat ABIs (i386, arm) included.
const clone3Nr = 435

// x32SyscallBit marks x32 system calls on amd64, which share the native
// AUDIT_ARCH_X86_64.
const x32SyscallBit = 0x40000000

// auditArches are the AUDIT_ARCH values of the native and the compat ABI.
func auditArches() (native, compat uint32, err error) {
	switch goruntime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_I386, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, unix.AUDIT_ARCH_ARM, nil
	}
	return 0, 0, fmt.Errorf("the clone3 filter knows no AUDIT_ARCH for %s", goruntime.GOARCH)
}

// NoClone3Filter is the trampoline's program: for the native and the compat
// architecture, clone3 (x32's too) answers ENOSYS and every other system
// call is allowed (the capsule's own filter, stacked, still decides on it);
// any other architecture cannot be this machine's and kills the process, as
// libseccomp's default for a foreign architecture does.
func NoClone3Filter() ([]unix.SockFilter, error) {
	native, compat, err := auditArches()
	if err != nil {
		return nil, err
	}
	const (
		offNr   = 0 // struct seccomp_data
		offArch = 4
	)
	raw, err := bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offArch, Size: 4},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: native, SkipTrue: 1},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: compat, SkipFalse: 4}, // -> 7
		/* 3 */ bpf.LoadAbsolute{Off: offNr, Size: 4},
		/* 4 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(x32SyscallBit)},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: clone3Nr, SkipTrue: 2}, // -> 8
		/* 6 */ bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
		/* 7 */ bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		/* 8 */ bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	})
	if err != nil {
		return nil, err
	}
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return prog, nil
}

// denyClone3 installs noClone3Filter on every thread of the process. With
// no_new_privs set (every capsule's init has it: runtime's buildSpec) no capability
// is needed; setting it again changes nothing.
func denyClone3() error {
	prog, err := NoClone3Filter()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER) of the clone3 filter: %w", errno)
	}
	return nil
}

// Trampoline modes (ExecCommand).
const (
	modeListenPid = "listen-pid"
	modeNoClone3  = "no-clone3"
)

// Mode is the MODE argument of ExecCommand.
func Mode(listenPid, noClone3 bool) string {
	var m []string
	if listenPid {
		m = append(m, modeListenPid)
	}
	if noClone3 {
		m = append(m, modeNoClone3)
	}
	if len(m) == 0 {
		return "-"
	}
	return strings.Join(m, ",")
}

// Exec is the trampoline (ExecCommand); args are what follows it. It
// returns only on failure, with the exit code.
func Exec(args []string) int {
	// Nothing of the init's is left here, but the trampoline stays as
	// closed as the init was until the service's own execve.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	if len(args) < 4 {
		fmt.Fprintf(os.Stderr, "tori-run %s: want MODE STATUS-FD PATH ARGV0 [ARGS...], got %q\n", ExecCommand, args)
		return 127
	}
	mode := strings.Split(args[0], ",")
	fd, err := strconv.Atoi(args[1])
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "tori-run %s: status fd %q: a number from 3 on expected\n", ExecCommand, args[1])
		return 127
	}
	unix.CloseOnExec(fd)
	status := os.NewFile(uintptr(fd), "exec-status")
	path, argv := args[2], args[3:]
	fail := func(errno unix.Errno, err error) int {
		fmt.Fprintf(os.Stderr, "tori-run %s %s: %v\n", ExecCommand, path, err)
		_, _ = status.WriteString(strconv.Itoa(int(errno)))
		return 127
	}
	env := os.Environ()
	for _, m := range mode {
		switch m {
		case modeListenPid:
			env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
		case modeNoClone3:
			if err := denyClone3(); err != nil {
				errno := unix.EPERM
				_ = errors.As(err, &errno)
				return fail(errno, err)
			}
		case "-":
		default:
			return fail(unix.EINVAL, fmt.Errorf("unknown mode %q (want %s, %s or -)", m, modeListenPid, modeNoClone3))
		}
	}
	err = unix.Exec(path, argv, env)
	errno := unix.ENOEXEC
	_ = errors.As(err, &errno)
	return fail(errno, err)
}

// ReadExecStatus reads the trampoline's status pipe until it is closed: nil
// when the service's program was exec'd, else the errno the trampoline
// wrote.
func ReadExecStatus(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 64))
	if err != nil {
		return fmt.Errorf("the trampoline's status pipe: %w", err)
	}
	if len(b) == 0 {
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return fmt.Errorf("the trampoline's status pipe: %q, an errno expected", b)
	}
	return unix.Errno(n)
}

// clone3Open reports whether this process may call clone3 under a seccomp
// filter: then the services it starts go through the trampoline. clone3
// with a size of 0 creates nothing: the kernel answers EINVAL, a filter
// that refuses clone3 ENOSYS (or EPERM). Without a filter (seccomp:
// unconfined) there is nothing to close; a status that cannot be read
// counts as filtered (the trampoline then closes clone3 anyway).
func clone3Open() bool {
	if _, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0); errno != unix.EINVAL {
		return false
	}
	b, err := os.ReadFile("/proc/self/status")
	return err != nil || !strings.Contains(string(b), "\nSeccomp:\t0\n")
}
