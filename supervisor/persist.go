package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
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
	return filepath.Join(s.opts.StateDir, name+".state.json")
}

func (s *Supervisor) loadState(name string) (persisted, error) {
	var ps persisted
	if s.opts.StateDir == "" {
		return ps, os.ErrNotExist
	}
	b, err := os.ReadFile(s.statePath(name))
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
	if err := writeFileAtomic(s.statePath(svc.cfg.Name), ps); err != nil {
		s.opts.Log.Warn().Err(err).Str("service", svc.cfg.Name).Msg("saving the service's state")
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
