package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/specs"
)

// ExitInfo says how a service ended.
type ExitInfo struct {
	Code      int            `json:"code"`             // exit status, or 128+signal
	Signal    syscall.Signal `json:"signal,omitempty"` // the signal that ended it, if any
	OOMKilled bool           `json:"oom_killed,omitempty"`
	Err       string         `json:"error,omitempty"` // the connection to the init was lost, for example
}

// Reason is a short word for how the service ended: exited, killed,
// oom-killed, lost.
func (e ExitInfo) Reason() string {
	switch {
	case e.OOMKilled:
		return "oom-killed"
	case e.Err != "":
		return "lost"
	case e.Signal != 0:
		return "killed by " + unix.SignalName(e.Signal)
	default:
		return fmt.Sprintf("exited with status %d", e.Code)
	}
}

// StartError is a service that could not be started. Retrying cannot fix an
// exec error (ENOENT, EACCES, ENOEXEC): Permanent says so, for the
// supervisor's restart decision.
type StartError struct {
	Service   string
	Errno     string
	Msg       string
	Permanent bool
}

func (e *StartError) Error() string { return fmt.Sprintf("starting %s: %s", e.Service, e.Msg) }

// Service is a running service of an instance: a process started by the
// capsule's init, tracked by pidfd (never by its pid number), in its own
// cgroup.
type Service struct {
	Name  string
	Pid   int // in the capsule's PID namespace, for display
	Group *cgroups.Group

	pidfd   *os.File
	conn    *net.UnixConn
	oomBase uint64
	done    chan struct{}
	mu      sync.Mutex // guards exit
	exit    ExitInfo
}

// StartService starts the named service in its own cgroup (with its
// limits) through the capsule's init. stdout and stderr receive its output.
func (i *Instance) StartService(ctx context.Context, name string, stdout, stderr *os.File) (*Service, error) {
	s := i.Manifest.Service(name)
	if s == nil {
		return nil, fmt.Errorf("capsule %s has no service %q", i.Manifest.Name, name)
	}
	g := i.services[name]
	if g == nil {
		var unenforced []string
		var err error
		g, unenforced, err = i.group.Child("svc-"+name, toCgroupResources(s.Resources))
		if err != nil {
			return nil, fmt.Errorf("cgroup of service %s: %w", name, err)
		}
		for _, u := range unenforced {
			i.Log.Warn().Str(FieldService, name).Str("limit", u).Msg("limit not enforced on this host")
		}
		i.services[name] = g
	}
	uid, gid, err := lookupUser(i.Manifest.User)
	if err != nil {
		return nil, err
	}
	cgFiles, err := g.SpawnFiles()
	if err != nil {
		return nil, err
	}
	defer closeFiles(cgFiles)
	oomBase, _ := g.OOMKills()
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: i.paths.Socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("starting %s: the capsule's init does not answer at %s: %w", name, i.paths.Socket, err)
	}
	req := initRequest{Op: "start", Service: name, Args: s.Command, Env: serviceEnv(i.Manifest, s, i.Release, i.BuildSHA),
		Dir: capsuleApp, UID: uid, GID: gid, CgroupVersion: g.Version()}
	fds := []int{int(stdout.Fd()), int(stderr.Fd())}
	for _, f := range cgFiles {
		fds = append(fds, int(f.Fd()))
	}
	if err := writeMsg(conn, req, fds); err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	var rep initReply
	files, err := readMsg(conn, &rep)
	if err != nil {
		conn.Close()
		closeFiles(files)
		return nil, fmt.Errorf("starting %s: no answer from the capsule's init: %w", name, err)
	}
	if !rep.OK {
		conn.Close()
		closeFiles(files)
		return nil, &StartError{Service: name, Errno: rep.Errno, Msg: rep.Error, Permanent: permanentErrno(rep.Errno)}
	}
	if len(files) != 1 {
		conn.Close()
		closeFiles(files)
		return nil, fmt.Errorf("starting %s: the init sent %d files, expected a pidfd", name, len(files))
	}
	svc := &Service{Name: name, Pid: rep.Pid, Group: g, pidfd: files[0], conn: conn, oomBase: oomBase, done: make(chan struct{})}
	go svc.awaitExit()
	i.Log.Info().Str(FieldService, name).Int(FieldPID, rep.Pid).Msg("service started")
	return svc, nil
}

func permanentErrno(e string) bool {
	switch e {
	case "ENOENT", "EACCES", "ENOEXEC", "EPERM", "ENOTDIR", "ELOOP", "ENAMETOOLONG":
		return true
	}
	return false
}

// awaitExit waits for the init's exit message (or a lost connection).
func (s *Service) awaitExit() {
	var ex initExit
	files, err := readMsg(s.conn, &ex)
	closeFiles(files)
	_ = s.conn.Close()
	info := ExitInfo{Code: ex.Code, Signal: syscall.Signal(ex.Signal)}
	if err != nil {
		info = ExitInfo{Code: -1, Err: "lost the capsule's init: " + err.Error()}
	}
	if n, err := s.Group.OOMKills(); err == nil && n > s.oomBase && info.Signal == unix.SIGKILL {
		info.OOMKilled = true
	}
	s.mu.Lock()
	s.exit = info
	s.mu.Unlock()
	_ = s.pidfd.Close()
	close(s.done)
}

// Done is closed when the service has exited.
func (s *Service) Done() <-chan struct{} { return s.done }

// Exit is how the service ended; valid once Done is closed.
func (s *Service) Exit() ExitInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Wait waits for the service to exit or ctx to end.
func (s *Service) Wait(ctx context.Context) (ExitInfo, error) {
	select {
	case <-s.done:
		return s.Exit(), nil
	case <-ctx.Done():
		return ExitInfo{}, ctx.Err()
	}
}

// Signal sends sig to the service's main process through its pidfd, so a
// recycled pid number can never be hit.
func (s *Service) Signal(sig syscall.Signal) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	err := unix.PidfdSendSignal(int(s.pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Kill kills the service's whole process tree through its cgroup.
func (s *Service) Kill() error { return s.Group.Kill() }

// Stop sends the service's stop signal, waits up to its stop timeout, then
// kills its whole tree; it returns how the service ended.
func (s *Service) Stop(ctx context.Context, spec *specs.Service) ExitInfo {
	_ = s.Signal(spec.StopSignal.Num)
	tctx, cancel := context.WithTimeout(ctx, spec.StopTimeout)
	defer cancel()
	if info, err := s.Wait(tctx); err == nil {
		// The main process is gone; children it left behind go with the cgroup.
		_ = s.Kill()
		return info
	}
	_ = s.Kill()
	<-s.done
	return s.Exit()
}

// lookupUser resolves the manifest's user: uid[:gid], or a name looked up in
// the host's /etc/passwd (what a capsule on the host layer sees).
func lookupUser(spec string) (uint32, uint32, error) {
	if spec == "" {
		return 0, 0, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	if uid, err := strconv.ParseUint(name, 10, 32); err == nil {
		gid := uid
		if hasGroup {
			g, _ := strconv.ParseUint(group, 10, 32)
			gid = g
		}
		return uint32(uid), uint32(gid), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", spec, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(uid), uint32(gid), nil
}
