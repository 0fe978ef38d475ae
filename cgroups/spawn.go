package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SpawnFiles opens what a process spawner needs to start a child directly in g (StartIn), in a form that may
// be handed to a process that must not reach the host's file system (tori-run's init in a capsule): on v1 the
// `tasks` file of each hierarchy (O_WRONLY; a file, not a folder: no path leads from it anywhere); on v2 the
// cgroup2 directory as the root of a detached, read-only copy of its mount holding this one folder
// (DetachedDir), never as a folder of the host's mount, from which openat(fd, "..") would climb to the host's
// "/" (the class of runc's CVE-2024-21626). The caller closes the files.
//
// On a hybrid host (a version 1 group) the cgroup2 folder is left out: the child is born in the v1
// hierarchies alone and stays in its parent's cgroup2 group. The unified hierarchy holds no controller there,
// and everything that asks which group a process is in (Procs, Kill, the notify sender check, the state
// proxy's identify) finds it through the v1 hierarchies. Being born there too would take
// clone3(CLONE_INTO_CGROUP), and a spawner that needs clone3 cannot run under a seccomp filter that answers
// clone3 with ENOSYS (as moby's does, so that the flags of clone(2) can be checked): tori-run's init on v1
// and hybrid hosts runs under exactly that filter.
//
// Inside a cgroup namespace prefer OpenNamespaced, which needs nothing from the host.
func (g *Group) SpawnFiles() ([]*os.File, error) {
	var out []*os.File
	for _, d := range g.dirs {
		if d.Version == 2 && g.version == 1 {
			continue // hybrid: born in v1 alone (see above)
		}
		var f *os.File
		var err error
		if d.Version == 2 {
			f, err = DetachedDir(d.Mount, d.dir)
		} else {
			f, err = openBeneath(d.Mount, d.dir, "tasks", unix.O_WRONLY)
		}
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

// DetachedDir opens the cgroup2 folder dir (inside the hierarchy mounted at mount) as the root of a private,
// detached copy of its mount (open_tree(OPEN_TREE_CLONE), Linux 5.2+) made read-only, nosuid, nodev and
// noexec (mount_setattr, 5.12+). The copy is attached to no mount tree, so ".." of its root is itself: the
// folder fd leads to this cgroup and its children, never above, and its files cannot be written. It is
// still a cgroup2 folder to the kernel, which is all clone3(CLONE_INTO_CGROUP) asks of it (the permission
// to place a child is checked on the cgroup's own files, not on the mount). The copy is freed with the last
// fd.
func DetachedDir(mount, dir string) (*os.File, error) {
	f, err := openBeneath(mount, dir, ".", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tree, err := unix.OpenTree(int(f.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: dir, Err: err}
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return nil, &os.PathError{Op: "mount_setattr", Path: dir, Err: err}
	}
	fd, err := unix.Openat(tree, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	d := os.NewFile(uintptr(fd), dir)
	if err := Contained(d); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Contained checks that no path leads up from the folder f: its ".." is itself, as at the root of a detached
// mount (DetachedDir) or of the caller's own root. A folder received from another process must pass before
// it is used; a file (a v1 tasks file) passes. It is how tori-run's init refuses a host folder.
func Contained(f *os.File) error {
	var st, up unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	if err := unix.Fstatat(int(f.Fd()), "..", &up, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat ..", Path: f.Name(), Err: err}
	}
	if up.Dev != st.Dev || up.Ino != st.Ino {
		return fmt.Errorf("folder %s leads up to another folder: refused (a folder passed between processes must be a detached copy)", f.Name())
	}
	return nil
}

// OpenNamespaced opens the cgroup2 folder rel (a path relative to the root of the caller's cgroup
// namespace, as "svc-web") under mount, where the caller sees its cgroup namespace's cgroup2 mount
// ("/sys/fs/cgroup" in a capsule), for StartIn. Nothing comes from another mount namespace: the folder is
// inside the caller's own view, where ".." stops at its root. rel may not climb ("..", absolute, symlinks),
// and the folder must be on cgroup2.
func OpenNamespaced(mount, rel string) (*os.File, error) {
	if err := validPath(rel); err != nil || path.IsAbs(rel) {
		return nil, fmt.Errorf("cgroup %q: a path relative to the cgroup namespace's root expected", rel)
	}
	f, err := openBeneath(mount, mount, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("cgroup %s: %s is not a cgroup2 mount (statfs type %#x, %v)", rel, mount, fs.Type, err)
	}
	return f, nil
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
