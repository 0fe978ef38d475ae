package toritest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime/harness"
)

// Where Starts live:
//
//	$TMPDIR/toritest-<uid>/          one base per user
//	    p<pid>-<random>/             one per test process, flock'ed (LOCK_EX) by it for its life
//	        <n>/r/ u/ s/             one per Start: tori-run's root, run dir and state root
//
// The flock is the kernel's record that the process lives: it goes with the
// process, however it ends. A process folder whose flock is free belongs to
// a dead process, and the next Start (of any test binary), or tori-run gc,
// sweeps it (harness.SweepProcesses): the instances of each Start's root
// (container state, cgroups, mounts, files), then the folder.
//
// The test's own t.TempDir() is not used: it is not found by another
// process after a kill -9, and it is removed before the capsule's cleanup
// runs when both are registered in the same test.

// The folders of a Start: short, since the instances' Unix sockets live
// beneath them and a socket path has at most 107 bytes.
const startRoot, startRun, startState = harness.StartRoot, harness.StartRun, harness.StartState

var (
	procMu  sync.Mutex // guards procDir, procFD, active
	procDir string
	procFD  = -1 // holds the flock while procDir exists
	active  int  // Start folders in procDir
	starts  atomic.Int64
)

func baseDir() string { return harness.Base() }

// newStartDir sweeps what dead test processes left, then makes a folder for
// one Start in this process's folder. releaseStartDir undoes it.
func newStartDir() (string, error) {
	if err := sweepDead(); err != nil {
		// Not fatal: the leftovers are another process's.
		fmt.Fprintf(os.Stderr, "toritest: cleaning up after an earlier test process: %v\n", err)
	}
	procMu.Lock()
	defer procMu.Unlock()
	pd, err := processDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(pd, strconv.FormatInt(starts.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	active++
	return dir, nil
}

// releaseStartDir is called once a Start's folder is removed; the last one
// removes the process's folder too (when empty: a folder whose removal
// failed stays, locked, for the sweep after this process ends).
func releaseStartDir() {
	procMu.Lock()
	defer procMu.Unlock()
	if active--; active > 0 || procDir == "" {
		return
	}
	if os.Remove(procDir) == nil {
		unix.Close(procFD)
		procDir, procFD = "", -1
	}
}

// processDir makes and locks this process's folder. Call with procMu held.
func processDir() (string, error) {
	if procDir != "" {
		return procDir, nil
	}
	base := baseDir()
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("toritest: %w", err)
	}
	if err := checkOwnBase(base); err != nil {
		return "", err
	}
	for range 10 {
		dir, err := os.MkdirTemp(base, fmt.Sprintf("p%d-", os.Getpid()))
		if err != nil {
			return "", fmt.Errorf("toritest: %w", err)
		}
		fd, err := lockDir(dir)
		if errors.Is(err, errGone) {
			continue // a sweeper took it between mkdir and lock: make another
		}
		if err != nil {
			return "", err
		}
		procDir, procFD = dir, fd
		return dir, nil
	}
	return "", fmt.Errorf("toritest: could not make a process folder under %s", base)
}

var errGone = harness.ErrFolderGone

func lockDir(dir string) (int, error) {
	fd, err := harness.LockFolder(dir)
	if err != nil && !errors.Is(err, errGone) {
		err = fmt.Errorf("toritest: %w", err)
	}
	return fd, err
}

// checkOwnBase refuses a base folder another user could write into: its
// contents are run as root.
func checkOwnBase(base string) error {
	var st unix.Stat_t
	if err := unix.Lstat(base, &st); err != nil {
		return fmt.Errorf("toritest: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("toritest: %s must be a folder of uid %d writable only by it (it is mode %o, uid %d); remove it", base, os.Geteuid(), st.Mode&0o7777, st.Uid)
	}
	return nil
}

// sweepDead removes the folders of test processes that are gone
// (harness.SweepProcesses; tori-run gc does the same).
func sweepDead() error {
	_, err := harness.SweepProcesses(context.Background(), baseDir(), zerolog.Nop(), false)
	return err
}
