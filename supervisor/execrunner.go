package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecRunner is a Runner over plain os/exec, for tests and development.
// It is not an isolation boundary, and its "tree" is a process group:
//
//   - each service runs in its own process group (Setpgid); Kill is
//     kill(-pgid, SIGKILL). A descendant that calls setsid or setpgid
//     leaves the group and escapes Kill (a cgroup has no such hole);
//   - when the main process ends, what remains of its group is killed
//     before the main process is reaped, while its pid (the group's id)
//     cannot be reused, so a group kill never hits a stranger;
//   - Stats are the main process's alone (RSS and CPU time from /proc);
//   - no OOM detection (Exit.OOMKilled is never set): there is no memory
//     limit to hit;
//   - processes are children of this process: orphans of a service are
//     reparented to the nearest subreaper (or PID 1), not reaped here.
type ExecRunner struct {
	// Services maps a service name to how to run it.
	Services map[string]ExecService
}

// ExecService is how ExecRunner runs one service.
type ExecService struct {
	Argv []string
	// Env is added to this process's environment.
	Env []string
	Dir string
}

// Start starts the named service in a new process group. ctx is not the
// process's lifetime (a supervisor that detaches leaves it running).
func (r *ExecRunner) Start(_ context.Context, name string, out Output) (Process, error) {
	s, ok := r.Services[name]
	if !ok || len(s.Argv) == 0 {
		return nil, &StartError{Service: name, Err: errors.New("ExecRunner has no command for it"), Perm: true}
	}
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	if cmd.Err != nil {
		return nil, &StartError{Service: name, Err: cmd.Err, Perm: true}
	}
	cmd.Env = append(os.Environ(), s.Env...)
	if out.NotifySocket != "" {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+out.NotifySocket)
	}
	cmd.Dir = s.Dir
	// exec.Cmd hands an *os.File to the child as is: no copying goroutine.
	if out.Stdout != nil {
		cmd.Stdout = out.Stdout
	}
	if out.Stderr != nil {
		cmd.Stderr = out.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, &StartError{Service: name, Err: err, Perm: PermanentErrno(err)}
	}
	p := &execProcess{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

type execProcess struct {
	cmd  *exec.Cmd
	pid  int // also the process group's id
	done chan struct{}

	mu     sync.Mutex // guards reaped and exit
	reaped bool       // the main process was (or is being) reaped: its pgid may be reused
	exit   Exit
}

// wait waits for the main process to end without reaping it (WNOWAIT), kills
// what remains of its group while the group id is still pinned by the
// zombie, then reaps it.
func (p *execProcess) wait() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	_ = unix.Kill(-p.pid, unix.SIGKILL)
	p.reaped = true
	p.mu.Unlock()

	err := p.cmd.Wait()
	var ex Exit
	if ps := p.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex = Exit{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
		} else {
			ex = Exit{Code: ps.ExitCode()}
		}
	} else if err != nil {
		ex = Exit{Code: -1, Err: err.Error()}
	}
	p.mu.Lock()
	p.exit = ex
	p.mu.Unlock()
	close(p.done)
}

func (p *execProcess) Pid() int              { return p.pid }
func (p *execProcess) Done() <-chan struct{} { return p.done }

func (p *execProcess) Exit() Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Signal signals the main process through os.Process (a pidfd on Linux 5.4+).
func (p *execProcess) Signal(sig syscall.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Kill SIGKILLs the process group, unless the main process was reaped.
func (p *execProcess) Kill() error {
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

// BelongsTo reports whether pid is in the service's process group.
func (p *execProcess) BelongsTo(pid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return false
	}
	if pid == p.pid {
		return true
	}
	pg, err := unix.Getpgid(pid)
	return err == nil && pg == p.pid
}

// Stats reads the main process's RSS and CPU time from /proc/PID/stat.
func (p *execProcess) Stats() (Stats, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return Stats{}, err
	}
	return parseProcStat(string(b))
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func parseProcStat(s string) (Stats, error) {
	// The command may contain spaces and parentheses: fields start after
	// the last ')'. Field 3 (state) is f[0]; utime is 14, stime 15, rss 24.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stats{}, fmt.Errorf("/proc stat %q: no ')'", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return Stats{}, fmt.Errorf("/proc stat: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	rss, err3 := strconv.ParseUint(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Stats{}, fmt.Errorf("/proc stat: %w", err)
	}
	return Stats{
		MemoryBytes: rss * uint64(os.Getpagesize()),
		CPU:         time.Duration(ut+st) * time.Second / clockTicks,
		Pids:        1,
	}, nil
}
