package release

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Compression settings are part of the archive's canonical form: changing
// them changes the archive's bytes (never its digest).
const (
	gzipLevel      = 6       // as gzip's default
	gzipBlockSize  = 1 << 20 // pgzip splits the stream into blocks of this size...
	gzipBlocks     = 8       // ...compressing this many at once; output does not depend on it
	zstdLevel      = zstd.SpeedDefault
	zstdMaxWindow  = 64 << 20 // decoder memory bound
	zstdEncWorkers = 4        // fixed so that output cannot depend on the machine
)

// compressor returns a writer compressing into w with c.
func compressor(w io.Writer, c Compression) (io.WriteCloser, error) {
	switch c {
	case "", Gzip:
		zw, err := pgzip.NewWriterLevel(w, gzipLevel)
		if err != nil {
			return nil, err
		}
		if err := zw.SetConcurrency(gzipBlockSize, gzipBlocks); err != nil {
			return nil, err
		}
		zw.ModTime = time.Unix(0, 0) // the zero time.Time would write a nonzero MTIME
		zw.OS = 255                  // unknown
		return zw, nil
	case Zstd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderCRC(true),
			zstd.WithEncoderConcurrency(zstdEncWorkers), zstd.WithZeroFrames(true))
	}
	_, err := c.ext()
	return nil, err
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompressor detects the compression of r from its first bytes (gzip,
// zstd, or none: a plain tar) and returns the uncompressed stream.
func decompressor(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, "", err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := pgzip.NewReaderN(br, gzipBlockSize, 4)
		if err != nil {
			return nil, "", fmt.Errorf("gzip: %w", err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), Zstd, nil
	}
	return io.NopCloser(br), "", nil
}
