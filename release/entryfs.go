package release

import (
	"io"
	"io/fs"
	"path"
	"time"
)

// treeFS is the app as it will be in the capsule, as an fs.FS: only the
// entries kept, with their canonical modes, symlinks followed inside the
// tree. specs.CheckApp runs on it, so it judges what is shipped.
type treeFS struct {
	t   *tree
	src source
}

func (f treeFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	p := name
	if p != "." {
		r, err := resolve(name, f.t.lookup, true)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		p = r
	}
	if p == "" || p == "." {
		return &treeDir{info: treeInfo{name: ".", mode: fs.ModeDir | 0o755}}, nil
	}
	e, ok := f.t.byPath[p]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	info := treeInfo{name: path.Base(name), size: e.size, mode: fs.FileMode(e.mode())}
	if e.kind == kindDir {
		info.mode |= fs.ModeDir
		return &treeDir{info: info}, nil
	}
	rc, err := f.src.open(e)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &treeFile{ReadCloser: rc, info: info}, nil
}

type treeInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i treeInfo) Name() string       { return i.name }
func (i treeInfo) Size() int64        { return i.size }
func (i treeInfo) Mode() fs.FileMode  { return i.mode }
func (i treeInfo) ModTime() time.Time { return time.Time{} }
func (i treeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i treeInfo) Sys() any           { return nil }

type treeFile struct {
	io.ReadCloser
	info treeInfo
}

func (f *treeFile) Stat() (fs.FileInfo, error) { return f.info, nil }

type treeDir struct{ info treeInfo }

func (d *treeDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *treeDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: fs.ErrInvalid}
}
func (d *treeDir) Close() error { return nil }
