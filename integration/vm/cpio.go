package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// An archive is the content of the guest's initramfs, written as a cpio "newc" archive (what the kernel
// unpacks): directories, regular files (copied from host files or given as bytes), symlinks and device
// nodes. Everything is owned by root. Writing it here, rather than staging a tree for cpio(1), lets device
// nodes (/dev/console) and ownership be set without privileges and keeps the host's tools to a minimum.
type archive struct {
	entries map[string]*entry // by guest path, without the leading slash
}

type entry struct {
	mode  uint32 // file type and permission bits, as in the cpio header
	src   string // host file to copy (regular files), or ""
	data  []byte // content when src is "" (regular files), or the symlink target
	major uint32 // device nodes
	minor uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func newArchive() *archive { return &archive{entries: map[string]*entry{}} }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// add records e at p and creates p's parent directories as needed.
func (a *archive) add(p string, e *entry) {
	p = clean(p)
	for d := path.Dir(p); d != "." && d != ""; d = path.Dir(d) {
		if _, ok := a.entries[d]; !ok {
			a.entries[d] = &entry{mode: sIFDIR | 0o755}
		}
	}
	a.entries[p] = e
}

func (a *archive) dir(p string, perm uint32) { a.add(p, &entry{mode: sIFDIR | perm}) }

func (a *archive) bytes(p string, perm uint32, data []byte) {
	a.add(p, &entry{mode: sIFREG | perm, data: data})
}

func (a *archive) file(p string, perm uint32, src string) {
	a.add(p, &entry{mode: sIFREG | perm, src: src})
}

func (a *archive) symlink(p, target string) {
	a.add(p, &entry{mode: sIFLNK | 0o777, data: []byte(target)})
}

func (a *archive) chardev(p string, perm, major, minor uint32) {
	a.add(p, &entry{mode: sIFCHR | perm, major: major, minor: minor})
}

// tree adds the host directory src (files, directories and symlinks) at guest path dst.
func (a *archive) tree(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		g := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := uint32(info.Mode().Perm())
		switch {
		case d.IsDir():
			a.dir(g, perm|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			a.symlink(g, t)
		case info.Mode().IsRegular():
			a.file(g, perm, p)
		default:
			return fmt.Errorf("%s: %v files are not copied into the guest", p, info.Mode().Type())
		}
		return nil
	})
}

// write writes the archive to w in newc format, gzip-compressed when compress is set. Parents come before
// their children (sorted paths), as the kernel's unpacker needs.
func (a *archive) write(w io.Writer, compress bool) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	out := io.Writer(bw)
	var gz *gzip.Writer
	if compress {
		var err error
		if gz, err = gzip.NewWriterLevel(bw, gzip.BestSpeed); err != nil {
			return err
		}
		out = gz
	}
	cw := &cpioWriter{w: out}
	names := make([]string, 0, len(a.entries))
	for p := range a.entries {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if err := cw.entry(p, a.entries[p]); err != nil {
			return fmt.Errorf("initramfs: %s: %w", p, err)
		}
	}
	if err := cw.header("TRAILER!!!", &entry{}, 0); err != nil {
		return err
	}
	if err := cw.pad(); err != nil {
		return err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

type cpioWriter struct {
	w   io.Writer
	off int64
	ino uint32
}

func (c *cpioWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return n, err
}

func (c *cpioWriter) pad() error {
	if n := (4 - c.off%4) % 4; n > 0 {
		_, err := c.Write(make([]byte, n))
		return err
	}
	return nil
}

func (c *cpioWriter) header(name string, e *entry, size int64) error {
	if size > 0xffffffff {
		return fmt.Errorf("%d bytes is too big for cpio newc", size)
	}
	c.ino++
	nlink := 1
	if e.mode&0o170000 == sIFDIR {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
	// namesize (with the NUL), check.
	if _, err := fmt.Fprintf(c, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, e.mode, 0, 0, nlink, 0, size, 0, 0, e.major, e.minor, len(name)+1, 0); err != nil {
		return err
	}
	if _, err := io.WriteString(c, name+"\x00"); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) entry(name string, e *entry) error {
	if e.mode&0o170000 != sIFREG || e.src == "" {
		if err := c.header(name, e, int64(len(e.data))); err != nil {
			return err
		}
		if _, err := c.Write(e.data); err != nil {
			return err
		}
		return c.pad()
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := c.header(name, e, st.Size()); err != nil {
		return err
	}
	n, err := io.Copy(c, f)
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s changed size while being archived", e.src)
	}
	return c.pad()
}
