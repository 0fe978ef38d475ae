//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/supervisor"
)

// What a caller that holds a running instance for a test (package
// runtime/harness, for toritest) reaches of it beyond the supervisor: its
// life tied to the caller's process, a command run inside it, the host's own
// state socket.

// TieToProcess ends the capsule when this process ends: it holds a
// connection to the capsule's init open, which the kernel closes when the
// process exits, even by SIGKILL; the init then exits, and the kernel kills
// everything in the capsule's PID namespace. Only the caller's process holds
// the connection (close-on-exec). What the kernel does not tie to a process
// (the overlay's mount, cgroups, files) is left for SweepStale.
func (i *Instance) TieToProcess() (*net.UnixConn, error) {
	conn, err := capinit.DieWithHost(context.Background(), i.paths.InitSocket, initAnswerTimeout)
	if err != nil {
		return nil, fmt.Errorf("tying the capsule to this process: %w", err)
	}
	return conn, nil
}

// ExecError is a command run by ExecOutput that did not exit 0.
type ExecError struct {
	Argv   []string
	Exit   supervisor.Exit
	Output []byte
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("%s: %s: %s", strings.Join(e.Argv, " "), e.Exit.String(), strings.TrimSpace(string(e.Output)))
}

// ExecOutput runs argv inside the capsule, in service's cgroup and with its
// environment (as an exec probe runs), and returns its output (stdout and
// stderr together). A status other than 0 is an *ExecError. When ctx ends
// first the process is killed.
func (i *Instance) ExecOutput(ctx context.Context, service string, argv ...string) ([]byte, error) {
	s, g := i.Manifest.Service(service), i.madeGroup(service)
	if s == nil || (g == nil && i.group != nil) { // no group at all: rootless.go
		return nil, fmt.Errorf("exec in %s: no such running service", service)
	}
	if len(argv) == 0 {
		return nil, errors.New("exec: no command")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := i.startProcess(ctx, service+" (exec)", argv, serviceEnv(i.Manifest, s, i.Release, i.BuildSHA), g, w, w, nil)
	w.Close()
	if err != nil {
		return nil, err
	}
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r) // ends when every writer (the tree) is gone
		out <- b
	}()
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Signal(9)
		<-p.Done()
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), ctx.Err())
	}
	var b []byte
	select {
	case b = <-out:
	case <-time.After(time.Second): // a child it left behind still holds the pipe
		_ = r.SetReadDeadline(time.Now())
		b = <-out
	}
	if e := p.Exit(); e.Code != 0 || e.Signal != 0 {
		return b, &ExecError{Argv: argv, Exit: e, Output: b}
	}
	return b, nil
}

// AdminSocket is the host's own socket of the instance's state proxy (the
// admin one): any key, no rate limit.
func (i *Instance) AdminSocket() string { return i.paths.AdminSocket }
