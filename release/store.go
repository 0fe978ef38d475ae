//go:build linux

package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/layout"
)

// Store is the releases installed under a root: <root>/releases/<digest>/.
// Its methods are safe for concurrent use, by goroutines and by processes:
// changes to releases/ happen under the file lock releases/.lock.
type Store struct {
	root     string
	releases string
	lim      Limits
	log      zerolog.Logger
	progress io.Writer
	// hook, when set (by tests), is called at named points of Install:
	// "entry" after each app entry is written, "staged" before publishing,
	// "published" after.
	hook func(event string)
}

// Option configures a Store.
type Option func(*Store)

// WithLimits sets the limits Install applies to archives.
func WithLimits(l Limits) Option { return func(s *Store) { s.lim = l.withDefaults() } }

// WithLogger sets the logger for what the Store does and cleans up.
func WithLogger(l zerolog.Logger) Option { return func(s *Store) { s.log = l } }

// WithProgress makes Install print an updating progress line to w.
func WithProgress(w io.Writer) Option { return func(s *Store) { s.progress = w } }

// Release is an installed release.
type Release struct {
	Digest      string    `json:"digest"` // 64 hex digits
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	BuildSHA    string    `json:"build_sha,omitempty"`
	Size        int64     `json:"size"`  // total size of its files
	Files       int       `json:"files"` // regular files in app/
	InstalledAt time.Time `json:"installed_at"`
	InUse       bool      `json:"in_use"`
	UsedBy      []string  `json:"used_by,omitempty"` // the files referencing it, relative to the root
	Path        string    `json:"path"`              // <root>/releases/<digest>
}

// installRecord is tori/installed.json, written before the release is
// published.
type installRecord struct {
	InstalledAt time.Time `json:"installed_at"`
	Archive     string    `json:"archive,omitempty"`
}

const (
	lockName      = ".lock"
	stagingPrefix = ".staging-"
	trashPrefix   = ".trash-"
)

// Open opens the store under root, creating root/releases if needed, and
// removes what killed installs and removals left behind.
func Open(root string, opts ...Option) (*Store, error) {
	s := &Store{root: root, releases: layout.Layout{Root: root}.Releases(), lim: DefaultLimits(), log: zerolog.Nop()}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(s.releases, 0o755); err != nil {
		return nil, fmt.Errorf("release store: %w", err)
	}
	unlock, err := s.lock(context.Background())
	if errors.Is(err, fs.ErrPermission) {
		s.log.Debug().Err(err).Msg("store is read-only for this user; leftovers not cleaned")
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.sweep()
	return s, nil
}

// Root is the store's root folder.
func (s *Store) Root() string { return s.root }

// lock takes releases/.lock, waiting for it until ctx ends.
func (s *Store) lock(ctx context.Context) (func(), error) {
	fl := flock.New(filepath.Join(s.releases, lockName), flock.SetPermissions(0o644))
	ok, err := fl.TryLockContext(ctx, 10*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", fl.Path(), err)
	}
	if !ok {
		return nil, fmt.Errorf("lock %s: %w", fl.Path(), ctx.Err())
	}
	return func() { _ = fl.Unlock() }, nil
}

// sweep removes staging folders of dead installs and trash of interrupted
// removals. A live install holds a lock on its staging folder. It runs with
// the store locked; what it cannot remove it logs and leaves.
func (s *Store) sweep() {
	des, err := os.ReadDir(s.releases)
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot list releases to clean up")
		return
	}
	for _, de := range des {
		name := de.Name()
		p := filepath.Join(s.releases, name)
		switch {
		case strings.HasPrefix(name, stagingPrefix):
			s.removeDeadStaging(p)
		case strings.HasPrefix(name, trashPrefix):
			if err := removeTree(p); err != nil {
				s.log.Warn().Err(err).Str("path", p).Msg("cannot remove trash")
			}
		}
	}
}

func (s *Store) removeDeadStaging(p string) {
	d, err := os.Open(p)
	if err != nil {
		s.log.Warn().Err(err).Str("path", p).Msg("cannot open staging leftover")
		return
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return // a live install
	}
	if err := removeTree(p); err != nil {
		s.log.Warn().Err(err).Str("path", p).Msg("cannot remove staging leftover")
		return
	}
	s.log.Info().Str("path", p).Msg("removed what an interrupted install left")
}

// removeTree removes p and everything in it, making read-only folders
// writable first (a release has no write bits).
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	// Best effort: whatever stays read-only makes the RemoveAll below fail,
	// and that error is the one reported.
	_ = filepath.WalkDir(p, func(q string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// List returns the installed releases, by name and then newest first.
func (s *Store) List() ([]Release, error) {
	des, err := os.ReadDir(s.releases)
	if err != nil {
		return nil, fmt.Errorf("release store: %w", err)
	}
	refs, err := s.references()
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, de := range des {
		if !de.IsDir() || !isDigest(de.Name()) {
			continue
		}
		r, err := s.load(de.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			s.log.Warn().Err(err).Str("release", de.Name()).Msg("skipping an unreadable release")
			continue
		}
		r.UsedBy = refs[r.Digest]
		r.InUse = len(r.UsedBy) > 0
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if !a.InstalledAt.Equal(b.InstalledAt) {
			return a.InstalledAt.After(b.InstalledAt)
		}
		return a.Digest < b.Digest
	})
	return out, nil
}

// load reads what a release records about itself.
func (s *Store) load(digest string) (*Release, error) {
	dir := filepath.Join(s.releases, digest)
	m, err := readMetadataFile(dir, s.lim)
	if err != nil {
		return nil, err
	}
	var rec installRecord
	b, err := os.ReadFile(filepath.Join(dir, installName))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, installName), err)
	}
	r := &Release{Digest: digest, Name: m.Name, Version: m.Version, BuildSHA: m.BuildSHA, InstalledAt: rec.InstalledAt, Path: dir}
	for _, f := range m.Files {
		if f.Type == "file" && strings.HasPrefix(f.Path, appDir+"/") {
			r.Files++
			r.Size += f.Size
		}
	}
	return r, nil
}

func readMetadataFile(dir string, lim Limits) (*Metadata, error) {
	f, err := os.Open(filepath.Join(dir, metadataName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m Metadata
	if err := json.NewDecoder(io.LimitReader(f, lim.maxMetadataSize())).Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &m, nil
}

// references maps each digest to the files naming it: any file under
// <root>/refs/, and <root>/instances/*/release. A file names every run of
// exactly 64 lowercase hex digits in its first 64 KiB.
func (s *Store) references() (map[string][]string, error) {
	refs := map[string][]string{}
	note := func(p string) error {
		digests, err := digestsIn(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		for _, d := range digests {
			refs[d] = append(refs[d], filepath.ToSlash(rel))
		}
		return nil
	}
	l := layout.Layout{Root: s.root}
	err := filepath.WalkDir(l.Refs(), func(p string, de fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == l.Refs() {
			return fs.SkipAll
		}
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		if err := note(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading references: %w", err)
	}
	dirs, err := filepath.Glob(l.InstanceGlob(""))
	if err != nil {
		return nil, err
	}
	var inst []string
	for _, d := range dirs {
		inst = append(inst, layout.InstanceAt(d).Release)
	}
	for _, p := range inst {
		if err := note(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading references: %w", err)
		}
	}
	return refs, nil
}

func digestsIn(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var out []string
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && isLowerHex(b[j]) {
			j++
		}
		if j-i == 64 {
			out = append(out, string(b[i:j]))
		}
		i = max(j, i+1)
	}
	return out, nil
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return s != ""
}

func isDigest(s string) bool { return len(s) == 64 && isHex(s) }

// Resolve finds a release by NAME (the newest installed of that name), by
// digest, or by a unique digest prefix of at least 6 hex digits. A
// "sha256:" prefix forces a digest; a reference that is both a name and a
// digest prefix of different releases is ambiguous.
func (s *Store) Resolve(ref string) (*Release, error) {
	rels, err := s.List()
	if err != nil {
		return nil, err
	}
	hexRef, forced := strings.CutPrefix(strings.ToLower(ref), "sha256:")
	if forced && (!isHex(hexRef) || len(hexRef) < 6) {
		return nil, fmt.Errorf("release %q: expected sha256: and at least 6 hex digits: %w", ref, ErrNotFound)
	}
	var byName, byDigest []Release
	for _, r := range rels {
		if !forced && r.Name == ref {
			byName = append(byName, r)
		}
		if isHex(hexRef) && len(hexRef) >= 6 && strings.HasPrefix(r.Digest, hexRef) {
			byDigest = append(byDigest, r)
		}
	}
	switch {
	case len(byName) > 0 && len(byDigest) > 0 && byName[0].Digest != byDigest[0].Digest:
		return nil, fmt.Errorf("release %q is both a capsule name and a digest prefix of %s; write sha256:%s for the digest: %w", ref, byDigest[0].Digest[:12], hexRef, ErrAmbiguous)
	case len(byName) > 0:
		return &byName[0], nil // List sorts newest first
	case len(byDigest) == 1:
		return &byDigest[0], nil
	case len(byDigest) > 1:
		return nil, fmt.Errorf("release %q matches %d releases (%s, %s, ...); give more digits: %w", ref, len(byDigest), byDigest[0].Digest[:12], byDigest[1].Digest[:12], ErrAmbiguous)
	}
	if isHex(hexRef) && len(hexRef) < 6 {
		return nil, fmt.Errorf("release %q: no capsule of that name, and a digest prefix needs at least 6 hex digits: %w", ref, ErrNotFound)
	}
	return nil, fmt.Errorf("release %q: no installed release of that name or digest under %s: %w", ref, s.releases, ErrNotFound)
}
