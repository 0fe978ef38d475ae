package state

import (
	"sync"

	kzstd "github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/format"
)

// zstdCodec compresses pages with one encoder of a small window (1 MiB):
// parquet-go's own codec keeps a pool of encoders whose history grows to
// the size of the largest page, which made a flush of large values cost
// tens of MiB. Pages are at most a few MiB, so a 1 MiB window loses
// little. Files stay standard zstd (any reader decodes them).
type zstdCodec struct {
	level kzstd.EncoderLevel
	mu    sync.Mutex
	enc   *kzstd.Encoder
}

var _ compress.Codec = (*zstdCodec)(nil)

func newZstdCodec(level kzstd.EncoderLevel) *zstdCodec { return &zstdCodec{level: level} }

func (c *zstdCodec) String() string                            { return "ZSTD" }
func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.enc == nil {
		e, err := kzstd.NewWriter(nil, kzstd.WithEncoderConcurrency(1), kzstd.WithEncoderLevel(c.level),
			kzstd.WithWindowSize(1<<20), kzstd.WithLowerEncoderMem(true), kzstd.WithZeroFrames(true), kzstd.WithEncoderCRC(false))
		if err != nil {
			return nil, err
		}
		c.enc = e
	}
	return c.enc.EncodeAll(src, dst[:0]), nil
}

// Decode is not used for reading (parquet-go picks its own codec from the
// file); it is here for the interface.
func (c *zstdCodec) Decode(dst, src []byte) ([]byte, error) {
	d, err := kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(src, dst[:0])
}

var (
	fastCodec    = newZstdCodec(kzstd.SpeedFastest) // flushes: on the write path
	defaultCodec = newZstdCodec(kzstd.SpeedDefault) // compactions and exports
)
