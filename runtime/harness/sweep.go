//go:build linux

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/overlay"
	"github.com/tori-run/tori-run/runtime"
)

// What capsules leave when whoever ran them is gone, and the sweep that
// removes it (tori-run gc, and the next Start of package toritest, through
// SweepLeftovers and SweepProcesses). The
// kernel takes the processes (a capsule's init ends with its host side, and
// its PID namespace with it) and the mounts made in the capsule's own mount
// namespace; the rest has a record that names it, and a flock that says
// whether its owner lives:
//
//   - an instance of a tori-run that ended: Root/instances/ID, its lock free;
//     its record names its container state (in the run dir) and its cgroup.
//   - a test process's folder of package toritest, Base()/pPID-*
//     (beside its caches: Base()/cache, a release store, and the
//     cgroup probes' answers, which stay),
//     its flock free; each of its Starts is a root, run dir and state root
//     of its own (StartRoot, StartRun, StartState), swept as above,
//     then the folder goes.
//
// Nothing without a record is touched: a cgroup or container state that no
// record names cannot be told from another root's live one.

// The folders of a toritest Start, under its test process's folder: short,
// since the instances' Unix sockets live beneath them (a socket path has at
// most 107 bytes).
const StartRoot, StartRun, StartState = "r", "u", "s"

// Base is where package toritest keeps this user's test processes'
// folders: $TMPDIR/toritest-UID.
func Base() string {
	return filepath.Join(os.TempDir(), "toritest-"+strconv.Itoa(os.Geteuid()))
}

// ErrFolderGone is a folder that was removed, or locked by another
// process, between its listing and its lock.
var ErrFolderGone = errors.New("folder removed or locked meanwhile")

// LockFolder takes the flock (LOCK_EX) of dir without waiting and checks
// that dir is still the folder locked (a sweeper may have removed it in
// between). The returned fd holds the lock; it is close-on-exec.
func LockFolder(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, ErrFolderGone
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return -1, ErrFolderGone
		}
		return -1, fmt.Errorf("flock %s: %w", dir, err)
	}
	var byFD, byPath unix.Stat_t
	if unix.Fstat(fd, &byFD) != nil || unix.Stat(dir, &byPath) != nil || byFD.Ino != byPath.Ino || byFD.Dev != byPath.Dev {
		unix.Close(fd)
		return -1, ErrFolderGone
	}
	return fd, nil
}

// Swept is one thing a sweep removed (or, dry, would remove).
type Swept struct {
	What string // "instance" or "test process folder"
	Path string
	// Instances are the instances a test process folder held.
	Instances []string
}

func (s Swept) String() string {
	if s.What == "instance" {
		return fmt.Sprintf("instance %s of a tori-run that ended (%s)", filepath.Base(s.Path), s.Path)
	}
	return fmt.Sprintf("%s %s of a test process that ended, with %d instance(s) %v", s.What, s.Path, len(s.Instances), s.Instances)
}

// SweepLeftovers removes what capsules of ended tori-runs (instances in
// o.Root owned by `run`; a daemon's are left for the next daemon to adopt)
// and of ended test processes (under harnessBase, "" for none) left behind:
// their processes, container state, cgroups, mounts and files. dry lists
// them and removes nothing.
func SweepLeftovers(ctx context.Context, o runtime.Options, harnessBase string, dry bool) ([]Swept, error) {
	var out []Swept
	ids, err := runtime.SweepStaleInstances(ctx, o, []string{runtime.OwnerRun}, dry)
	l := layout.New(o.Root, o.RunDir, o.StateRoot)
	for _, id := range ids {
		out = append(out, Swept{What: "instance", Path: l.Instance(id).Dir})
	}
	errs := []error{err}
	if harnessBase != "" {
		h, err := SweepProcesses(ctx, harnessBase, o.Log, dry)
		out, errs = append(out, h...), append(errs, err)
	}
	return out, errors.Join(errs...)
}

// SweepProcesses removes the folders under base of test processes that are
// gone (their flock is free): each Start's instances, then the folder. A
// folder whose instances could not all be removed stays, with the records
// the next try needs.
func SweepProcesses(ctx context.Context, base string, log zerolog.Logger, dry bool) ([]Swept, error) {
	entries, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Swept
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "p") {
			continue // a process folder is pPID-*; the archive cache and the probe cache stay
		}
		fd, err := LockFolder(dir)
		if err != nil {
			continue // alive, or being swept by someone else
		}
		s, err := sweepHarnessProcess(ctx, dir, log, dry)
		unix.Close(fd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

func sweepHarnessProcess(ctx context.Context, dir string, log zerolog.Logger, dry bool) (Swept, error) {
	s := Swept{What: "test process folder", Path: dir}
	roots, _ := filepath.Glob(filepath.Join(dir, "*", StartRoot))
	var errs []error
	for _, root := range roots {
		start := filepath.Dir(root)
		o := runtime.Options{Root: root, RunDir: filepath.Join(start, StartRun), StateRoot: filepath.Join(start, StartState), Log: log}
		// The test process is gone: every instance of its Starts is stale,
		// whoever's lock it was.
		ids, err := runtime.SweepStaleInstances(ctx, o, []string{runtime.OwnerRun, runtime.OwnerDaemon}, dry)
		s.Instances = append(s.Instances, ids...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return s, err // keep the folder: the records are what the next try needs
	}
	if dry {
		return s, nil
	}
	if err := RemoveTree(dir); err != nil {
		return s, err
	}
	log.Info().Str("folder", dir).Strs("instances", s.Instances).Msg("removed the folder of a test process that ended")
	return s, nil
}

// RemoveTree unmounts whatever is mounted under dir, deepest first, and
// removes it; it refuses to remove a tree that still holds a mount.
func RemoveTree(dir string) error {
	return errors.Join(overlay.UnmountAll(dir), overlay.RemoveUnmounted(dir))
}
