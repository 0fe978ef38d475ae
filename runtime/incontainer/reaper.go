//go:build linux

package incontainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// Container mode's processes: plain children of tori-run (no namespaces,
// no cgroups of its own: the engine made the container), each service in
// its own process group, tracked by pidfd, and one reaper for every child
// and every orphan that is reparented to tori-run (PID 1, or a subreaper).

// reaper waits for every child of this process. It is the only caller of
// wait in container mode: a service's exit status reaches its childProc
// through it.
type reaper struct {
	mu    sync.Mutex // held across fork+register and each reap: an exit is never seen before its process is known
	procs map[int]*childProc
	sigc  chan os.Signal
	stop  chan struct{}
	done  chan struct{}
	log   zerolog.Logger
}

func newReaper(log zerolog.Logger) *reaper {
	r := &reaper{procs: map[int]*childProc{}, sigc: make(chan os.Signal, 1), stop: make(chan struct{}), done: make(chan struct{}), log: log}
	signal.Notify(r.sigc, unix.SIGCHLD)
	go r.loop()
	return r
}

func (r *reaper) loop() {
	defer close(r.done)
	for {
		select {
		case <-r.sigc:
			r.reapAll()
		case <-r.stop:
			r.reapAll()
			return
		}
	}
}

// close stops the reaper after a last pass.
func (r *reaper) close() {
	signal.Stop(r.sigc)
	close(r.stop)
	<-r.done
}

// siginfoChld is the start of a siginfo_t for SIGCHLD on Linux (64-bit and
// 32-bit layouts agree up to si_status): x/sys/unix keeps it opaque.
type siginfoChld struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	UID                uint32
	Status             int32
}

// reapAll reaps every child that has ended. A service's main process is
// looked at first without reaping it (WNOWAIT): what remains of its process
// group is killed while the zombie still pins the group's id, so the kill
// can never reach a process that later got the same number.
func (r *reaper) reapAll() {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // ECHILD: no child at all
		}
		pid := int((*siginfoChld)(unsafe.Pointer(&info)).Pid)
		if pid == 0 {
			return
		}
		r.mu.Lock()
		p := r.procs[pid]
		if p != nil {
			_ = unix.Kill(-pid, unix.SIGKILL)
			// From here its pid may be reused: no more signals by number.
			p.mu.Lock()
			p.reaped = true
			p.mu.Unlock()
		}
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		delete(r.procs, pid)
		r.mu.Unlock()
		switch {
		case p != nil && wpid == pid:
			p.ended(ws)
		case p == nil && wpid == pid:
			r.log.Debug().Int(runtime.FieldPID, pid).Msg("reaped an orphan")
		case err != nil && !errors.Is(err, unix.ECHILD):
			r.log.Warn().Err(err).Int(runtime.FieldPID, pid).Msg("reaping")
			return
		case err != nil:
			return
		}
	}
}

// start forks and execs argv in a new process group, registered before the
// reaper can see it end.
func (r *reaper) start(label, prog string, argv, env []string, dir string, cred *syscall.Credential, stdout, stderr *os.File) (*childProc, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	pidfd := -1
	attr := &syscall.ProcAttr{Dir: dir, Env: env, Files: []uintptr{devnull.Fd(), stdout.Fd(), stderr.Fd()},
		Sys: &syscall.SysProcAttr{Setpgid: true, Credential: cred, PidFD: &pidfd}}
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(prog, argv, attr)
	if err != nil {
		return nil, &supervisor.StartError{Service: label, Err: fmt.Errorf("%s: %w", prog, err), Perm: supervisor.PermanentErrno(err)}
	}
	p := &childProc{pid: pid, done: make(chan struct{}), r: r}
	if pidfd >= 0 { // CLONE_PIDFD: Linux 5.3 and later
		p.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	}
	r.procs[pid] = p
	return p, nil
}

// signalAll sends sig to every live service process.
func (r *reaper) signalAll(sig syscall.Signal) {
	r.mu.Lock()
	procs := make([]*childProc, 0, len(r.procs))
	for _, p := range r.procs {
		procs = append(procs, p)
	}
	r.mu.Unlock()
	for _, p := range procs {
		_ = p.Signal(sig)
	}
}

// killOrphans SIGKILLs every remaining child of this process (orphans that
// left their service's process group).
func (r *reaper) killOrphans() {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ppid, _, err := procParent(pid); err == nil && ppid == self {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	// The reaper reaps them at their SIGCHLD.
}

// procParent reads a process's parent and process group from /proc.
func procParent(pid int) (ppid, pgid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	return ppid, pgid, errors.Join(err1, err2)
}

// serviceOf finds the service a process belongs to: the tracked main
// process among its ancestors, or else (an orphan reparented to tori-run)
// the service whose process group it is in.
func (r *reaper) serviceOf(pid int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, depth := pid, 0; p > 1 && depth < 64; depth++ {
		if c := r.procs[p]; c != nil {
			return c.service, true
		}
		ppid, _, err := procParent(p)
		if err != nil {
			break
		}
		p = ppid
	}
	if _, pgid, err := procParent(pid); err == nil {
		if c := r.procs[pgid]; c != nil {
			return c.service, true
		}
	}
	return "", false
}

// childProc is one process started by the reaper: a supervisor.Process.
type childProc struct {
	pid     int // also its process group's id
	service string
	r       *reaper
	done    chan struct{}

	mu     sync.Mutex // guards pidfd, reaped and exit
	pidfd  *os.File
	reaped bool
	exit   supervisor.Exit
}

func (p *childProc) ended(ws unix.WaitStatus) {
	var ex supervisor.Exit
	switch {
	case ws.Signaled():
		ex = supervisor.Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
	default:
		ex = supervisor.Exit{Code: ws.ExitStatus()}
	}
	p.mu.Lock()
	p.exit, p.reaped = ex, true
	if p.pidfd != nil {
		_ = p.pidfd.Close()
		p.pidfd = nil
	}
	p.mu.Unlock()
	close(p.done)
}

func (p *childProc) Pid() int              { return p.pid }
func (p *childProc) Done() <-chan struct{} { return p.done }

func (p *childProc) Exit() supervisor.Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Signal signals the main process through its pidfd (or, on a kernel
// without CLONE_PIDFD, by number while it is not reaped: until then the
// number cannot be reused).
func (p *childProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return nil
	}
	var err error
	if p.pidfd != nil {
		err = unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	} else {
		err = unix.Kill(p.pid, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Kill SIGKILLs the process group, unless the main process was reaped (its
// group was killed then).
func (p *childProc) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return nil
	}
	if err := unix.Kill(-p.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", p.pid, err)
	}
	return nil
}

// BelongsTo says whether pid descends from this service (sd_notify).
func (p *childProc) BelongsTo(pid int) bool {
	s, ok := p.r.serviceOf(pid)
	return ok && s == p.service
}

// Stats reads the main process's RSS and CPU time.
func (p *childProc) Stats() (supervisor.Stats, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return supervisor.Stats{}, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 22 {
		return supervisor.Stats{}, fmt.Errorf("/proc/%d/stat: %d fields", p.pid, len(f))
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	rss, _ := strconv.ParseUint(f[21], 10, 64)
	return supervisor.Stats{MemoryBytes: rss * uint64(os.Getpagesize()), CPU: time.Duration(ut+st) * time.Second / 100, Pids: 1}, nil
}

// containerRunner starts a capsule's services as children of tori-run.
type containerRunner struct {
	c *containerRun
}

func (cr containerRunner) Start(_ context.Context, name string, out supervisor.Output) (supervisor.Process, error) {
	c := cr.c
	s := c.m.Service(name)
	if s == nil {
		return nil, &supervisor.StartError{Service: name, Err: errors.New("no such service in the manifest"), Perm: true}
	}
	env := c.serviceEnv(s)
	if out.NotifySocket != "" {
		env = append(env, "NOTIFY_SOCKET="+out.NotifySocket)
	}
	return c.startArgv(name, s.Command, env, out.Stdout, out.Stderr)
}

// startArgv resolves argv[0] as the capsule's init does (absolute; with a
// slash, in the app; a bare name, in the PATH) and starts it as the
// manifest's user.
func (c *containerRun) startArgv(service string, argv, env []string, stdout, stderr *os.File) (*childProc, error) {
	if len(argv) == 0 {
		return nil, &supervisor.StartError{Service: service, Err: errors.New("empty command"), Perm: true}
	}
	prog := argv[0]
	switch {
	case filepath.IsAbs(prog):
	case strings.Contains(prog, "/"):
		prog = filepath.Join(c.app, prog)
	default:
		lp, err := hostfacts.LookPathIn(prog, capinit.EnvValue(env, "PATH"))
		if err != nil {
			return nil, &supervisor.StartError{Service: service, Err: err, Perm: true}
		}
		prog = lp
	}
	p, err := c.reaper.start(service, prog, argv, env, c.app, c.cred, stdout, stderr)
	if err != nil {
		return nil, err
	}
	p.service = service
	c.log.Debug().Str(runtime.FieldService, service).Int(runtime.FieldPID, p.pid).Msg("process started")
	return p, nil
}

// serviceEnv is what a service sees: the same as under run, with
// TORI_STATE_SOCKET where this container's proxy listens.
func (c *containerRun) serviceEnv(s *specs.Service) []string {
	env := plan.ServiceEnv(c.m, s, c.release, c.buildSHA)
	for i, e := range env {
		if strings.HasPrefix(e, "TORI_STATE_SOCKET=") {
			env[i] = "TORI_STATE_SOCKET=" + c.socket
		}
	}
	return env
}

// containerProber runs exec probes as children of tori-run, with the
// service's environment; http and tcp probes go from tori-run, which shares
// the container's network.
type containerProber struct{ c *containerRun }

func (cp containerProber) Probe(ctx context.Context, service string, p *supervisor.Probe) error {
	if p.Kind != supervisor.ProbeExec {
		return supervisor.HostProber{}.Probe(ctx, service, p)
	}
	s := cp.c.m.Service(service)
	if s == nil {
		return fmt.Errorf("probe of %s: no such service", service)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	proc, err := cp.c.startArgv(service+" (probe)", p.Exec, cp.c.serviceEnv(s), w, w)
	w.Close()
	if err != nil {
		return err
	}
	out := make(chan []byte, 1)
	go func() {
		b := make([]byte, 4<<10)
		n, _ := r.Read(b)
		out <- b[:n]
	}()
	select {
	case <-proc.Done():
	case <-ctx.Done():
		_ = proc.Kill()
		<-proc.Done()
		return fmt.Errorf("%s: %w", strings.Join(p.Exec, " "), ctx.Err())
	}
	if e := proc.Exit(); e.Code != 0 || e.Signal != 0 {
		_ = r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		return fmt.Errorf("%s: %s: %s", strings.Join(p.Exec, " "), e, strings.TrimSpace(string(<-out)))
	}
	return nil
}
