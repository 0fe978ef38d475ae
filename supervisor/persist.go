package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

// persisted is what Options.StateDir keeps of a service, for a supervisor
// that adopts it later: its restart history and whether it was ready.
// Never a pid: the runtime finds the process by its cgroup and pidfd.
type persisted struct {
	History    History   `json:"history"`
	Restarts   int       `json:"restarts"`
	Started    time.Time `json:"started,omitzero"` // of the running process
	Ready      bool      `json:"ready"`
	LastExit   *Exit     `json:"last_exit,omitempty"`
	LastReason Reason    `json:"last_reason,omitempty"`
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
}

func (s *Supervisor) statePath(name string) string {
	return filepath.Join(s.opts.StateDir, stateFile(name))
}

func stateFile(name string) string { return name + ".state.json" }

func (s *Supervisor) loadState(name string) (persisted, error) {
	var ps persisted
	if s.opts.StateDir == "" {
		return ps, os.ErrNotExist
	}
	b, err := readFileIn(s.opts.StateDir, stateFile(name))
	if err != nil {
		return ps, err
	}
	if err := json.Unmarshal(b, &ps); err != nil {
		return ps, fmt.Errorf("%s: %w", s.statePath(name), err)
	}
	return ps, nil
}

// saveState writes svc's state file (temp file, rename). A failure is
// logged: it costs a future adoption its history, not supervision.
func (s *Supervisor) saveState(svc *service) {
	if s.opts.StateDir == "" {
		return
	}
	s.mu.Lock()
	ps := persisted{History: svc.hist, Restarts: svc.restarts, Ready: svc.state == StateReady,
		LastExit: svc.lastExit, LastReason: svc.lastReason, LastExitAt: svc.lastExitAt}
	if svc.proc != nil {
		ps.Started = svc.started
	}
	s.mu.Unlock()
	if err := writeFileAtomic(s.opts.StateDir, stateFile(svc.cfg.Name), ps); err != nil {
		s.opts.Log.Warn().Err(err).Str("service", svc.cfg.Name).Msg("saving the service's state")
	}
}

// The supervisor's files are opened so that no symlink, anywhere, is
// followed: the folder itself with O_NOFOLLOW, the file beneath it with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS). Even
// if a supervised process could write to the folder (it should not: keep
// StateDir out of its reach), a symlink it planted makes the write fail
// rather than land on whatever it points to.

// openIn opens name, one element, in dir.
func openIn(dir, name string, flags int, mode uint32) (*os.File, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("%q: one file name expected", name)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	path := filepath.Join(dir, name)
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{
		Flags:   uint64(flags) | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) { // Linux < 5.6: one element with O_NOFOLLOW is the same
		fd, err = unix.Openat(dfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func readFileIn(dir, name string) ([]byte, error) {
	f, err := openIn(dir, name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// writeFileAtomic writes v as JSON to dir/name, whole and durably, without
// following a symlink (atomicfile.WriteFile).
func writeFileAtomic(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q: one file name expected", name)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, name), b, 0o640)
}
