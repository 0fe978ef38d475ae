//go:build linux

package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// VerifyReport is what Verify found in an installed release.
type VerifyReport struct {
	Release Release
	// Changed lists entries whose content, type, mode or target differ from
	// the index, with the reason in Reasons.
	Changed []string
	Reasons map[string]string
	// Missing lists indexed entries that are gone; Added lists entries that
	// are not in the index.
	Missing []string
	Added   []string
}

// OK reports whether the release is exactly as installed.
func (r *VerifyReport) OK() bool {
	return len(r.Changed) == 0 && len(r.Missing) == 0 && len(r.Added) == 0
}

// Verify re-hashes an installed release (capsule.yml and app/) against the
// file index it was installed with, and reports what was changed, removed
// or added. When every file matches, it also rebuilds the canonical tar
// stream and checks that it still hashes to the release's digest, which
// catches an edited tori/metadata.json.
func (s *Store) Verify(ref string) (*VerifyReport, error) {
	rel, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	metaFile := filepath.Join(rel.Path, metadataName)
	metadata, err := readLimited(metaFile, s.lim.maxMetadataSize())
	if err != nil {
		return nil, err
	}
	meta, idx, err := parseMetadata(bytes.NewReader(metadata), rel.Path, s.lim)
	if err != nil {
		return nil, fmt.Errorf("release %s: its metadata is damaged: %w", rel.Digest, err)
	}
	rep := &VerifyReport{Release: *rel, Reasons: map[string]string{}}
	for _, e := range idx {
		if msg, err := checkInstalled(rel.Path, e); err != nil {
			return nil, err
		} else if msg != "" {
			rep.note(e.path, msg)
		}
	}
	if err := rep.findAdded(rel.Path, idx); err != nil {
		return nil, err
	}
	if rep.OK() {
		if err := checkStreamDigest(rel, meta, metadata, idx); err != nil {
			rep.note(metadataName, err.Error())
		}
	}
	sort.Strings(rep.Changed)
	return rep, nil
}

func (r *VerifyReport) note(p, msg string) {
	if msg == "missing" {
		r.Missing = append(r.Missing, p)
		return
	}
	r.Changed = append(r.Changed, p)
	r.Reasons[p] = msg
}

// checkInstalled compares an installed entry with the index; it returns
// "missing", what changed, or "".
func checkInstalled(dir string, e indexEntry) (string, error) {
	p := filepath.Join(dir, filepath.FromSlash(e.path))
	info, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "missing", nil
	}
	if err != nil {
		return "", err
	}
	if kind := modeKind(info.Mode()); kind != e.kind {
		return fmt.Sprintf("a %s, expected a %s", kindName(kind), kindName(e.kind)), nil
	}
	switch e.kind {
	case kindSymlink:
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if t != e.target {
			return fmt.Sprintf("symlink to %q, expected %q", t, e.target), nil
		}
		return "", nil
	case kindFile:
		if msg, err := checkContent(p, e); msg != "" || err != nil {
			return msg, err
		}
	}
	if want := installedMode(e); info.Mode().Perm() != want {
		return fmt.Sprintf("mode %04o, expected %04o", info.Mode().Perm(), want), nil
	}
	return "", nil
}

func checkContent(p string, e indexEntry) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if n != e.size {
		return fmt.Sprintf("%d bytes, expected %d", n, e.size), nil
	}
	if !bytes.Equal(h.Sum(nil), e.sum[:]) {
		return "content differs (sha256 " + hex.EncodeToString(h.Sum(nil)) + ")", nil
	}
	return "", nil
}

// findAdded lists entries of the release that the index does not know.
func (r *VerifyReport) findAdded(dir string, idx []indexEntry) error {
	known := map[string]bool{toriDir: true, metadataName: true, installName: true}
	for _, e := range idx {
		known[e.path] = true
	}
	return filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." || known[rel] {
			return nil
		}
		r.Added = append(r.Added, rel)
		if de.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// checkStreamDigest rebuilds the release's canonical tar stream from disk
// and checks it hashes to the release's digest.
func checkStreamDigest(rel *Release, meta *Metadata, metadata []byte, idx []indexEntry) error {
	manifest, err := os.ReadFile(filepath.Join(rel.Path, manifestName))
	if err != nil {
		return err
	}
	mtime, err := meta.mtime()
	if err != nil {
		return err
	}
	h := sha256.New()
	open := func(e *indexEntry) (io.ReadCloser, error) {
		return os.Open(filepath.Join(rel.Path, filepath.FromSlash(e.path)))
	}
	if err := writeCanonical(context.Background(), h, mtime, manifest, metadata, idx, open, nil); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != rel.Digest {
		return fmt.Errorf("the release's content hashes to %s, not to its digest %s (was tori/metadata.json edited?)", got, rel.Digest)
	}
	return nil
}

func readLimited(file string, max int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, max)
	}
	return b, nil
}

func modeKind(m fs.FileMode) nodeKind {
	switch {
	case m.IsRegular():
		return kindFile
	case m.IsDir():
		return kindDir
	case m&fs.ModeSymlink != 0:
		return kindSymlink
	}
	return kindNone
}
