package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups/spawn"
)

// This file is how the package touches cgroup files itself, where github.com/opencontainers/cgroups has no
// call for what it needs (cgroup.kill, cgroup.subtree_control of our own base, cgroup.procs of a whole
// sub-tree). Every file is opened with openat2(RESOLVE_BENEATH) relative to its hierarchy's mount point, so a
// name can never climb out of the hierarchy (through "..", a symlink or a magic link). The mount point comes
// from the Host, which is what lets tests point the package at a fake tree in a temporary directory.

// openBeneath opens dir/name, where dir is inside the hierarchy mounted at mount (spawn.OpenBeneath).
func openBeneath(mount, dir, name string, flags int) (*os.File, error) {
	return spawn.OpenBeneath(mount, dir, name, flags)
}

func readBeneath(mount, dir, name string) (string, error) {
	f, err := openBeneath(mount, dir, name, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		b.Write(buf[:n])
		if n == 0 || err != nil {
			break
		}
	}
	return b.String(), nil
}

// writeBeneath writes data to dir/name in one write(2), as cgroup files want. The error names the value and
// the file: failed to write "80000 100000" to /sys/fs/cgroup/x/cpu.max: invalid argument.
func writeBeneath(mount, dir, name, data string) error {
	f, err := openBeneath(mount, dir, name, unix.O_WRONLY)
	if err != nil {
		return fmt.Errorf("failed to write %q: %w", data, err)
	}
	defer f.Close()
	if _, err := unix.Write(int(f.Fd()), []byte(data)); err != nil {
		return &WriteError{Value: data, File: f.Name(), Err: err}
	}
	return nil
}

// WriteError is a failed write to a cgroup interface file.
type WriteError struct {
	Value string // what was written
	File  string // the absolute path of the file
	Err   error  // the errno
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("failed to write %q to %s: %v", e.Value, e.File, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// readPids parses a cgroup.procs or tasks file. A cgroup removed meanwhile has no processes.
func readPids(mount, dir string) ([]int, error) {
	s, err := readBeneath(mount, dir, "cgroup.procs")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, err
	}
	return parsePids(s, filepath.Join(dir, "cgroup.procs"))
}

func parsePids(s, file string) ([]int, error) {
	var out []int
	for f := range strings.FieldsSeq(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a pid", file, f)
		}
		out = append(out, pid)
	}
	return out, nil
}

// treePids returns the pids in dir and every cgroup beneath it, sorted, each once.
func treePids(mount, dir string) ([]int, error) {
	var out []int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := readPids(mount, p)
		out = append(out, pids...)
		return err
	})
	slices.Sort(out)
	return slices.Compact(out), err
}

// subdirs returns dir and every directory beneath it, deepest first.
func subdirs(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	slices.Reverse(out)
	return out, err
}

// describePids names pids with their command, for error messages: "812 (sleep), 813 (sh)".
func describePids(pids []int) string {
	parts := make([]string, 0, len(pids))
	for _, pid := range pids {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			parts = append(parts, strconv.Itoa(pid))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return strings.Join(parts, ", ")
}

// backoff sleeps 1 ms, 2 ms, 4 ms ... capped at 50 ms, and reports false once deadline has passed.
type backoff struct {
	deadline time.Time
	delay    time.Duration
}

func newBackoff(limit time.Duration) *backoff {
	return &backoff{deadline: time.Now().Add(limit), delay: time.Millisecond}
}

func (b *backoff) wait() bool {
	if time.Now().After(b.deadline) {
		return false
	}
	time.Sleep(b.delay)
	b.delay = min(2*b.delay, 50*time.Millisecond)
	return true
}
