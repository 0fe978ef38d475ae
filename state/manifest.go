package state

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

const (
	manifestPrefix = "MANIFEST-"
	manifestSuffix = ".json"
	manifestFormat = 1
)

// manifest lists the live data files. Each generation is a new immutable
// file, made current by an atomic rename: the highest generation is current.
type manifest struct {
	Format     int        `json:"format"`
	Generation uint64     `json:"generation"`
	Seq        uint64     `json:"seq"`   // every record up to Seq is in Files
	Files      []fileMeta `json:"files"` // oldest first; newer files win
}

func manifestName(gen uint64) string {
	return fmt.Sprintf("%s%020d%s", manifestPrefix, gen, manifestSuffix)
}

// listManifests returns the generations found in dir, oldest first.
func listManifests(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read manifest folder: %w", err)
	}
	var gens []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, manifestPrefix) || !strings.HasSuffix(name, manifestSuffix) {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, manifestPrefix), manifestSuffix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: unexpected file %s in the manifest folder", ErrCorrupt, filepath.Join(dir, name))
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}

func readManifest(dir string, gen uint64) (manifest, error) {
	path := filepath.Join(dir, manifestName(gen))
	data, err := os.ReadFile(path)
	if err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return manifest{}, fmt.Errorf("%w: manifest %s: %w", ErrCorrupt, path, err)
	}
	if m.Format != manifestFormat || m.Generation != gen {
		return manifest{}, fmt.Errorf("%w: manifest %s: format %d generation %d", ErrCorrupt, path, m.Format, m.Generation)
	}
	return m, nil
}

// currentManifest loads the newest manifest, or an empty one if there is none.
// A newest manifest that cannot be read is an error, never a silent fallback
// to an older one: the log may already be trimmed past the older one.
func currentManifest(dir string) (manifest, error) {
	gens, err := listManifests(dir)
	if err != nil || len(gens) == 0 {
		return manifest{Format: manifestFormat}, err
	}
	return readManifest(dir, gens[len(gens)-1])
}

func writeManifest(dir string, m manifest, sync syncFunc) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest %d: %w", m.Generation, err)
	}
	return publish(dir, manifestName(m.Generation), sync, func(f *os.File) error {
		_, err := f.Write(append(data, '\n'))
		return err
	})
}

// fileClaims are the names of data files written and not yet listed by a
// manifest: a flush and a compaction write theirs on different goroutines,
// and garbage collection after one's manifest must not remove the other's.
// The nil *fileClaims claims nothing.
type fileClaims struct {
	mu    sync.Mutex
	names map[string]bool
}

func (c *fileClaims) add(name string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names == nil {
		c.names = map[string]bool{}
	}
	c.names[name] = true
}

func (c *fileClaims) remove(name string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.names, name)
}

func (c *fileClaims) has(name string) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.names[name]
}

// collectGarbage removes all manifests but the newest keep, then every file in
// dataDir that none of the kept manifests lists. With claims nil (at Open and
// in Repair, when nothing else writes) temporaries go too; otherwise files in
// progress are left alone: temporaries (each writer removes its own when it
// fails; the next Open removes a crashed one's) and claimed names. It returns
// the names it removed.
func collectGarbage(manDir, dataDir string, keep int, claims *fileClaims) ([]string, error) {
	gens, err := listManifests(manDir)
	if err != nil {
		return nil, err
	}
	var removed []string
	if len(gens) > keep {
		for _, g := range gens[:len(gens)-keep] {
			p := filepath.Join(manDir, manifestName(g))
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				return removed, fmt.Errorf("remove old manifest: %w", err)
			}
			removed = append(removed, p)
		}
		gens = gens[len(gens)-keep:]
	}
	live := map[string]bool{}
	for _, g := range gens {
		m, err := readManifest(manDir, g)
		if err != nil {
			return removed, err
		}
		for _, f := range m.Files {
			live[f.Name] = true
		}
	}
	rm, err := removeUnlisted(dataDir, func(name string) bool {
		return live[name] || claims != nil && (strings.HasPrefix(name, ".tmp-") || claims.has(name))
	})
	removed = append(removed, rm...)
	if err == nil {
		err = removeTemporaries(manDir)
	}
	return removed, err
}

func removeUnlisted(dir string, keep func(name string) bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read data folder: %w", err)
	}
	var removed []string
	for _, e := range ents {
		if keep(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("remove unlisted file: %w", err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

func removeTemporaries(dir string) error {
	tmps, err := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if err != nil {
		return fmt.Errorf("list temporaries in %s: %w", dir, err)
	}
	for _, p := range tmps {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove temporary: %w", err)
		}
	}
	return nil
}
