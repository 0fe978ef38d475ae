package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/specs"
)

// BuildOptions says what to build and where.
type BuildOptions struct {
	// FromZip or FromDir is the app: exactly one.
	FromZip, FromDir string
	// Manifest is the capsule.yml to build with (required). Its bytes go into
	// the archive as given.
	Manifest string
	// Output is the archive to write. "" names it
	// capsule-NAME-VERSION-DIGEST12.tar.gz (or .tar.zst) in OutputDir.
	Output    string
	OutputDir string // "" = the current folder
	// BuildSHA is recorded in the metadata. "" = the commit checked out in
	// the git work tree holding FromDir, if any; a zip has none.
	BuildSHA string
	// Excludes are extra path.Match patterns, matched against each entry's
	// path relative to the app and against its base name.
	Excludes []string
	// ToolVersion is the tori-run version recorded in the metadata.
	ToolVersion string
	// SourceDateEpoch is the value of $SOURCE_DATE_EPOCH ("" = unset): when
	// set, it is every entry's mtime and the metadata's "created".
	SourceDateEpoch string
	// Compression of the archive: Gzip (default) or Zstd.
	Compression Compression
	// Progress, when not nil, gets an updating progress line (a terminal).
	Progress io.Writer
	// Log gets one Debug line per entry left out.
	Log zerolog.Logger
	// Limits bound the app; zero fields take DefaultLimits.
	Limits Limits
	// Workers hashing files at once; 0 = GOMAXPROCS.
	Workers int
}

// BuildResult describes a built archive.
type BuildResult struct {
	Path          string // the archive written
	Digest        string // the release digest: 64 hex digits, the SHA-256 of the uncompressed tar stream
	ContentDigest string // "sha256:..." of the file index
	Name, Version string
	BuildSHA      string
	Files         int   // regular files in app/
	Bytes         int64 // their total size
	Excluded      []string
}

// Build builds a capsule archive from an app and a manifest. The manifest
// must be valid (the error is the specs.Errors that validate prints) and
// must fit the app (specs.CheckApp). On any error no output file is left.
func Build(ctx context.Context, o BuildOptions) (*BuildResult, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	start := time.Now()
	lim := o.Limits.withDefaults()
	manifest, m, err := loadManifest(o.Manifest)
	if err != nil {
		return nil, err
	}
	created, mtime, err := sourceDate(o.SourceDateEpoch)
	if err != nil {
		return nil, err
	}
	src, t, x, err := scan(o, lim)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if err := specs.CheckApp(m, treeFS{t: t, src: src}); err != nil {
		return nil, err
	}
	sha, err := o.buildSHA()
	if err != nil {
		return nil, err
	}
	files, total := t.files()
	scanned := time.Now()
	prog := newProgress(o.Progress, "build", 2*total)
	if err := hashFiles(ctx, src, files, o.Workers, prog); err != nil {
		return nil, err
	}
	hashed := time.Now()
	idx := treeIndex(manifest, t)
	meta := &Metadata{
		Schema: SchemaV1, Name: m.Name, Version: m.Version, BuildSHA: sha,
		ToolVersion: o.ToolVersion, Created: created, ContentDigest: contentDigest(idx),
		Files: fileEntries(idx),
	}
	metaBytes, err := encodeMetadata(meta)
	if err != nil {
		return nil, err
	}
	open := func(e *indexEntry) (io.ReadCloser, error) {
		return src.open(t.byPath[strings.TrimPrefix(e.path, appDir+"/")])
	}
	res := &BuildResult{
		ContentDigest: meta.ContentDigest, Name: m.Name, Version: m.Version, BuildSHA: sha,
		Files: len(files), Bytes: total, Excluded: x.excluded(),
	}
	res.Path, res.Digest, err = writeOutput(o, m, func(w io.Writer) error {
		return writeCanonical(ctx, w, mtime, manifest, metaBytes, idx, open, prog)
	})
	if err != nil {
		return nil, err
	}
	prog.finish()
	o.Log.Debug().Str("digest", res.Digest).Int("files", res.Files).Int64("bytes", res.Bytes).
		Dur("scan", scanned.Sub(start)).Dur("hash", hashed.Sub(scanned)).Dur("write", time.Since(hashed)).
		Msg("build")
	return res, nil
}

func (o *BuildOptions) check() error {
	if (o.FromZip == "") == (o.FromDir == "") {
		return errors.New("build: give exactly one of a zip (--from-zip) or a folder (--from-dir)")
	}
	if o.Manifest == "" {
		return errors.New("build: a manifest (--manifest capsule.yml) is required")
	}
	if o.Output != "" && o.OutputDir != "" {
		return errors.New("build: give an output file or an output folder, not both")
	}
	if _, err := o.Compression.ext(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if _, err := newExcluder(o.Excludes); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if o.BuildSHA != "" && !shaRe.MatchString(o.BuildSHA) {
		return fmt.Errorf("build: build SHA %q: expected 7 to 64 lowercase hex digits", o.BuildSHA)
	}
	return nil
}

func (o *BuildOptions) buildSHA() (string, error) {
	if o.BuildSHA != "" || o.FromDir == "" {
		return o.BuildSHA, nil
	}
	sha, err := gitHead(o.FromDir)
	if err != nil {
		return "", fmt.Errorf("build SHA from git (give one with --build-sha): %w", err)
	}
	return sha, nil
}

// loadManifest reads the manifest's bytes once, so that what is validated
// is what is shipped.
func loadManifest(file string) ([]byte, *specs.Manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, specs.MaxManifestSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", file, err)
	}
	m, err := specs.Parse(bytes.NewReader(data), file)
	if err != nil {
		return nil, nil, err
	}
	return data, m, nil
}

// sourceDate parses $SOURCE_DATE_EPOCH: it gives the metadata's created
// time and the entries' mtime; unset, there is no created time and the
// mtime is the epoch.
func sourceDate(v string) (string, time.Time, error) {
	if v == "" {
		return "", time.Unix(0, 0), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n >= 1<<33 {
		return "", time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: expected seconds since 1970 as a decimal integer", v)
	}
	t := time.Unix(n, 0).UTC()
	return t.Format(time.RFC3339), t, nil
}

func scan(o BuildOptions, lim Limits) (source, *tree, *excluder, error) {
	x, err := newExcluder(o.Excludes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("build: %w", err)
	}
	src, err := openSource(o)
	if err != nil {
		return nil, nil, nil, err
	}
	t := newTree(src.name(), lim)
	err = src.scan(t, x, o.Log)
	if err == nil {
		err = t.finish()
	}
	if err != nil {
		src.Close()
		return nil, nil, nil, err
	}
	return src, t, x, nil
}

func openSource(o BuildOptions) (source, error) {
	if o.FromDir != "" {
		return openDir(o.FromDir)
	}
	return openZip(o.FromZip)
}

// hashFiles sets the SHA-256 of every file, reading them with a bounded
// pool of workers. Each file must have the size the scan saw.
func hashFiles(ctx context.Context, src source, files []*entry, workers int, prog *progress) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, ctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(workers, len(files)) {
		g.Go(func() error {
			buf := make([]byte, 256<<10)
			for i := next.Add(1) - 1; i < int64(len(files)); i = next.Add(1) - 1 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := hashFile(src, files[i], buf, prog); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func hashFile(src source, e *entry, buf []byte, prog *progress) error {
	rc, err := src.open(e)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(h, prog), io.LimitReader(rc, e.size+1), buf)
	if _, ok := errors.AsType[*EntryError](err); ok {
		return err
	}
	if err != nil {
		return entryErr(src.name(), e.path, nil, "cannot be read: %v", err)
	}
	if n != e.size {
		return entryErr(src.name(), e.path, ErrLimit, "holds %d bytes, but %d were declared or seen", n, e.size)
	}
	h.Sum(e.sum[:0])
	return nil
}

// treeIndex is the file index of a tree whose files are hashed.
func treeIndex(manifest []byte, t *tree) []indexEntry {
	idx := make([]indexEntry, 0, len(t.list)+2)
	idx = append(idx,
		indexEntry{path: manifestName, kind: kindFile, mode: 0o644, size: int64(len(manifest)), sum: sha256.Sum256(manifest)},
		indexEntry{path: appDir, kind: kindDir, mode: 0o755})
	for _, e := range t.list {
		idx = append(idx, indexEntry{path: appDir + "/" + e.path, kind: e.kind, mode: e.mode(), size: e.size, sum: e.sum, target: e.target})
	}
	return idx
}

func fileEntries(idx []indexEntry) []FileEntry {
	out := make([]FileEntry, len(idx))
	for i, e := range idx {
		out[i] = e.fileEntry()
	}
	return out
}

// writeOutput writes the archive through write into a temporary file beside
// the output, and renames it into place only once it is complete and
// synced. It returns the output's path and the release digest.
func writeOutput(o BuildOptions, m *specs.Manifest, write func(io.Writer) error) (string, string, error) {
	dir := o.OutputDir
	if o.Output != "" {
		dir = filepath.Dir(o.Output)
	}
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, ".capsule-*.tmp")
	if err != nil {
		return "", "", fmt.Errorf("output: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	digest, err := compress(f, o.Compression, write)
	if err != nil {
		return "", "", err
	}
	final := o.Output
	if final == "" {
		ext, _ := o.Compression.ext()
		final = filepath.Join(dir, fmt.Sprintf("capsule-%s-%s-%s%s", m.Name, m.Version, digest[:12], ext))
	}
	if err := commitFile(f, final); err != nil {
		return "", "", err
	}
	committed = true
	return final, digest, nil
}

// compress writes the tar stream made by write, compressed, to w and
// returns the SHA-256 of the uncompressed stream.
func compress(w io.Writer, c Compression, write func(io.Writer) error) (string, error) {
	fw := bufio.NewWriterSize(w, 1<<20)
	zw, err := compressor(fw, c)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	tw := bufio.NewWriterSize(io.MultiWriter(h, zw), 1<<20)
	if err := write(tw); err != nil {
		zw.Close()
		return "", err
	}
	if err := tw.Flush(); err != nil {
		return "", fmt.Errorf("output: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("output: %w", err)
	}
	if err := fw.Flush(); err != nil {
		return "", fmt.Errorf("output: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// commitFile syncs f, gives it mode 0644 whatever the umask, and renames it
// to final, then syncs the folder so that the rename survives a crash.
func commitFile(f *os.File, final string) error {
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(final))
}
