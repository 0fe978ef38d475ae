//go:build linux

package release

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/specs"
)

// archiveNameRe matches the names Build gives archives; the 12 hex digits
// are the start of the release digest.
var archiveNameRe = regexp.MustCompile(`^capsule-.+-([0-9a-f]{12})\.tar(\.gz|\.zst)?$`)

// Install verifies the archive and installs it as <root>/releases/<digest>/,
// read-only. It returns already=true when that release was installed
// before. An install that fails or is killed at any point leaves no
// release; what a killed one leaves in staging is removed by the next Open
// or Install.
func (s *Store) Install(ctx context.Context, archive string) (*Release, bool, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, false, fmt.Errorf("install: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if s.progress != nil {
		if info, err := f.Stat(); err == nil {
			prog := newProgress(s.progress, "install", info.Size())
			defer prog.finish()
			r = io.TeeReader(f, prog)
		}
	}
	var want string
	if m := archiveNameRe.FindStringSubmatch(filepath.Base(archive)); m != nil {
		want = m[1]
	}
	return s.install(ctx, r, archive, want)
}

func (s *Store) install(ctx context.Context, r io.Reader, input, want string) (*Release, bool, error) {
	start := time.Now()
	st, err := s.newStaging(ctx)
	if err != nil {
		return nil, false, err
	}
	defer st.discard(s)
	digest, idx, err := s.extract(ctx, r, input, st)
	if err != nil {
		return nil, false, err
	}
	if want != "" && !strings.HasPrefix(digest, want) {
		return nil, false, fmt.Errorf("%s: %w: its name says %s but its content hashes to %s", input, ErrDigestMismatch, want, digest)
	}
	extracted := time.Now()
	if err := st.finish(idx, installRecord{InstalledAt: time.Now().UTC(), Archive: filepath.Base(input)}); err != nil {
		return nil, false, err
	}
	if err := unix.Syncfs(int(st.fd.Fd())); err != nil {
		return nil, false, fmt.Errorf("syncfs %s: %w", st.dir, err)
	}
	synced := time.Now()
	s.event("staged")
	rel, already, err := s.publish(ctx, st, digest)
	if err != nil {
		return nil, false, err
	}
	s.log.Debug().Str("digest", digest).Bool("already", already).
		Dur("extract", extracted.Sub(start)).Dur("sync", synced.Sub(extracted)).Dur("total", time.Since(start)).
		Msg("install")
	return rel, already, nil
}

func (s *Store) event(name string) {
	if s.hook != nil {
		s.hook(name)
	}
}

// publish renames the staged release into place, unless it is there.
func (s *Store) publish(ctx context.Context, st *staging, digest string) (*Release, bool, error) {
	unlock, err := s.lock(ctx)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	final := filepath.Join(s.releases, digest)
	already := true
	if _, err := os.Lstat(final); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(st.dir, final); err != nil {
			return nil, false, fmt.Errorf("publish release: %w", err)
		}
		st.published = true
		already = false
		if err := atomicfile.SyncDir(s.releases); err != nil {
			return nil, false, err
		}
		s.event("published")
	} else if err != nil {
		return nil, false, fmt.Errorf("publish release: %w", err)
	}
	rel, err := s.load(digest)
	if err != nil {
		return nil, false, fmt.Errorf("installed release %s: %w", digest, err)
	}
	return rel, already, nil
}

// staging is a release being unpacked: a folder beside the releases,
// locked while its install lives so that sweep leaves it alone.
type staging struct {
	dir       string
	fd        *os.File // the folder, flocked
	dirs      *stageDirs
	published bool
}

func (s *Store) newStaging(ctx context.Context) (*staging, error) {
	unlock, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.sweep()
	dir, err := os.MkdirTemp(s.releases, stagingPrefix)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	st := &staging{dir: dir}
	if st.fd, err = os.Open(dir); err == nil {
		err = unix.Flock(int(st.fd.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		st.dirs = newStageDirs(st.fd)
	}
	if err != nil {
		st.discard(s)
		return nil, fmt.Errorf("staging %s: %w", dir, err)
	}
	return st, nil
}

// discard removes the staging folder unless it was published.
func (st *staging) discard(s *Store) {
	if st.dirs != nil {
		st.dirs.close()
	}
	if !st.published {
		if err := removeTree(st.dir); err != nil {
			s.log.Warn().Err(err).Str("path", st.dir).Msg("cannot remove staging folder")
		}
	}
	if st.fd != nil {
		st.fd.Close()
	}
}

// finish records the install and makes the tree read-only: files are
// 0444 or 0555 already, folders become 0555, everything owned by root
// when root installs.
func (st *staging) finish(idx []indexEntry, rec installRecord) error {
	b, err := marshal(rec, "  ")
	if err != nil {
		return err
	}
	if err := st.dirs.writeFile(installName, b, 0o444); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	for i := len(idx) - 1; i >= 0; i-- {
		switch e := idx[i]; e.kind {
		case kindDir:
			err = st.dirs.seal(e.path)
		case kindSymlink:
			err = st.dirs.lchownRoot(e.path)
		}
		if err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	if err := st.dirs.seal(toriDir); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	st.dirs.close()
	return st.dirs.seal(".")
}

// installedMode is an entry's mode once installed: no write bits.
func installedMode(e indexEntry) os.FileMode {
	if e.kind == kindDir || e.mode&0o111 != 0 {
		return 0o555
	}
	return 0o444
}

// extract unpacks the archive's tar stream into the staging folder,
// checking every entry, and returns the release digest: the SHA-256 of the
// uncompressed stream, which must be the canonical stream of its index.
func (s *Store) extract(ctx context.Context, r io.Reader, input string, st *staging) (string, []indexEntry, error) {
	dec, _, err := decompressor(r)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w: %v", input, ErrInvalidArchive, err)
	}
	defer dec.Close()
	lr := &limitReader{r: dec, left: s.lim.maxStream(), input: input}
	raw := sha256.New()
	canon := sha256.New()
	writers, wctx := errgroup.WithContext(ctx)
	writers.SetLimit(fileWriters)
	x := &extractor{
		ctx: wctx, input: input, lim: s.lim, dirs: st.dirs, event: s.event,
		tr: tar.NewReader(io.TeeReader(lr, raw)), canon: tar.NewWriter(canon),
		buf: make([]byte, 256<<10), writers: writers,
	}
	idx, err := x.run()
	// The writers end before anything else happens to the staging folder.
	// A writer's error comes first: it canceled the reading.
	if werr := writers.Wait(); werr != nil {
		err = werr
	}
	if err != nil {
		return "", nil, err
	}
	// What follows the end of the archive belongs to the stream too.
	if _, err := io.Copy(raw, lr); err != nil {
		return "", nil, x.streamErr(err)
	}
	if !bytes.Equal(raw.Sum(nil), canon.Sum(nil)) {
		return "", nil, fmt.Errorf("%s: %w: its tar stream is not the canonical one for its index (was it repacked? build it with tori-run build)", input, ErrInvalidArchive)
	}
	return hex.EncodeToString(raw.Sum(nil)), idx, nil
}

// limitReader fails once more than left bytes come out of r: a
// decompression bomb stops there, whatever headers claim.
type limitReader struct {
	r     io.Reader
	left  int64
	input string
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, err := l.r.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("%s: %w: the uncompressed archive is larger than the limits allow (a decompression bomb?)", l.input, ErrLimit)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Small files are read into memory and written by a pool of goroutines, so
// that the syscalls creating them overlap with reading the stream. At most
// fileWriters files of at most maxBuffered bytes wait in memory.
const (
	fileWriters = 4
	maxBuffered = 1 << 20
)

// extractor reads an archive's entries, checks each, writes it under root,
// and re-encodes it canonically into canon.
type extractor struct {
	ctx     context.Context
	input   string
	lim     Limits
	tr      *tar.Reader
	dirs    *stageDirs // used by the reading goroutine only
	canon   *tar.Writer
	buf     []byte
	event   func(string)
	writers *errgroup.Group // writes buffered files; the caller waits for it
}

func (x *extractor) run() ([]indexEntry, error) {
	manifest, err := x.small(manifestName, specs.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	if err := x.expect(toriDir, kindDir); err != nil {
		return nil, err
	}
	metadata, err := x.small(metadataName, x.lim.maxMetadataSize())
	if err != nil {
		return nil, err
	}
	meta, idx, err := parseMetadata(bytes.NewReader(metadata), x.input, x.lim)
	if err != nil {
		return nil, err
	}
	if err := x.checkManifest(manifest, meta, idx[0]); err != nil {
		return nil, err
	}
	mtime, _ := meta.mtime()
	if err := x.writeHead(manifest, metadata, mtime); err != nil {
		return nil, err
	}
	for i := 1; i < len(idx); i++ {
		if err := x.entry(&idx[i], mtime); err != nil {
			return nil, err
		}
		x.event("entry")
	}
	if h, err := x.next(); err != io.EOF {
		if err != nil {
			return nil, err
		}
		return nil, entryErr(x.input, h.Name, ErrInvalidArchive, "not in the file index (tori/metadata.json)")
	}
	if err := x.canon.Close(); err != nil {
		return nil, err
	}
	return idx, nil
}

// next reads the next header and checks it is safe.
func (x *extractor) next() (*tar.Header, error) {
	if err := x.ctx.Err(); err != nil {
		return nil, err
	}
	h, err := x.tr.Next()
	if err == io.EOF {
		return nil, err
	}
	if err != nil {
		return nil, x.streamErr(err)
	}
	return h, checkHeader(h, x.input, x.lim)
}

func (x *extractor) streamErr(err error) error {
	if errors.Is(err, ErrLimit) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: %w: %v", x.input, ErrInvalidArchive, err)
}

// checkHeader refuses what could write or point outside the release, or
// is over the limits, whatever the index says.
func checkHeader(h *tar.Header, input string, lim Limits) error {
	name := h.Name
	if h.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	if msg := checkRelPath(name); msg != "" {
		return entryErr(input, h.Name, ErrUnsafeEntry, "%s", msg)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
	case tar.TypeLink:
		return entryErr(input, h.Name, ErrUnsafeEntry, "hard link to %q; a capsule holds no hard links", h.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return entryErr(input, h.Name, ErrUnsafeEntry, "a device node; a capsule holds only files, folders and symlinks")
	case tar.TypeFifo:
		return entryErr(input, h.Name, ErrUnsafeEntry, "a FIFO; a capsule holds only files, folders and symlinks")
	default:
		return entryErr(input, h.Name, ErrUnsafeEntry, "entry type %q; a capsule holds only files, folders and symlinks", h.Typeflag)
	}
	if h.Mode&0o7000 != 0 {
		return entryErr(input, h.Name, ErrUnsafeEntry, "mode %04o has a setuid, setgid or sticky bit", h.Mode)
	}
	if h.Mode&^0o777 != 0 || h.Mode < 0 {
		return entryErr(input, h.Name, ErrUnsafeEntry, "mode %o: expected permission bits only", h.Mode)
	}
	if h.Size < 0 || h.Size > lim.MaxFileSize {
		return entryErr(input, h.Name, ErrLimit, "%d bytes; the limit for one file is %d", h.Size, lim.MaxFileSize)
	}
	if h.Typeflag == tar.TypeSymlink {
		if msg := checkTarget(h.Linkname); msg != "" {
			return entryErr(input, h.Name, ErrUnsafeEntry, "%s", msg)
		}
		from := path.Dir(name) + "/" + h.Linkname
		noLinks := func(string) (nodeKind, string) { return kindNone, "" }
		if _, err := resolve(from, noLinks, true); err != nil {
			return entryErr(input, h.Name, ErrUnsafeEntry, "symlink to %q %v", h.Linkname, err)
		}
	}
	return nil
}

// small reads the file entry name, of at most max bytes, into memory.
func (x *extractor) small(name string, max int64) ([]byte, error) {
	h, err := x.header(name, kindFile)
	if err != nil {
		return nil, err
	}
	if h.Size > max {
		return nil, entryErr(x.input, name, ErrLimit, "%d bytes; at most %d expected", h.Size, max)
	}
	b := make([]byte, h.Size)
	if _, err := io.ReadFull(x.tr, b); err != nil {
		return nil, x.streamErr(err)
	}
	return b, nil
}

func (x *extractor) expect(name string, kind nodeKind) error {
	_, err := x.header(name, kind)
	return err
}

// header reads the next header, which must be name, of kind.
func (x *extractor) header(name string, kind nodeKind) (*tar.Header, error) {
	h, err := x.next()
	if err == io.EOF {
		return nil, fmt.Errorf("%s: %w: ends where %s was expected", x.input, ErrInvalidArchive, name)
	}
	if err != nil {
		return nil, err
	}
	if got := strings.TrimSuffix(h.Name, "/"); got != name || headerKind(h) != kind {
		want := name
		if kind == kindDir {
			want = "folder " + name + "/"
		}
		return nil, entryErr(x.input, h.Name, ErrInvalidArchive, "%s was expected here (a capsule starts with capsule.yml, tori/, tori/metadata.json)", want)
	}
	return h, nil
}

func headerKind(h *tar.Header) nodeKind {
	switch h.Typeflag {
	case tar.TypeReg:
		return kindFile
	case tar.TypeDir:
		return kindDir
	case tar.TypeSymlink:
		return kindSymlink
	}
	return kindNone
}

// checkManifest checks capsule.yml against the index and the metadata.
func (x *extractor) checkManifest(manifest []byte, meta *Metadata, e indexEntry) error {
	if int64(len(manifest)) != e.size || sha256.Sum256(manifest) != e.sum {
		return entryErr(x.input, manifestName, ErrDigestMismatch, "does not match its entry in the file index")
	}
	m, err := specs.Parse(bytes.NewReader(manifest), x.input+": "+manifestName)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
	}
	if m.Name != meta.Name || m.Version != meta.Version {
		return entryErr(x.input, metadataName, ErrInvalidArchive, "says %s %s but capsule.yml says %s %s", meta.Name, meta.Version, m.Name, m.Version)
	}
	return nil
}

// writeHead writes capsule.yml, tori/ and tori/metadata.json, and their
// canonical headers.
func (x *extractor) writeHead(manifest, metadata []byte, mtime time.Time) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{manifestName, manifest}, {toriDir, nil}, {metadataName, metadata}} {
		var err error
		if f.name == toriDir {
			err = x.canon.WriteHeader(canonHeader(toriDir, kindDir, 0o755, 0, "", mtime))
			if err == nil {
				err = x.dirs.mkdir(toriDir)
			}
		} else {
			err = x.canon.WriteHeader(canonHeader(f.name, kindFile, 0o644, int64(len(f.data)), "", mtime))
			if err == nil {
				_, err = x.canon.Write(f.data)
			}
			if err == nil {
				err = x.dirs.writeFile(f.name, f.data, 0o444)
			}
		}
		if err != nil {
			return fmt.Errorf("staging %s: %w", f.name, err)
		}
	}
	return nil
}

// entry reads the next entry, which must be e, and writes it.
func (x *extractor) entry(e *indexEntry, mtime time.Time) error {
	h, err := x.next()
	if err == io.EOF {
		return fmt.Errorf("%s: %w: ends where %s was expected (the file index lists it)", x.input, ErrInvalidArchive, e.path)
	}
	if err != nil {
		return err
	}
	if err := matchIndex(h, e); err != nil {
		return entryErr(x.input, h.Name, ErrInvalidArchive, "%v", err)
	}
	if err := x.canon.WriteHeader(e.header(mtime)); err != nil {
		return err
	}
	switch e.kind {
	case kindDir:
		err = x.dirs.mkdir(e.path)
	case kindSymlink:
		err = x.dirs.symlink(e.target, e.path)
	default:
		err = x.file(e)
	}
	if err != nil && !errors.Is(err, ErrDigestMismatch) && !errors.Is(err, ErrInvalidArchive) {
		return fmt.Errorf("staging %s: %w", e.path, err)
	}
	return err
}

// matchIndex checks a header against the index entry expected in its place.
func matchIndex(h *tar.Header, e *indexEntry) error {
	name := h.Name
	if h.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	switch {
	case name != e.path:
		return fmt.Errorf("the file index has %s in this place", e.path)
	case headerKind(h) != e.kind:
		return fmt.Errorf("a %s, but the file index says %s", kindName(headerKind(h)), kindName(e.kind))
	case h.Mode != e.mode:
		return fmt.Errorf("mode %04o, but the file index says %04o", h.Mode, e.mode)
	case e.kind == kindFile && h.Size != e.size:
		return fmt.Errorf("%d bytes, but the file index says %d", h.Size, e.size)
	case e.kind == kindSymlink && h.Linkname != e.target:
		return fmt.Errorf("symlink to %q, but the file index says %q", h.Linkname, e.target)
	}
	return nil
}

// file writes a file entry, checking its bytes against the index: a small
// one from memory by a writer goroutine, a large one streamed here.
func (x *extractor) file(e *indexEntry) error {
	if e.size > maxBuffered {
		return x.streamFile(e)
	}
	data := make([]byte, e.size)
	if _, err := io.ReadFull(x.tr, data); err != nil {
		return x.streamErr(err)
	}
	if _, err := x.canon.Write(data); err != nil {
		return err
	}
	// The folder exists: entries come in index order, folders first.
	dirfd, base, err := x.dirs.parentDup(e.path)
	if err != nil {
		return err
	}
	x.writers.Go(func() error {
		defer unix.Close(dirfd)
		if sha256.Sum256(data) != e.sum {
			return entryErr(x.input, e.path, ErrDigestMismatch, "content does not match its sha256 in the file index")
		}
		f, err := createAt(dirfd, base, e.path)
		if err == nil {
			err = fill(f, e, func(f *os.File) error { _, err := f.Write(data); return err })
		}
		if err != nil {
			return fmt.Errorf("staging %s: %w", e.path, err)
		}
		return nil
	})
	return nil
}

func (x *extractor) streamFile(e *indexEntry) error {
	h := sha256.New()
	src := &readErrReader{r: io.LimitReader(x.tr, e.size)}
	f, err := x.dirs.create(e.path)
	if err != nil {
		return err
	}
	err = fill(f, e, func(f *os.File) error {
		_, err := io.CopyBuffer(io.MultiWriter(f, h, x.canon), src, x.buf)
		return err
	})
	switch {
	case src.err != nil:
		return x.streamErr(src.err)
	case err != nil:
		return err
	case !bytes.Equal(h.Sum(nil), e.sum[:]):
		return entryErr(x.input, e.path, ErrDigestMismatch, "content does not match its sha256 in the file index")
	}
	return nil
}

// fill fills e's file with write, makes it read-only and closes it.
func fill(f *os.File, e *indexEntry, write func(*os.File) error) error {
	err := write(f)
	if err == nil {
		err = fixFile(f, installedMode(*e))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readErrReader remembers a read error, to tell it from a write error
// after io.Copy.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
