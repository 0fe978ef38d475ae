package release

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/rs/zerolog"
)

// dirSource is an app in a folder. It reads through an os.Root, so nothing
// outside the folder is read even if the folder changes during the build.
type dirSource struct {
	dir  string
	root *os.Root
}

func openDir(dir string) (*dirSource, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("app folder: %w", err)
	}
	return &dirSource{dir: dir, root: root}, nil
}

func (d *dirSource) name() string { return d.dir }
func (d *dirSource) Close() error { return d.root.Close() }

func (d *dirSource) open(e *entry) (io.ReadCloser, error) {
	return d.root.OpenFile(e.path, os.O_RDONLY|oNoFollow, 0)
}

// scan walks the folder into a tree, leaving out what x excludes.
func (d *dirSource) scan(t *tree, x *excluder, log zerolog.Logger) error {
	fsys := d.root.FS()
	return fs.WalkDir(fsys, ".", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", d.dir, err)
		}
		if p == "." {
			return nil
		}
		if x.match(p, de.IsDir()) {
			log.Debug().Str("path", p).Msg("excluded")
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if msg := checkRelPath(p); msg != "" {
			return entryErr(d.dir, p, ErrUnsafeEntry, "%s", msg)
		}
		e, err := d.entry(fsys, p, de)
		if err != nil {
			return err
		}
		return t.add(e, p)
	})
}

func (d *dirSource) entry(fsys fs.FS, p string, de fs.DirEntry) (*entry, error) {
	switch typ := de.Type(); {
	case typ.IsDir():
		return &entry{path: p, kind: kindDir}, nil
	case typ&fs.ModeSymlink != 0:
		target, err := fs.ReadLink(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.dir, err)
		}
		return &entry{path: p, kind: kindSymlink, target: target}, nil
	case typ.IsRegular():
		info, err := de.Info()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.dir, err)
		}
		return &entry{path: p, kind: kindFile, size: info.Size(), exec: info.Mode().Perm()&0o111 != 0}, nil
	default:
		return nil, entryErr(d.dir, p, ErrUnsafeEntry, "%s; a capsule holds only files, folders and symlinks (leave it out with an exclude pattern)", describeMode(typ))
	}
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return fmt.Sprintf("an irregular file (mode %s)", m)
}
