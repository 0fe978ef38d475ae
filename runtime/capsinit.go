//go:build linux

package runtime

import (
	"encoding/json"
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

	"github.com/tori-run/tori-run/cgroups"
)

// InitCommand is the hidden argument that makes tori-run the init of a
// capsule: PID 1 of its namespaces.
//
// Why an init of our own starts the services (and not libcontainer's way of
// running an extra process in a container): the init is already in every
// namespace, so a service start is a plain fork/exec (~1 ms) rather than a
// re-exec through nsexec (10–27 ms here); the init is the services' parent,
// so it reaps them and every orphan for free; and the services do not depend
// on the tori-run that asked for them: if it dies, they keep running and a new
// tori-run can reconnect to the init's socket (as containerd's shims allow).
// The init is small: it holds no policy. Restart decisions, probes, logs and
// limits live on the host side.
const InitCommand = "capsule-init"

// initFD is where the init finds its listening socket (the first ExtraFile).
const initFD = 3

// capsuleCgroupMount is where the init sees its cgroup namespace's cgroup2
// mount (v2 hosts): the capsule's cgroup is its root.
const capsuleCgroupMount = "/sys/fs/cgroup"

// Messages between the host and the init, one per packet. Files travel as
// SCM_RIGHTS alongside, in groups in a fixed order, each group's size given
// by a field of the request (a new kind of file is a new group, appended at
// the end with its own count):
//
//	stdout, stderr                 always
//	Keep files                     read ends of the service's output pipes
//	CgroupFiles files              v1 tasks files; a cgroup2 folder only as a
//	                               detached copy (cgroups.SpawnFiles)
//
// Never a folder of the host's mount: a folder fd is a way out of every
// namespace (runc's CVE-2024-21626). On v2 the init opens the service's
// cgroup itself, by name (Cgroup), in its own cgroup namespace.
type initRequest struct {
	Op      string   `json:"op"` // "start", "adopt" or "shutdown"
	Service string   `json:"service,omitempty"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Dir     string   `json:"dir,omitempty"`
	UID     uint32   `json:"uid,omitempty"`
	GID     uint32   `json:"gid,omitempty"`
	// Keep is how many files after stdout and stderr the init keeps while
	// the service lives: read ends of its output pipes, so that the pipes
	// outlive a dead tori-run and a new one can take them (adopt).
	Keep int `json:"keep,omitempty"`
	// CgroupVersion says how to start the service in its cgroup
	// (cgroups.StartIn): 2 with Cgroup, 1 with CgroupFiles.
	CgroupVersion int `json:"cgroup_version,omitempty"`
	// Cgroup is the service's cgroup relative to the capsule's (the root of
	// the init's cgroup namespace), "svc-web": on v2 the init opens it under
	// capsuleCgroupMount.
	Cgroup string `json:"cgroup,omitempty"`
	// CgroupFiles is how many files after the kept ones are cgroup files.
	CgroupFiles int `json:"cgroup_files,omitempty"`
	// Listen is how many listening sockets come last, after the cgroup
	// files: the service gets them as fds 3.. (LISTEN_FDS). With "hold",
	// every file is a socket to keep, and Names names them.
	Listen int      `json:"listen,omitempty"`
	Names  []string `json:"names,omitempty"`
}

// adoptedProc is one service in the answer to "adopt"; its pidfd and kept
// files travel with it.
type adoptedProc struct {
	Service string `json:"service"`
	Pid     int    `json:"pid"`
	Keep    int    `json:"keep"`
	// Sockets, on the last (empty) packet, names the listening sockets the
	// init holds for the capsule, which travel with it.
	Sockets []string `json:"sockets,omitempty"`
}

type initReply struct {
	OK    bool   `json:"ok"`
	Pid   int    `json:"pid,omitempty"` // in the capsule's PID namespace
	Error string `json:"error,omitempty"`
	Errno string `json:"errno,omitempty"` // ENOENT, EACCES, ENOEXEC... when exec failed
}

// initExit is sent on a start's connection when that service has exited.
type initExit struct {
	Pid    int    `json:"pid"`
	Code   int    `json:"code"`
	Signal int    `json:"signal,omitempty"`
	Core   bool   `json:"core,omitempty"`
	Error  string `json:"error,omitempty"`
}

const maxPacket = 64 << 10

// RunInit is the capsule's PID 1. It returns the process's exit status.
func RunInit() int {
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
	// (see sockets.go); heldNames names them. Guarded by mu.
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
	keep    []*os.File // kept while the service lives (initRequest.Keep)
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
	if err := checkPeerOutside(c); err != nil {
		fmt.Fprintf(os.Stderr, "tori-run init: refused a connection: %v\n", err)
		_ = c.Close()
		return
	}
	var req initRequest
	files, err := readMsg(c, &req)
	defer closeFiles(files)
	if err != nil {
		_ = writeMsg(c, initReply{Error: err.Error()}, nil)
		_ = c.Close()
		return
	}
	switch req.Op {
	case "start":
		if err := s.start(&req, files, c); err != nil {
			rep := initReply{Error: err.Error()}
			var errno syscall.Errno
			if errors.As(err, &errno) {
				rep.Errno = unix.ErrnoName(errno)
			}
			_ = writeMsg(c, rep, nil)
			_ = c.Close()
		}
	case "adopt":
		s.adopt(c)
	case "hold":
		s.hold(&req, files)
		_ = writeMsg(c, initReply{OK: true}, nil)
		_ = c.Close()
	case "shutdown":
		_ = writeMsg(c, initReply{OK: true}, nil)
		os.Exit(0)
	case opDieWithHost: // harness.go: the capsule ends with its host's process
		_ = writeMsg(c, initReply{OK: true}, nil)
		go func() { _, _ = c.Read(make([]byte, 1)); os.Exit(0) }()
	default:
		_ = writeMsg(c, initReply{Error: fmt.Sprintf("unknown op %q", req.Op)}, nil)
		_ = c.Close()
	}
}

// start forks and execs a service, born in its cgroup, and answers on c
// with its pid and a pidfd. The answer is written before the reaper can
// see the child (s.mu is held throughout), so the host always reads the
// answer before the exit message, even for a service that exits at once.
func (s *initServer) start(req *initRequest, files []*os.File, c *net.UnixConn) error {
	if len(req.Args) == 0 || req.Keep < 0 || req.CgroupFiles < 0 || req.Listen < 0 || len(files) != 2+req.Keep+req.CgroupFiles+req.Listen {
		return fmt.Errorf("start %s: expected args, stdout, stderr, %d kept files, %d cgroup files and %d sockets, got %d files", req.Service, req.Keep, req.CgroupFiles, req.Listen, len(files))
	}
	cgFiles := files[2+req.Keep : 2+req.Keep+req.CgroupFiles]
	for _, f := range cgFiles {
		if err := cgroups.Contained(f); err != nil {
			return fmt.Errorf("start %s: %w", req.Service, err)
		}
	}
	if req.Cgroup != "" {
		if req.CgroupVersion != 2 || len(cgFiles) != 0 {
			return fmt.Errorf("start %s: a cgroup by name is for cgroup v2 alone", req.Service)
		}
		dir, err := cgroups.OpenNamespaced(capsuleCgroupMount, req.Cgroup)
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
		lp, err := lookPathIn(path, envValue(req.Env, "PATH"))
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
		cmd.Args = append([]string{capsuleBinary, ExecCommand, trampolineMode(len(listen) > 0, s.trampoline), strconv.Itoa(fd), path}, req.Args...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := func() error { return cgroups.StartIn(req.CgroupVersion, cgFiles, cmd) }
	if req.CgroupVersion == 0 { // no cgroups: a rootless capsule (rootless_run.go)
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
		if err := readExecStatus(execStatus); err != nil {
			_ = unix.Close(pidfd)
			return fmt.Errorf("exec %s: %w", path, err)
		}
	}
	keep := append([]*os.File(nil), files[2:2+req.Keep]...)
	for i := 2; i < 2+req.Keep; i++ {
		files[i] = nil // ours now, not closed with the request's
	}
	s.procs[cmd.Process.Pid] = &initProc{service: req.Service, conn: c, keep: keep}
	_ = writeMsg(c, initReply{OK: true, Pid: cmd.Process.Pid}, []int{pidfd})
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
		ex := initExit{Pid: pid}
		switch {
		case ws.Exited():
			ex.Code = ws.ExitStatus()
		case ws.Signaled():
			ex.Signal, ex.Code, ex.Core = int(ws.Signal()), 128+int(ws.Signal()), ws.CoreDump()
		}
		closeFiles(p.keep)
		go func(c *net.UnixConn, shared bool) {
			_ = writeMsg(c, ex, nil) // fails if that tori-run is gone: the next one adopts what lives
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
		err = writeMsg(c, adoptedProc{Service: p.service, Pid: pid, Keep: len(p.keep)}, fds)
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
	_ = writeMsg(c, adoptedProc{Sockets: s.heldNames}, held)
}

func (s *initServer) forward(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid := range s.procs {
		_ = unix.Kill(pid, sig)
	}
}

// checkPeerOutside accepts only peers outside the capsule's PID namespace:
// the kernel reports such a peer's pid as 0. A service inside the capsule
// that finds the socket cannot use it to start processes.
func checkPeerOutside(c *net.UnixConn) error {
	cred, err := peerCred(c)
	if err != nil {
		return err
	}
	if cred.Pid != 0 || cred.Uid != 0 {
		return fmt.Errorf("peer pid %d uid %d is inside the capsule or not root", cred.Pid, cred.Uid)
	}
	return nil
}

// peerCred reads the credentials of the process at the other end of c, as
// the kernel saw them at connect (pid in our PID namespace, 0 if outside).
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

func writeMsg(c *net.UnixConn, v any, fds []int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// readMsg reads one packet (a request: up to maxPacket) into v and returns
// the files that came with it.
func readMsg(c *net.UnixConn, v any) ([]*os.File, error) {
	return readMsgN(c, v, maxPacket)
}

// maxAnswer bounds an answer or exit message of the init: small JSON. A
// waiting service holds its buffer for its whole life, so it stays small.
const maxAnswer = 4 << 10

// readMsgN reads one packet of at most size bytes.
func readMsgN(c *net.UnixConn, v any, size int) ([]*os.File, error) {
	buf := make([]byte, size)
	oob := make([]byte, unix.CmsgSpace(64*4))
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	// MSG_CMSG_CLOEXEC: the received fds are close-on-exec from the moment
	// they exist, so a service that another goroutine forks meanwhile cannot
	// inherit them (another service's pipes, the cgroup files).
	var n, oobn int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "passed"))
			}
		}
	}
	if n == 0 {
		return files, fmt.Errorf("connection closed")
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		return files, fmt.Errorf("bad message: %w", err)
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

func envValue(env []string, name string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}
