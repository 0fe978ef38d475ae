package cgroups

import (
	"fmt"
	"slices"

	lib "github.com/opencontainers/cgroups"
)

// SetFrozen freezes (true) or thaws (false) every process of the group and
// its sub-groups (cgroup.freeze on v2, the v1 freezer). A frozen process
// keeps what it has (open connections, queued signals) and runs again when
// thawed. The runtime freezes an old release for the moment a new release's
// probe must reach the new release alone.
func (g *Group) SetFrozen(frozen bool) error {
	if g.version != 2 && !slices.ContainsFunc(g.dirs, func(d groupDir) bool { return d.has("freezer") }) {
		return fmt.Errorf("cgroup %s: no freezer on this host", g.path)
	}
	m, err := g.manager(nil)
	if err != nil {
		return err
	}
	state := lib.Thawed
	if frozen {
		state = lib.Frozen
	}
	if err := m.Freeze(state); err != nil {
		return fmt.Errorf("cgroup %s: set %s: %w", g.path, state, err)
	}
	return nil
}
