package release

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strings"

	"github.com/rs/zerolog"
)

// zipSource is an app in a zip file. The zip is untrusted: its names, types
// and sizes are checked before anything is read, and no entry is ever read
// past the size it declares.
type zipSource struct {
	file string
	zr   *zip.ReadCloser
}

func openZip(file string) (*zipSource, error) {
	zr, err := zip.OpenReader(file)
	if err != nil && zr == nil {
		return nil, fmt.Errorf("app zip %s: %w", file, err)
	}
	// zip.ErrInsecurePath with a usable reader: names are checked below,
	// with messages naming the entry.
	return &zipSource{file: file, zr: zr}, nil
}

func (z *zipSource) name() string { return z.file }
func (z *zipSource) Close() error { return z.zr.Close() }

func (z *zipSource) open(e *entry) (io.ReadCloser, error) {
	f := e.ref.(*zip.File)
	rc, err := f.Open()
	if err != nil {
		return nil, entryErr(z.file, f.Name, nil, "cannot be read: %v", err)
	}
	return &zipEntryReader{ReadCloser: rc, z: z, f: f}, nil
}

// zipEntryReader names the entry in read errors: archive/zip fails with
// ErrFormat when an entry inflates past the size it declares (a bomb), and
// with ErrChecksum when its content is not what its CRC says.
type zipEntryReader struct {
	io.ReadCloser
	z *zipSource
	f *zip.File
}

func (r *zipEntryReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case errors.Is(err, zip.ErrFormat):
		return n, entryErr(r.z.file, r.f.Name, ErrLimit, "inflates to more than the %d bytes it declares, or is corrupt (%v)", r.f.UncompressedSize64, err)
	case errors.Is(err, zip.ErrChecksum):
		return n, entryErr(r.z.file, r.f.Name, ErrUnsafeEntry, "content does not match its CRC (%v)", err)
	}
	return n, entryErr(r.z.file, r.f.Name, nil, "cannot be read: %v", err)
}

// scan checks every entry of the zip into a tree, leaving out what x
// excludes.
func (z *zipSource) scan(t *tree, x *excluder, log zerolog.Logger) error {
	for _, f := range z.zr.File {
		e, err := z.entry(f)
		if err != nil {
			return err
		}
		if e == nil {
			continue
		}
		if x.matchTree(e.path, e.kind == kindDir) {
			log.Debug().Str("path", e.path).Msg("excluded")
			continue
		}
		if err := t.add(e, f.Name); err != nil {
			return err
		}
	}
	return nil
}

// entry checks one zip entry; it returns nil for a "./" entry.
func (z *zipSource) entry(f *zip.File) (*entry, error) {
	raw := f.Name
	mode := f.Mode()
	isDir := strings.HasSuffix(raw, "/") || mode.IsDir()
	p := strings.TrimSuffix(raw, "/")
	if p == "." || p == "" && isDir {
		return nil, nil
	}
	if msg := checkRelPath(p); msg != "" {
		return nil, entryErr(z.file, raw, ErrUnsafeEntry, "%s", msg)
	}
	if f.UncompressedSize64 > math.MaxInt64 {
		return nil, entryErr(z.file, raw, ErrLimit, "declares an absurd size (%d bytes)", f.UncompressedSize64)
	}
	size := int64(f.UncompressedSize64)
	switch {
	case isDir:
		return &entry{path: p, kind: kindDir}, nil
	case mode&fs.ModeSymlink != 0:
		target, err := z.readLink(f, size)
		if err != nil {
			return nil, err
		}
		return &entry{path: p, kind: kindSymlink, target: target}, nil
	case mode.IsRegular():
		return &entry{path: p, kind: kindFile, size: size, exec: mode.Perm()&0o111 != 0, ref: f}, nil
	}
	return nil, entryErr(z.file, raw, ErrUnsafeEntry, "%s; a capsule holds only files, folders and symlinks", describeMode(mode))
}

func (z *zipSource) readLink(f *zip.File, size int64) (string, error) {
	if size > maxTargetLen {
		return "", entryErr(z.file, f.Name, ErrUnsafeEntry, "symlink target of %d bytes; at most %d expected", size, maxTargetLen)
	}
	rc, err := f.Open()
	if err != nil {
		return "", entryErr(z.file, f.Name, nil, "cannot be read: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxTargetLen+1))
	if err != nil {
		return "", entryErr(z.file, f.Name, nil, "cannot be read: %v", err)
	}
	if int64(len(b)) != size {
		return "", entryErr(z.file, f.Name, ErrUnsafeEntry, "holds %d bytes but declares %d", len(b), size)
	}
	return string(b), nil
}
