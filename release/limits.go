package release

import (
	"fmt"
	"strings"
)

// Limits bound what Build reads from an app and what Install accepts from an
// archive. They count real bytes, not what headers claim, so a zip or
// compression bomb stops at the limit. A zero field takes its default.
type Limits struct {
	MaxFiles    int   // entries: files, folders and symlinks (default 100,000)
	MaxBytes    int64 // total size of the files' contents (default 4 GiB)
	MaxFileSize int64 // size of any one file (default 1 GiB)
}

// DefaultLimits are the limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{MaxFiles: 100_000, MaxBytes: 4 << 30, MaxFileSize: 1 << 30}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	return l
}

// maxMetadataSize bounds tori/metadata.json: about 1 KiB per entry is far
// more than a file index line needs.
func (l Limits) maxMetadataSize() int64 { return 1<<20 + int64(l.MaxFiles)*1024 }

// maxStream bounds the uncompressed tar stream of an archive: the contents
// plus a generous allowance for headers (long names take PAX records).
func (l Limits) maxStream() int64 {
	return l.MaxBytes + l.maxMetadataSize() + (1 << 20) + int64(l.MaxFiles+4)*16*1024
}

// tally counts entries and bytes against Limits as an input is read.
type tally struct {
	lim   Limits
	files int
	bytes int64
}

func (t *tally) add(input, entry string, size int64) error {
	t.files++
	if t.files > t.lim.MaxFiles {
		return entryErr(input, entry, ErrLimit, "more than %d entries; raise Limits.MaxFiles if this app really is that large", t.lim.MaxFiles)
	}
	if size < 0 {
		return entryErr(input, entry, ErrUnsafeEntry, "negative size %d", size)
	}
	if size > t.lim.MaxFileSize {
		return entryErr(input, entry, ErrLimit, "%d bytes; the limit for one file is %d", size, t.lim.MaxFileSize)
	}
	t.bytes += size
	if t.bytes > t.lim.MaxBytes {
		return entryErr(input, entry, ErrLimit, "total content passes %d bytes, the limit", t.lim.MaxBytes)
	}
	return nil
}

// Compression is how an archive's tar stream is compressed. It changes the
// archive's bytes but not its digest, which covers the uncompressed stream.
type Compression string

const (
	Gzip Compression = "gzip" // the default: parallel gzip, level 6
	Zstd Compression = "zstd" // zstd, default level
)

func (c Compression) ext() (string, error) {
	switch c {
	case "", Gzip:
		return ".tar.gz", nil
	case Zstd:
		return ".tar.zst", nil
	}
	return "", fmt.Errorf("compression %q: expected %q or %q", string(c), Gzip, Zstd)
}

// IsArchiveName says whether p is named as a capsule archive is (.tar.gz,
// .tgz, .tar.zst or .tar, any case).
func IsArchiveName(p string) bool {
	p = strings.ToLower(p)
	for _, ext := range []string{".tar.gz", ".tgz", ".tar.zst", ".tar"} {
		if strings.HasSuffix(p, ext) {
			return true
		}
	}
	return false
}
