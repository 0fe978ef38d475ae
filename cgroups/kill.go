package cgroups

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	lib "github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// KillTimeout bounds how long Kill waits for the killed processes to be gone.
const KillTimeout = 5 * time.Second

// Kill kills every process in g and beneath it, and waits (up to KillTimeout) until none is left.
//
//   - cgroup v2 (Linux 5.14+): one write of "1" to cgroup.kill; the kernel SIGKILLs the whole sub-tree,
//     including processes forked meanwhile.
//   - cgroup v1, or v2 without cgroup.kill: freeze the group (v1 freezer.state FROZEN, waiting until the
//     kernel says FROZEN; v2 cgroup.freeze), so that nothing in it can fork; SIGKILL every pid of cgroup.procs
//     in the group and beneath it; thaw, so that the frozen processes run into their SIGKILL. Repeated until
//     empty, in case a process slipped in. Without a freezer hierarchy the rounds of SIGKILL alone must catch
//     up with forks.
//
// Our own process is never signalled. The error wraps ErrNotEmpty and names the processes left.
func (g *Group) Kill() error {
	if g.version == 2 {
		d := g.dirs[0]
		if _, err := os.Stat(d.dir + "/cgroup.kill"); err == nil {
			return g.killV2(d)
		}
	}
	return g.killFrozen()
}

// killV2 kills through cgroup.kill of d, a cgroup2 directory of g. On a hybrid host it works too, for the
// processes in g's cgroup2 part (tests use that to exercise it on such hosts).
func (g *Group) killV2(d groupDir) error {
	if err := writeBeneath(d.Mount, d.dir, "cgroup.kill", "1"); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(d.dir); serr != nil {
				return nil // no group, no process
			}
		}
		return fmt.Errorf("kill cgroup %s: %w", g.path, err)
	}
	return g.waitEmpty(newBackoff(KillTimeout))
}

func (g *Group) killFrozen() error {
	b := newBackoff(KillTimeout)
	// An empty group is the common case (the supervisor kills a service's
	// tree after its main process ended): answer it without building the
	// freezer's manager.
	if pids, err := g.others(); err == nil && len(pids) == 0 {
		return nil
	}
	m, err := g.manager(nil)
	if err != nil {
		return err
	}
	canFreeze := g.version == 2 || slices.ContainsFunc(g.dirs, func(d groupDir) bool { return d.has("freezer") })
	for {
		pids, err := g.others()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		frozen := false
		if canFreeze {
			// Freezing covers the sub-groups (v1 freezer states are hierarchical). A failure to freeze is not
			// fatal: the kill rounds go on without it.
			frozen = m.Freeze(lib.Frozen) == nil
			if frozen {
				if pids, err = g.others(); err != nil {
					_ = m.Freeze(lib.Thawed)
					return err
				}
			}
		}
		for _, pid := range pids {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				if frozen {
					_ = m.Freeze(lib.Thawed)
				}
				return fmt.Errorf("kill cgroup %s: SIGKILL to pid %d: %w", g.path, pid, err)
			}
		}
		if frozen {
			if err := m.Freeze(lib.Thawed); err != nil {
				return fmt.Errorf("kill cgroup %s: thaw after SIGKILL: %w", g.path, err)
			}
		}
		if err := g.waitEmpty(newBackoff(min(time.Until(b.deadline), time.Second))); err == nil {
			return nil
		} else if time.Now().After(b.deadline) {
			return err
		}
	}
}

// waitEmpty waits until no process is in the group, or b runs out. It
// sleeps on a pidfd of each process left (readable once it has exited), so
// a stop pays for no polling interval; without pidfds (Linux < 5.3) it
// falls back to polling with backoff.
func (g *Group) waitEmpty(b *backoff) error {
	for {
		pids, err := g.others()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(b.deadline) {
			return fmt.Errorf("kill cgroup %s: %w after SIGKILL: %s", g.path, ErrNotEmpty, describePids(pids))
		}
		if !waitExited(pids, time.Until(b.deadline)) && !b.wait() {
			return fmt.Errorf("kill cgroup %s: %w after SIGKILL: %s", g.path, ErrNotEmpty, describePids(pids))
		}
	}
}

// waitExited waits, up to limit, until every process of pids has exited,
// through their pidfds. It returns false when pidfds are not available (the
// caller polls instead); a process already gone counts as exited.
func waitExited(pids []int, limit time.Duration) bool {
	fds := make([]unix.PollFd, 0, len(pids))
	defer func() {
		for _, f := range fds {
			unix.Close(int(f.Fd))
		}
	}()
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case err == nil:
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
		case errors.Is(err, unix.ESRCH):
		default: // ENOSYS, EINVAL (a thread id), ...
			return false
		}
	}
	deadline := time.Now().Add(limit)
	for {
		left := fds[:0]
		for _, f := range fds {
			if f.Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				unix.Close(int(f.Fd))
				continue
			}
			left = append(left, f)
		}
		fds = left
		if len(fds) == 0 {
			return true
		}
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return true // the caller sees who is left and says so
		}
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}

// others lists the group's processes but this one (a kill must not take
// its caller).
func (g *Group) others() ([]int, error) {
	pids, err := g.Procs()
	if err != nil {
		return nil, fmt.Errorf("kill cgroup %s: %w", g.path, err)
	}
	self := os.Getpid()
	return slices.DeleteFunc(pids, func(p int) bool { return p == self }), nil
}
