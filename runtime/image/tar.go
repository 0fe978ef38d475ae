package image

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// epoch is the time of every entry and of the image itself: the output
// depends on the release, never on when it was exported.
var epoch = time.Unix(0, 0).UTC()

// entry is one file of a layer, by its path in the image (no leading /).
type entry struct {
	typ      byte // tar.TypeReg, TypeDir, TypeSymlink
	mode     int64
	linkname string
	src      string // host file to copy (TypeReg), or "" with data
	data     []byte
}

// layer collects the entries of one layer; write emits them sorted, every
// parent folder first, with fixed times and owner 0.
type layer struct {
	entries map[string]*entry
}

func newLayer() *layer { return &layer{entries: map[string]*entry{}} }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func (l *layer) dir(p string, mode int64) {
	p = clean(p)
	if p == "" {
		return
	}
	if e, ok := l.entries[p]; ok && e.typ == tar.TypeDir {
		e.mode = mode
		return
	}
	l.entries[p] = &entry{typ: tar.TypeDir, mode: mode}
}

func (l *layer) file(p string, mode int64, src string) {
	l.entries[clean(p)] = &entry{typ: tar.TypeReg, mode: mode, src: src}
}

func (l *layer) bytes(p string, mode int64, data []byte) {
	l.entries[clean(p)] = &entry{typ: tar.TypeReg, mode: mode, data: data}
}

func (l *layer) symlink(p, target string) {
	l.entries[clean(p)] = &entry{typ: tar.TypeSymlink, mode: 0o777, linkname: target}
}

func (l *layer) has(p string) bool { _, ok := l.entries[clean(p)]; return ok }

// tree adds the host folder src at dst: folders, regular files and symlinks
// (as they are), keeping permission bits. skip, if set, leaves out an entry
// (and a folder's contents) by its path relative to src.
func (l *layer) tree(src, dst string, skip func(rel string, d fs.DirEntry) bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel != "." && skip != nil && skip(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		perm := int64(fi.Mode().Perm())
		switch {
		case fi.IsDir():
			l.dir(target, perm|0o700)
		case fi.Mode().IsRegular():
			l.file(target, perm, p)
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			l.symlink(target, t)
		default:
			// Sockets, fifos and devices have no place in an image.
		}
		return nil
	})
}

// write emits the layer as an uncompressed tar.
func (l *layer) write(w io.Writer) error {
	// Every parent of an entry is a folder entry of its own.
	for p := range l.entries {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := l.entries[d]; !ok {
				l.entries[d] = &entry{typ: tar.TypeDir, mode: 0o755}
			}
		}
	}
	tw := tar.NewWriter(w)
	for _, p := range slices.Sorted(maps.Keys(l.entries)) {
		e := l.entries[p]
		h := &tar.Header{Typeflag: e.typ, Name: p, Mode: e.mode, ModTime: epoch, Linkname: e.linkname, Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Name += "/"
		}
		var src *os.File
		if e.typ == tar.TypeReg {
			if e.src != "" {
				f, err := os.Open(e.src)
				if err != nil {
					return err
				}
				fi, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				src, h.Size = f, fi.Size()
			} else {
				h.Size = int64(len(e.data))
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			if src != nil {
				src.Close()
			}
			return fmt.Errorf("layer entry %s: %w", p, err)
		}
		switch {
		case src != nil:
			n, err := io.Copy(tw, src)
			src.Close()
			if err != nil {
				return fmt.Errorf("layer entry %s (from %s): %w", p, e.src, err)
			}
			if n != h.Size {
				return fmt.Errorf("layer entry %s: %s changed size while it was read", p, e.src)
			}
		case e.typ == tar.TypeReg:
			if _, err := tw.Write(e.data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
