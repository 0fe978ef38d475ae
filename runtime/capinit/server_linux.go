//go:build linux

package capinit

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups/spawn"
)

// initFD is where the init finds its listening socket (the first ExtraFile).
const initFD = 3

// capsuleCgroupMount is where the init sees its cgroup namespace's cgroup2
// mount (v2 hosts): the capsule's cgroup is its root.
const capsuleCgroupMount = "/sys/fs/cgroup"

// Run is the capsule's PID 1 (InitCommand). It returns the process's exit status.
func Run() int {
	// First: no process of the capsule may trace the init, read its memory
	// or take its fds (pidfd_getfd, /proc/1/fd): it holds every service's
	// output pipes and the host's channel. A non-dumpable process's /proc
	// files need CAP_SYS_PTRACE, which a capsule never has. execve made us
	// dumpable again; forked services stay non-dumpable until their own
	// execve.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "tori-run init: PR_SET_DUMPABLE: %v\n", err)
		return 1
	}
	f := os.NewFile(initFD, "init.sock")
	l, err := net.FileListener(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tori-run init: no listening socket on fd %d: %v\n", initFD, err)
		return 1
	}
	_ = f.Close()
	s := &initServer{procs: map[int]*initProc{}, trampoline: clone3Open()}
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	go s.serve(l.(*net.UnixListener))
	for sig := range sigc {
		if sig == unix.SIGCHLD {
			s.reap()
			continue
		}
		// PID 1 gets no default signal actions: forward what the host sent
		// to every service; the host's supervisor decides what comes next.
		s.forward(sig.(syscall.Signal))
	}
	return 0
}

type initServer struct {
	// mu guards procs, and is held from fork to recording the pid so that
	// the reaper never reaps a child it does not know yet.
	mu    sync.Mutex
	procs map[int]*initProc
	// held are the capsule's listening sockets, kept for the next tori-run
	// (runtime/sockets.go); heldNames names them. Guarded by mu.
	held      []*os.File
	heldNames []string
	// trampoline: the init's own filter lets clone3 through (cgroup v2
	// hosts, capsuleSeccomp), so every service starts through ExecCommand,
	// which closes it before the service runs.
	trampoline bool
}

type initProc struct {
	service string
	conn    *net.UnixConn
	keep    []*os.File // kept while the service lives (Request.Keep)
	shared  bool       // conn carries the exits of several services (adopt)
}

func (s *initServer) serve(l *net.UnixListener) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			fmt.Fprintf(os.Stderr, "tori-run init: accept: %v\n", err)
			return
		}
		go s.handle(c)
	}
}

// handle serves one connection: one request. A start's connection stays
// open for the exit message.
func (s *initServer) handle(c *net.UnixConn) {
	if err := CheckPeerOutside(c); err != nil {
		fmt.Fprintf(os.Stderr, "tori-run init: refused a connection: %v\n", err)
		_ = c.Close()
		return
	}
	var req Request
	files, err := ReadMsg(c, &req)
	defer CloseFiles(files)
	if err != nil {
		_ = WriteMsg(c, Reply{Error: err.Error()}, nil)
		_ = c.Close()
		return
	}
	switch req.Op {
	case OpStart:
		if err := s.start(&req, files, c); err != nil {
			rep := Reply{Error: err.Error()}
			var errno syscall.Errno
			if errors.As(err, &errno) {
				rep.Errno = unix.ErrnoName(errno)
			}
			_ = WriteMsg(c, rep, nil)
			_ = c.Close()
		}
	case OpAdopt:
		s.adopt(c)
	case OpHold:
		s.hold(&req, files)
		_ = WriteMsg(c, Reply{OK: true}, nil)
		_ = c.Close()
	case OpShutdown:
		_ = WriteMsg(c, Reply{OK: true}, nil)
		os.Exit(0)
	case OpDieWithHost:
		_ = WriteMsg(c, Reply{OK: true}, nil)
		go func() { _, _ = c.Read(make([]byte, 1)); os.Exit(0) }()
	default:
		_ = WriteMsg(c, Reply{Error: fmt.Sprintf("unknown op %q", req.Op)}, nil)
		_ = c.Close()
	}
}

// start forks and execs a service, born in its cgroup, and answers on c
// with its pid and a pidfd. The answer is written before the reaper can
// see the child (s.mu is held throughout), so the host always reads the
// answer before the exit message, even for a service that exits at once.
func (s *initServer) start(req *Request, files []*os.File, c *net.UnixConn) error {
	if len(req.Args) == 0 || req.Keep < 0 || req.CgroupFiles < 0 || req.Listen < 0 || len(files) != 2+req.Keep+req.CgroupFiles+req.Listen {
		return fmt.Errorf("start %s: expected args, stdout, stderr, %d kept files, %d cgroup files and %d sockets, got %d files", req.Service, req.Keep, req.CgroupFiles, req.Listen, len(files))
	}
	cgFiles := files[2+req.Keep : 2+req.Keep+req.CgroupFiles]
	for _, f := range cgFiles {
		if err := spawn.Contained(f); err != nil {
			return fmt.Errorf("start %s: %w", req.Service, err)
		}
	}
	if req.Cgroup != "" {
		if req.CgroupVersion != 2 || len(cgFiles) != 0 {
			return fmt.Errorf("start %s: a cgroup by name is for cgroup v2 alone", req.Service)
		}
		dir, err := spawn.OpenNamespaced(capsuleCgroupMount, req.Cgroup)
		if err != nil {
			return fmt.Errorf("start %s: %w", req.Service, err)
		}
		defer dir.Close()
		cgFiles = []*os.File{dir}
	}
	listen := files[2+req.Keep+req.CgroupFiles:]
	path := req.Args[0]
	switch {
	case filepath.IsAbs(path):
	case strings.Contains(path, "/"):
		path = filepath.Join(req.Dir, path)
	default:
		lp, err := lookPath(path, EnvValue(req.Env, "PATH"))
		if err != nil {
			return fmt.Errorf("%s: %w", path, unix.ENOENT)
		}
		path = lp
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	pidfd := -1
	cmd := &exec.Cmd{
		Path: path, Args: req.Args, Env: req.Env, Dir: req.Dir,
		Stdin: devnull, Stdout: files[0], Stderr: files[1],
		SysProcAttr: &syscall.SysProcAttr{PidFD: &pidfd},
	}
	if req.UID != 0 || req.GID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: req.UID, Gid: req.GID}
	}
	var execStatus *os.File
	if len(listen) > 0 || s.trampoline {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("start %s: the trampoline's status pipe: %w", req.Service, err)
		}
		defer r.Close()
		defer w.Close()
		execStatus = r
		// The sockets are fds 3.. (LISTEN_FDS), the status pipe after them.
		cmd.ExtraFiles = append(append([]*os.File(nil), listen...), w)
		fd := 2 + len(cmd.ExtraFiles)
		// /proc/self/exe is the init's binary to the child, even after
		// Credential (a process may always read its own exe link).
		cmd.Path = "/proc/self/exe"
		cmd.Args = append([]string{os.Args[0], ExecCommand, Mode(len(listen) > 0, s.trampoline), strconv.Itoa(fd), path}, req.Args...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := func() error { return spawn.StartIn(req.CgroupVersion, cgFiles, cmd) }
	if req.CgroupVersion == 0 { // no cgroups: a rootless capsule (runtime/rootless.go)
		start = cmd.Start
	}
	if err := start(); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("exec %s: %w", path, pe.Err)
		}
		return err
	}
	if execStatus != nil {
		// The write end must go here, or the read never ends; then the
		// read ends at the service's execve (close-on-exec) or with the
		// trampoline's errno. A failed child exits 127 unrecorded: the
		// reaper collects it as an orphan.
		_ = cmd.ExtraFiles[len(cmd.ExtraFiles)-1].Close()
		if err := ReadExecStatus(execStatus); err != nil {
			_ = unix.Close(pidfd)
			return fmt.Errorf("exec %s: %w", path, err)
		}
	}
	keep := append([]*os.File(nil), files[2:2+req.Keep]...)
	for i := 2; i < 2+req.Keep; i++ {
		files[i] = nil // ours now, not closed with the request's
	}
	s.procs[cmd.Process.Pid] = &initProc{service: req.Service, conn: c, keep: keep}
	_ = WriteMsg(c, Reply{OK: true, Pid: cmd.Process.Pid}, []int{pidfd})
	_ = unix.Close(pidfd)
	return nil
}

// reap collects every child that has ended: services (whose host is told)
// and orphans that were reparented to PID 1.
func (s *initServer) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		p := s.procs[pid]
		if p == nil {
			continue // an orphan
		}
		delete(s.procs, pid)
		ex := Exit{Pid: pid}
		switch {
		case ws.Exited():
			ex.Code = ws.ExitStatus()
		case ws.Signaled():
			ex.Signal, ex.Code, ex.Core = int(ws.Signal()), 128+int(ws.Signal()), ws.CoreDump()
		}
		CloseFiles(p.keep)
		go func(c *net.UnixConn, shared bool) {
			_ = WriteMsg(c, ex, nil) // fails if that tori-run is gone: the next one adopts what lives
			if !shared {
				_ = c.Close()
			}
		}(p.conn, p.shared)
	}
}

// adopt hands every live service to the tori-run on c: one packet per
// service with a new pidfd and the kept files, then an empty one; from then
// on their exits are reported on c, which stays open.
func (s *initServer) adopt(c *net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, p := range s.procs {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // the reaper will have it
		}
		fds := []int{pidfd}
		for _, f := range p.keep {
			fds = append(fds, int(f.Fd()))
		}
		err = WriteMsg(c, Adopted{Service: p.service, Pid: pid, Keep: len(p.keep)}, fds)
		_ = unix.Close(pidfd)
		if err != nil {
			return
		}
		if p.conn != nil && !p.shared {
			_ = p.conn.Close()
		}
		p.conn, p.shared = c, true
	}
	var held []int
	for _, f := range s.held {
		held = append(held, int(f.Fd()))
	}
	_ = WriteMsg(c, Adopted{Sockets: s.heldNames}, held)
}

func (s *initServer) forward(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid := range s.procs {
		_ = unix.Kill(pid, sig)
	}
}

// hold keeps the capsule's listening sockets in the init (replacing any
// held before), to hand them to the next tori-run at adopt.
func (s *initServer) hold(req *Request, files []*os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	CloseFiles(s.held)
	s.held, s.heldNames = nil, req.Names
	for _, f := range files { // the request's files are closed after it
		fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tori-run init: keeping a socket: %v\n", err)
			continue
		}
		s.held = append(s.held, os.NewFile(uintptr(fd), "held"))
	}
}

// lookPath finds an executable regular file name in the colon-separated
// dirs of pathList (the service's PATH), as the host's container mode does.
func lookPath(name, pathList string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, pathList)
}
