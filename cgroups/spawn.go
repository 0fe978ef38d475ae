package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SpawnFiles opens what a process spawner needs to start a child directly in g (StartIn): on cgroup v2 the
// group's directory (O_RDONLY|O_DIRECTORY, usable as SysProcAttr.CgroupFD); on v1 the `tasks` file of each
// hierarchy (O_WRONLY), and on a hybrid host also the cgroup2 directory. The files may be passed to another
// process (over a unix socket, into a container's namespaces); the caller closes them.
func (g *Group) SpawnFiles() ([]*os.File, error) {
	var out []*os.File
	for _, d := range g.dirs {
		name, flags := "tasks", unix.O_WRONLY
		if d.Version == 2 {
			name, flags = ".", unix.O_RDONLY|unix.O_DIRECTORY
		}
		f, err := openBeneath(d.Mount, d.dir, name, flags)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("spawn files of cgroup %s: %w", g.path, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// StartIn starts cmd so that the child is BORN in the cgroup whose SpawnFiles are given: it never runs, not
// even for a moment, outside it (no fork-then-move, which would let it fork or allocate before its limits
// apply). version is the Group's Version (1 or 2); the files say the rest: each directory is a cgroup2 one
// and each regular file a v1 tasks file.
//
//   - cgroup2 directory: cmd.SysProcAttr.UseCgroupFD and CgroupFD, so the kernel's clone3(CLONE_INTO_CGROUP)
//     creates the child in it (Linux 5.7+).
//   - v1 tasks files: there is no clone flag for v1. A new goroutine locks itself to its OS thread, writes
//     that thread's own TID (gettid) to each tasks file, which moves only this thread, and calls cmd.Start:
//     Go forks from the current thread, and a child inherits the cgroups of the thread that forked it. The
//     goroutine then returns WITHOUT runtime.UnlockOSThread, so Go terminates the thread instead of
//     returning it, still in the child's cgroups, to its pool of threads. The main thread is never used
//     (Go would park it forever rather than end it, leaving our process in the child's cgroup): a goroutine
//     that finds itself there holds it and hands the work to another.
//
// A TID written to a tasks file is resolved in the writer's PID namespace, so StartIn works inside a
// container's PID namespace with files opened on the host. It waits (briefly) for the discarded thread to be
// gone, so that the group holds only the child when it returns.
func StartIn(version int, files []*os.File, cmd *exec.Cmd) error {
	var dir *os.File
	var tasks []*os.File
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if dir != nil {
				return fmt.Errorf("start in cgroup: two cgroup2 directories given (%s, %s)", dir.Name(), f.Name())
			}
			dir = f
		case unix.S_IFREG:
			tasks = append(tasks, f)
		default:
			return fmt.Errorf("start in cgroup: %s is neither a cgroup2 directory nor a v1 tasks file", f.Name())
		}
	}
	switch {
	case version == 2 && (dir == nil || len(tasks) > 0):
		return fmt.Errorf("start in cgroup: version 2 wants one cgroup2 directory, got %d directories and %d tasks files", len(files)-len(tasks), len(tasks))
	case version == 1 && len(tasks) == 0:
		return errors.New("start in cgroup: version 1 wants the tasks files of the v1 hierarchies, got none")
	case version != 1 && version != 2:
		return fmt.Errorf("start in cgroup: unknown cgroup version %d", version)
	}
	if dir != nil {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(dir.Fd())
	}
	if len(tasks) == 0 {
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s in cgroup %s: %w", cmd.Path, dir.Name(), err)
		}
		return nil
	}
	done := make(chan startResult, 1)
	go startOnThread(tasks, cmd, done)
	r := <-done
	waitThreadGone(r.tid)
	return r.err
}

type startResult struct {
	tid int
	err error
}

// startOnThread runs on a goroutine of its own, locked to its thread, which it never unlocks (see StartIn).
func startOnThread(tasks []*os.File, cmd *exec.Cmd, done chan<- startResult) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	if tid == unix.Getpid() {
		// The main thread: keep it locked to this goroutine, so that the helper cannot be scheduled on it,
		// and give it back once the helper is done. It never left our cgroups.
		inner := make(chan startResult, 1)
		go startOnThread(tasks, cmd, inner)
		r := <-inner
		runtime.UnlockOSThread()
		done <- r
		return
	}
	for _, f := range tasks {
		if _, err := f.WriteAt([]byte(strconv.Itoa(tid)), 0); err != nil {
			done <- startResult{tid, fmt.Errorf("start %s: failed to write thread %d to %s: %w", cmd.Path, tid, f.Name(), err)}
			return // the thread, perhaps in some of the cgroups already, ends with this goroutine
		}
	}
	err := cmd.Start()
	if err != nil {
		err = fmt.Errorf("start %s in cgroup: %w", cmd.Path, err)
	}
	done <- startResult{tid, err}
	// Return while still locked: the runtime ends this thread.
}

// waitThreadGone waits up to a second for our thread tid to have exited. Without /proc it returns at once.
func waitThreadGone(tid int) {
	p := "/proc/self/task/" + strconv.Itoa(tid)
	b := newBackoff(time.Second)
	for {
		if _, err := os.Stat(p); err != nil {
			return
		}
		if !b.wait() {
			return
		}
	}
}
