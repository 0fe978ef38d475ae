package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Runner starts services. The runtime implements it over the capsule's
// init (a process born in its cgroup, tracked by pidfd); ExecRunner
// implements it over os/exec for tests and development.
type Runner interface {
	// Start starts the named service. out's files belong to the caller,
	// which closes them once Start returns: the runner passes them on (to
	// the child, or as SCM_RIGHTS) before returning. A start error that
	// retrying cannot fix implements interface{ Permanent() bool }
	// returning true (see IsPermanent).
	Start(ctx context.Context, name string, out Output) (Process, error)
}

// Output is where a started service writes, and how it talks back.
type Output struct {
	// Stdout and Stderr are the write ends of the supervisor's log pipes.
	Stdout, Stderr *os.File
	// NotifySocket is the host path of the service's sd_notify socket, ""
	// when its readiness is not notify. The runner sets NOTIFY_SOCKET in
	// the service's environment to the path under which the service sees
	// this socket (inside a capsule: where it is bound).
	NotifySocket string
}

// Process is one started service: its main process and its whole tree.
// A Process may also implement
//
//	BelongsTo(pid int) bool
//
// reporting whether a host pid is in its tree (the runtime answers from the
// service's cgroup); it decides whose sd_notify messages are accepted.
// Without it only the main process's own messages are.
type Process interface {
	// Pid is the main process's pid, for display.
	Pid() int
	// Signal sends sig to the main process (by pidfd in the runtime). It is
	// not an error if the process already ended.
	Signal(sig syscall.Signal) error
	// Kill kills the whole tree (cgroup.kill in the runtime). The
	// supervisor also calls it after the main process ended, so that
	// nothing of a run survives into the next; it must be safe then.
	Kill() error
	// Done is closed once the main process ended and Exit is valid.
	Done() <-chan struct{}
	Exit() Exit
	// Stats reads usage; it may fail once the process ended.
	Stats() (Stats, error)
}

// Exit says how a process ended.
type Exit struct {
	Code      int            `json:"code"`             // exit status, or 128+signal
	Signal    syscall.Signal `json:"signal,omitempty"` // the signal that ended it
	OOMKilled bool           `json:"oom_killed,omitempty"`
	Err       string         `json:"error,omitempty"` // the runner lost track of it
}

// String says it for people: "exited with status 1", "killed by SIGKILL".
func (e Exit) String() string {
	switch {
	case e.Err != "":
		return "lost: " + e.Err
	case e.OOMKilled:
		return "killed by the kernel at its memory limit (OOM)"
	case e.Signal != 0:
		return "killed by " + unix.SignalName(e.Signal)
	default:
		return fmt.Sprintf("exited with status %d", e.Code)
	}
}

// reason classifies an exit.
func (e Exit) reason() Reason {
	switch {
	case e.OOMKilled:
		return ReasonOOMKilled
	case e.Err != "":
		return ReasonLost
	case e.Signal != 0 || e.Code != 0:
		return ReasonCrashed
	default:
		return ReasonExited
	}
}

// Stats is a service's resource usage.
type Stats struct {
	MemoryBytes uint64        `json:"memory_bytes"` // current memory (cgroup) or RSS (ExecRunner)
	CPU         time.Duration `json:"cpu"`          // CPU time used, user + system
	Pids        int           `json:"pids,omitempty"`
}

// IsPermanent reports whether err says that retrying cannot help: it, or
// an error it wraps, has a Permanent() bool method returning true.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// StartError is a failed start, with whether retrying can help.
type StartError struct {
	Service string
	Err     error
	// Perm is true for an error restarting cannot fix: a missing binary,
	// no permission, an exec format error.
	Perm bool
}

func (e *StartError) Error() string   { return fmt.Sprintf("starting %s: %v", e.Service, e.Err) }
func (e *StartError) Unwrap() error   { return e.Err }
func (e *StartError) Permanent() bool { return e.Perm }

// PermanentErrno says whether err is (or wraps) an exec error that a
// restart cannot fix: a missing binary, no permission, an exec format error.
func PermanentErrno(err error) bool {
	for _, e := range []error{unix.ENOENT, unix.EACCES, unix.ENOEXEC, unix.EPERM, unix.ENOTDIR, unix.ELOOP, unix.ENAMETOOLONG} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func unixSignalName(sig syscall.Signal) string { return unix.SignalName(sig) }
