package release

import (
	"fmt"
	"maps"
	"path"
	"slices"
)

// DefaultExcludes returns the patterns left out of every capsule: backup and
// editor files, version-control folders and Python bytecode caches. Each is
// matched with path.Match against an entry's base name; a matching folder is
// left out with everything in it.
func DefaultExcludes() []string {
	return []string{
		"*.bak", "*~", "*.orig", "*.swp", ".#*",
		".git", ".hg", ".svn",
		"__pycache__", "*.pyc",
	}
}

// excluder decides which app entries are left out, and remembers them.
type excluder struct {
	base  []string // matched against the base name
	extra []string // matched against the relative path and the base name
	seen  map[string]bool
}

func newExcluder(extra []string) (*excluder, error) {
	for _, p := range extra {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("exclude pattern %q: %w", p, err)
		}
	}
	return &excluder{base: DefaultExcludes(), extra: extra, seen: map[string]bool{}}, nil
}

// match reports whether the clean relative path p is left out, and records
// it. dir marks a folder, recorded with a trailing slash.
func (x *excluder) match(p string, dir bool) bool {
	name := path.Base(p)
	hit := false
	for _, pat := range x.base {
		if ok, _ := path.Match(pat, name); ok {
			hit = true
			break
		}
	}
	for _, pat := range x.extra {
		if hit {
			break
		}
		okPath, _ := path.Match(pat, p)
		okName, _ := path.Match(pat, name)
		hit = okPath || okName
	}
	if hit {
		if dir {
			p += "/"
		}
		x.seen[p] = true
	}
	return hit
}

// matchTree reports whether p or one of its parent folders is left out;
// only the topmost one left out is recorded.
func (x *excluder) matchTree(p string, dir bool) bool {
	parts := splitPath(p)
	for i := 1; i < len(parts); i++ {
		if x.match(path.Join(parts[:i]...), true) {
			return true
		}
	}
	return x.match(p, dir)
}

// excluded lists what was left out, sorted.
func (x *excluder) excluded() []string {
	return slices.Sorted(maps.Keys(x.seen))
}
