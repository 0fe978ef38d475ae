package release

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/rs/zerolog"
)

// entry is one entry of an app as it goes into the archive.
type entry struct {
	path   string // relative to the app, clean, slash-separated
	kind   nodeKind
	exec   bool // any execute bit in the input
	size   int64
	target string   // symlinks
	sum    [32]byte // files: the SHA-256 of the content, set by hashFiles
	ref    any      // the source's handle, e.g. *zip.File
}

// mode is the entry's canonical permission bits.
func (e *entry) mode() int64 {
	switch {
	case e.kind == kindSymlink:
		return 0o777
	case e.kind == kindDir || e.exec:
		return 0o755
	}
	return 0o644
}

// source is an app being built: a folder or a zip.
type source interface {
	// name is the input as given, for messages.
	name() string
	// scan adds the app's entries to t, leaving out what x excludes.
	scan(t *tree, x *excluder, log zerolog.Logger) error
	// open opens a file entry's content.
	open(e *entry) (io.ReadCloser, error)
	Close() error
}

// tree collects the entries of an app, checking them as they come.
type tree struct {
	input  string
	byPath map[string]*entry
	list   []*entry
	tally  tally
}

func newTree(input string, lim Limits) *tree {
	return &tree{input: input, byPath: map[string]*entry{}, tally: tally{lim: lim}}
}

// add adds e; raw is its name in the input.
func (t *tree) add(e *entry, raw string) error {
	if old, dup := t.byPath[e.path]; dup {
		if old.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return entryErr(t.input, raw, ErrUnsafeEntry, "duplicate entry for %s", e.path)
	}
	size := int64(0)
	if e.kind == kindFile {
		size = e.size
	}
	if err := t.tally.add(t.input, raw, size); err != nil {
		return err
	}
	t.byPath[e.path] = e
	t.list = append(t.list, e)
	return nil
}

func (t *tree) lookup(p string) (nodeKind, string) {
	e, ok := t.byPath[p]
	if !ok {
		return kindNone, ""
	}
	return e.kind, e.target
}

// finish adds the folders that are only implied, checks that every parent
// is a folder and every symlink stays inside, and sorts the entries
// bytewise by path.
func (t *tree) finish() error {
	for _, e := range append([]*entry(nil), t.list...) {
		if err := t.addParents(e); err != nil {
			return err
		}
	}
	sort.Slice(t.list, func(i, j int) bool { return t.list[i].path < t.list[j].path })
	for _, e := range t.list {
		if e.kind != kindSymlink {
			continue
		}
		if err := checkLink(e.path, e.target, t.lookup); err != nil {
			return entryErr(t.input, e.path, ErrUnsafeEntry, "%v (leave it out with an exclude pattern)", err)
		}
	}
	return nil
}

func (t *tree) addParents(e *entry) error {
	for dir := path.Dir(e.path); dir != "."; dir = path.Dir(dir) {
		p, ok := t.byPath[dir]
		if !ok {
			if err := t.add(&entry{path: dir, kind: kindDir}, dir+"/"); err != nil {
				return err
			}
			continue
		}
		if p.kind != kindDir {
			return entryErr(t.input, e.path, ErrUnsafeEntry, "inside %s, which is a %s, not a folder", dir, kindName(p.kind))
		}
	}
	return nil
}

// files returns the file entries, in order, and their total size.
func (t *tree) files() ([]*entry, int64) {
	var out []*entry
	var total int64
	for _, e := range t.list {
		if e.kind == kindFile {
			out = append(out, e)
			total += e.size
		}
	}
	return out, total
}

func kindName(k nodeKind) string {
	switch k {
	case kindFile:
		return "file"
	case kindDir:
		return "dir"
	case kindSymlink:
		return "symlink"
	}
	return "special file"
}

func parseKind(s string) (nodeKind, error) {
	switch s {
	case "file":
		return kindFile, nil
	case "dir":
		return kindDir, nil
	case "symlink":
		return kindSymlink, nil
	}
	return kindNone, fmt.Errorf("type %q: expected file, dir or symlink", s)
}

func hasParentPrefix(p, dir string) bool {
	return strings.HasPrefix(p, dir+"/")
}
