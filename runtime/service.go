//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/runtime/listeners"
	"github.com/tori-run/tori-run/supervisor"
)

// startFailure is the init's account of a failed start: its message, and
// the errno (by name) it failed with, which errors.Is can test.
type startFailure struct {
	msg   string
	errno syscall.Errno
}

func (e *startFailure) Error() string { return e.msg }
func (e *startFailure) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}

// errnoNamed is the errno unix.ErrnoName calls name (0 if none).
func errnoNamed(name string) syscall.Errno {
	for e := syscall.Errno(1); e < 4096 && name != ""; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}

// Service is a running service of an instance: a process started by the
// capsule's init, tracked by pidfd (never by its pid number), in its own
// cgroup.
type Service struct {
	Name    string
	Pid     int // in the capsule's PID namespace, for display
	HostPid int // in the host's PID namespace, for display
	Group   *cgroups.Group

	pidfd   *os.File
	conn    *net.UnixConn // nil for an adopted service: its exit comes on the adopt connection
	oomBase uint64
	done    chan struct{}
	endOnce sync.Once
	mu      sync.Mutex // guards exit and pidfd
	exit    supervisor.Exit
}

// StartService starts the named service of the plan through the capsule's
// init, in the cgroup Create made for it. stdout and stderr receive its
// output; env is added to the service's environment (NOTIFY_SOCKET, for
// one).
func (i *Instance) StartService(ctx context.Context, name string, stdout, stderr *os.File, env ...string) (*Service, error) {
	s := i.plan.Service(name)
	if s == nil {
		return nil, fmt.Errorf("capsule %s has no service %q", i.plan.Capsule, name)
	}
	g := i.madeGroup(name)
	if g == nil && i.group != nil { // no cgroups at all: rootless.go
		return nil, fmt.Errorf("starting %s: its cgroup was not made", name)
	}
	// The init keeps a read end of each output pipe while the service lives,
	// so that its output survives a dead tori-run until a new one adopts it.
	keep := keepReadEnds(stdout, stderr)
	defer closeFiles(keep)
	listen := i.sockets.Files(s.Sockets)
	env = append(slices.Clone(s.Env), append(env, listeners.Env(s.Sockets)...)...)
	return i.startProcess(ctx, name, s.Argv, env, g, stdout, stderr, listen, keep...)
}

// keepReadEnds opens a second read end of each pipe among files (through
// /proc/self/fd, which Linux allows for pipes); other files get none.
func keepReadEnds(files ...*os.File) []*os.File {
	var out []*os.File
	for _, f := range files {
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return nil // all or none: adopt expects both streams
		}
		r, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDONLY, 0)
		if err != nil {
			closeFiles(out)
			return nil
		}
		out = append(out, r)
	}
	return out
}

// startProcess asks the init to start argv in cgroup g and returns its
// handle. label names it in messages and logs.
func (i *Instance) startProcess(ctx context.Context, label string, argv, env []string, g *cgroups.Group, stdout, stderr *os.File, listen []*os.File, keep ...*os.File) (*Service, error) {
	uid, gid := i.plan.UID, i.plan.GID
	var err error
	req := capinit.Request{Op: capinit.OpStart, Service: label, Args: argv, Env: env,
		Dir: capsuleApp, UID: uid, GID: gid, Keep: len(keep), Listen: len(listen)}
	var cgFiles []*os.File
	var oomBase uint64
	switch {
	case g == nil: // no cgroups (rootless.go)
	case g.Version() == 2:
		req.CgroupVersion = 2
		// The init opens the leaf in its own cgroup namespace: no cgroup
		// file of the host goes in.
		if req.Cgroup, err = filepath.Rel(i.group.Path(), g.Path()); err != nil {
			return nil, fmt.Errorf("starting %s: cgroup %s is not under the capsule's %s", label, g.Path(), i.group.Path())
		}
		oomBase, _ = g.OOMKills()
	default:
		req.CgroupVersion = g.Version()
		// v1 has no cgroup namespace here: the host opens the tasks files
		// (files lead nowhere) and, on a hybrid host, a detached copy of
		// the cgroup2 folder.
		if cgFiles, err = g.SpawnFiles(); err != nil {
			return nil, err
		}
		// Closed off the start's path: dropping a detached mount's last fd
		// waits for an RCU grace period.
		defer func() { go closeFiles(cgFiles) }()
		req.CgroupFiles = len(cgFiles)
		oomBase, _ = g.OOMKills()
	}
	// The files in the order of the request's groups; the sockets last.
	files := append(append(append([]*os.File{stdout, stderr}, keep...), cgFiles...), listen...)
	st, err := capinit.Start(ctx, i.paths.InitSocket, initAnswerTimeout, req, files)
	var refused *capinit.Refused
	if errors.As(err, &refused) {
		fail := &startFailure{msg: refused.Msg, errno: errnoNamed(refused.Errno)}
		return nil, &supervisor.StartError{Service: label, Err: fail, Perm: supervisor.PermanentErrno(fail)}
	}
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	svc := &Service{Name: label, Pid: st.Pid, HostPid: pidfdPid(st.Pidfd), Group: g, pidfd: st.Pidfd, conn: st.Conn, oomBase: oomBase, done: make(chan struct{})}
	go svc.awaitExit()
	i.Log.Debug().Str(FieldService, label).Int(FieldPID, svc.HostPid).Msg("process started")
	return svc, nil
}

// Exec runs argv inside the capsule, in service's cgroup and with its
// environment, and waits for it: nil if it exits 0. When ctx ends first the
// process is killed. Exec probes run this way.
func (i *Instance) Exec(ctx context.Context, service string, argv []string) error {
	s, g := i.plan.Service(service), i.madeGroup(service)
	if s == nil || (g == nil && i.group != nil) { // no group at all: rootless.go
		return fmt.Errorf("exec in %s: no such running service", service)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := i.startProcess(ctx, service+" (probe)", argv, s.Env, g, w, w, nil)
	w.Close()
	if err != nil {
		return err
	}
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 4<<10))
		out <- b
	}()
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.Signal(unix.SIGKILL)
		<-p.Done()
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), ctx.Err())
	}
	if e := p.Exit(); e.Code != 0 || e.Signal != 0 {
		_ = r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		return fmt.Errorf("%s: %s: %s", strings.Join(argv, " "), e.String(), strings.TrimSpace(string(<-out)))
	}
	return nil
}

// initAnswerTimeout bounds a request to the capsule's init (generous: a
// TCG guest is 10-20x slower than real hardware).
const initAnswerTimeout = 30 * time.Second

// pidfdPid reads the host pid behind a pidfd (its fdinfo's Pid: line); 0
// if it cannot be read. For display only: the pidfd is what is used.
func pidfdPid(f *os.File) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// awaitExit waits for the init's exit message (or a lost connection).
func (s *Service) awaitExit() {
	ex, err := capinit.WaitExit(s.conn)
	_ = s.conn.Close()
	if err != nil {
		s.ended(supervisor.Exit{Code: -1, Err: "lost the capsule's init: " + err.Error()})
		return
	}
	s.ended(exitInfo(ex))
}

func exitInfo(ex capinit.Exit) supervisor.Exit {
	return supervisor.Exit{Code: ex.Code, Signal: syscall.Signal(ex.Signal)}
}

// ended records how the service ended (an OOM kill is read from its
// cgroup) and closes Done; only the first call counts.
func (s *Service) ended(info supervisor.Exit) {
	s.endOnce.Do(func() {
		if s.Group != nil { // nil: no cgroups (rootless.go)
			if n, err := s.Group.OOMKills(); err == nil && n > s.oomBase && info.Signal == unix.SIGKILL {
				info.OOMKilled = true
			}
		}
		s.mu.Lock()
		s.exit = info
		// Closed under mu: Signal uses the descriptor under mu, so it can
		// never reach a number the kernel has since given to another file.
		_ = s.pidfd.Close()
		s.pidfd = nil
		s.mu.Unlock()
		close(s.done)
	})
}

// Done is closed when the service has exited.
func (s *Service) Done() <-chan struct{} { return s.done }

// Exit is how the service ended; valid once Done is closed.
func (s *Service) Exit() supervisor.Exit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Wait waits for the service to exit or ctx to end.
func (s *Service) Wait(ctx context.Context) (supervisor.Exit, error) {
	select {
	case <-s.done:
		return s.Exit(), nil
	case <-ctx.Done():
		return supervisor.Exit{}, ctx.Err()
	}
}

// Signal sends sig to the service's main process through its pidfd, so a
// recycled pid number can never be hit.
func (s *Service) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidfd == nil {
		return nil // ended
	}
	err := unix.PidfdSendSignal(int(s.pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Kill kills the service's whole process tree through its cgroup.
// Without a cgroup (rootless.go) only the main process is killed.
func (s *Service) Kill() error {
	if s.Group == nil {
		return s.Signal(unix.SIGKILL)
	}
	return s.Group.Kill()
}
