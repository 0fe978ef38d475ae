//go:build linux

package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

// GCOptions say what GC keeps.
type GCOptions struct {
	// DryRun lists what would be removed without removing it.
	DryRun bool
	// Keep is how many of the newest releases of each name (by install
	// time) to keep even when nothing references them. 0 keeps none.
	Keep int
}

// GC removes the releases that nothing references (see the package
// documentation) and that are not among the newest Keep of their name, and
// returns them. Each removal is crash-safe: the release is first renamed to
// releases/.trash-<digest>, so it is never seen half-removed, then deleted;
// trash left by a crash is removed by the next Open, Install or GC.
func (s *Store) GC(ctx context.Context, o GCOptions) ([]Release, error) {
	if o.Keep < 0 {
		return nil, fmt.Errorf("gc: keep %d: expected 0 or more", o.Keep)
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.sweep()
	rels, err := s.List()
	if err != nil {
		return nil, err
	}
	var doomed []Release
	seen := map[string]int{}
	for _, r := range rels { // by name, newest first
		seen[r.Name]++
		if seen[r.Name] <= o.Keep || r.InUse {
			continue
		}
		doomed = append(doomed, r)
	}
	if o.DryRun {
		return doomed, nil
	}
	var removed []Release
	for _, r := range doomed {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if err := s.remove(r); err != nil {
			return removed, err
		}
		s.log.Info().Str("digest", r.Digest).Str("name", r.Name).Str("version", r.Version).Msg("removed release")
		removed = append(removed, r)
	}
	return removed, nil
}

// remove moves a release to the trash, atomically, then deletes it.
func (s *Store) remove(r Release) error {
	trash := filepath.Join(s.releases, trashPrefix+r.Digest)
	if err := os.Rename(r.Path, trash); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("gc: %w", err)
	}
	if err := atomicfile.SyncDir(s.releases); err != nil {
		return err
	}
	if err := removeTree(trash); err != nil {
		return fmt.Errorf("gc: release %s is out of use but not fully deleted (the next run retries): %w", r.Digest, err)
	}
	return nil
}
