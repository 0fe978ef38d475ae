package release

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
	"time"
)

// canonHeader is the tar header of an index entry in canonical form: no
// owner names, uid and gid 0, the canonical mode, one fixed mtime, folders
// with a trailing slash. The tar format is left to archive/tar, which picks
// USTAR when the header fits and PAX otherwise (long or non-ASCII names).
func canonHeader(name string, kind nodeKind, mode, size int64, target string, mtime time.Time) *tar.Header {
	h := &tar.Header{Name: name, Mode: mode, ModTime: mtime}
	switch kind {
	case kindDir:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case kindSymlink:
		h.Typeflag = tar.TypeSymlink
		h.Linkname = target
	default:
		h.Typeflag = tar.TypeReg
		h.Size = size
	}
	return h
}

func (e *indexEntry) header(mtime time.Time) *tar.Header {
	return canonHeader(e.path, e.kind, e.mode, e.size, e.target, mtime)
}

// opener opens the content of a file entry of the index.
type opener func(e *indexEntry) (io.ReadCloser, error)

// writeCanonical writes a capsule's canonical tar stream to w: capsule.yml,
// tori/, tori/metadata.json, then app/ and its entries in index order. Every
// file's bytes are checked against the size and SHA-256 in the index as
// they are written, so the stream always matches its own index.
func writeCanonical(ctx context.Context, w io.Writer, mtime time.Time, manifest, metadata []byte, idx []indexEntry, open opener, prog *progress) error {
	tw := tar.NewWriter(w)
	for _, h := range []*tar.Header{
		canonHeader(manifestName, kindFile, 0o644, int64(len(manifest)), "", mtime),
		canonHeader(toriDir, kindDir, 0o755, 0, "", mtime),
		canonHeader(metadataName, kindFile, 0o644, int64(len(metadata)), "", mtime),
	} {
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if h.Name == manifestName {
			if _, err := tw.Write(manifest); err != nil {
				return err
			}
		}
		if h.Name == metadataName {
			if _, err := tw.Write(metadata); err != nil {
				return err
			}
		}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for i := 1; i < len(idx); i++ { // idx[0], capsule.yml, is written above
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &idx[i]
		if err := tw.WriteHeader(e.header(mtime)); err != nil {
			return fmt.Errorf("%s: %w", e.path, err)
		}
		if e.kind != kindFile {
			continue
		}
		if err := copyChecked(tw, e, open, *buf, prog); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyChecked copies file entry e from open to w, and checks its size and
// SHA-256 against the index.
func copyChecked(w io.Writer, e *indexEntry, open opener, buf []byte, prog *progress) error {
	rc, err := open(e)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w, h, prog), io.LimitReader(rc, e.size), buf)
	if err != nil {
		return fmt.Errorf("%s: %w", e.path, err)
	}
	if n != e.size {
		return fmt.Errorf("%s: %d bytes, expected %d: it changed while being read", e.path, n, e.size)
	}
	if !bytes.Equal(h.Sum(nil), e.sum[:]) {
		return fmt.Errorf("%s: %w: content changed while being read", e.path, ErrDigestMismatch)
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
