// Package spawn is the part of tori-run's cgroup handling that a process spawner needs to start a child
// BORN in a cgroup (StartIn) and to check what another process handed it (Contained, OpenNamespaced): plain
// system calls through golang.org/x/sys/unix and nothing else, so that tori-run's capsule init
// (runtime/capinit, a small binary of its own) links neither github.com/opencontainers/cgroups nor its
// dbus and logrus. Package cgroups wraps it for the host side (Group.SpawnFiles).
package spawn

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// OpenBeneath opens dir/name, where dir is inside the hierarchy mounted at mount, with
// openat2(RESOLVE_BENEATH) relative to the mount point, so a name can never climb out of the hierarchy
// (through "..", a symlink or a magic link).
func OpenBeneath(mount, dir, name string, flags int) (*os.File, error) {
	full := filepath.Join(dir, filepath.Clean("/"+name))
	rel, err := filepath.Rel(mount, full)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, &os.PathError{Op: "open", Path: full, Err: fmt.Errorf("not beneath the cgroup mount %s", mount)}
	}
	root, err := unix.Open(mount, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: mount, Err: err}
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags) | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOSYS) { // Linux < 5.6: the path was cleaned and checked above
		return os.OpenFile(full, flags|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: full, Err: err}
	}
	return os.NewFile(uintptr(fd), full), nil
}

// ValidPath checks a cgroup path given by a caller: no "..", no empty element.
func ValidPath(p string) error {
	for e := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
		if e == "" || e == "." || e == ".." {
			return fmt.Errorf("invalid cgroup path %q: empty, \".\" or \"..\" element", p)
		}
	}
	return nil
}

// DetachedDir opens the cgroup2 folder dir (inside the hierarchy mounted at mount) as the root of a private,
// detached copy of its mount (open_tree(OPEN_TREE_CLONE), Linux 5.2+) made read-only, nosuid, nodev and
// noexec (mount_setattr, 5.12+). The copy is attached to no mount tree, so ".." of its root is itself: the
// folder fd leads to this cgroup and its children, never above, and its files cannot be written. It is
// still a cgroup2 folder to the kernel, which is all clone3(CLONE_INTO_CGROUP) asks of it (the permission
// to place a child is checked on the cgroup's own files, not on the mount). The copy is freed with the last
// fd.
func DetachedDir(mount, dir string) (*os.File, error) {
	f, err := OpenBeneath(mount, dir, ".", unix.O_PATH|unix.O_DIRECTORY)
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
	if err := ValidPath(rel); err != nil || path.IsAbs(rel) {
		return nil, fmt.Errorf("cgroup %q: a path relative to the cgroup namespace's root expected", rel)
	}
	f, err := OpenBeneath(mount, mount, rel, unix.O_RDONLY|unix.O_DIRECTORY)
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
	deadline, delay := time.Now().Add(time.Second), time.Millisecond
	for {
		if _, err := os.Stat(p); err != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(delay) // 1 ms, 2 ms, 4 ms ... capped at 50 ms
		delay = min(2*delay, 50*time.Millisecond)
	}
}
