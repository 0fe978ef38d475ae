package state

import (
	"time"

	"github.com/rs/zerolog"
)

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// Buffer is the most records acknowledged but not yet in a Parquet file
	// (default 1000). A flush starts when half of it is used; writers wait
	// for room when all of it is.
	Buffer int
	// BufferWait is how long a write waits for room in a full buffer before
	// it fails with ErrBufferFull (default 2s).
	BufferWait time.Duration
	// FlushInterval flushes a non-empty buffer at least this often, so the
	// Parquet files lag the log by at most that much (default 2s; negative:
	// only when the buffer is half full, on Flush and on Close).
	FlushInterval time.Duration
	// MaxKey is the longest key in bytes (default and at most 512).
	MaxKey int
	// MaxValue is the largest value or event body in bytes (default 1 MiB).
	MaxValue int
	// CompactRatio: the newest files are merged with an older one once their
	// total size times CompactRatio reaches its size (default 1: once they
	// weigh as much as it; higher compacts more often, for fewer bytes on
	// disk at the cost of CPU).
	CompactRatio float64
	// KeepManifests is how many manifests garbage collection keeps, with the
	// files they list (default 3, at least 1).
	KeepManifests int
	// RetryInterval is how long writes are refused after the log failed to
	// take a write (a full disk, EIO) before the next one retries it, and how
	// long a failed flush waits before it is tried again (default 1s).
	RetryInterval time.Duration
	// CacheBytes bounds the cache of decoded value pages read from the data
	// files (default 32 MiB; values live on disk, this is all the memory
	// reads take).
	CacheBytes int
	// BufferBytes bounds the values held in the buffer (acknowledged, not
	// yet flushed) in bytes (default 8 MiB; a flush starts at half).
	BufferBytes int
	// Quota bounds the bytes of the state directory: the current data files
	// and the log (0: none). A write that would go over it fails with
	// ErrQuota (507 through the proxy); deletes are always let through.
	Quota int64
	// EventRetentionCount keeps only the newest this many events (0: all).
	EventRetentionCount int
	// EventRetentionAge drops events older than this (0: none). Dropped
	// events disappear from reads at once and from the files at the next
	// compaction that merges them.
	EventRetentionAge time.Duration
	// Log receives recovery and failure reports. The zero Logger is silent.
	Log zerolog.Logger
	// OnCommit, if set, is called by the committer after every group commit
	// with the number of records it made durable and how long the fsync took
	// (for metrics). It must not block.
	OnCommit func(records int, fsync time.Duration)

	// syncFile makes a file's data durable; tests replace it to fail.
	syncFile syncFunc
	// compactHook, if set, is called by a compaction with "written" once
	// its temporary file holds every row, and with "finished" once that
	// file has its final name, before a manifest lists it (tests block it
	// there).
	compactHook func(stage string)
}

// Default limits.
const (
	DefaultBuffer      = 1000
	DefaultMaxValue    = 1 << 20
	DefaultCacheBytes  = 32 << 20
	DefaultBufferBytes = 8 << 20
)

func (o Options) withDefaults() Options {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.BufferWait <= 0 {
		o.BufferWait = 2 * time.Second
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 2 * time.Second
	}
	if o.MaxKey <= 0 || o.MaxKey > MaxKeyLen {
		o.MaxKey = MaxKeyLen
	}
	if o.MaxValue <= 0 {
		o.MaxValue = DefaultMaxValue
	}
	if o.CompactRatio <= 0 {
		o.CompactRatio = 1
	}
	if o.KeepManifests <= 0 {
		o.KeepManifests = 3
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = DefaultBufferBytes
	}
	o.BufferBytes = max(o.BufferBytes, 2*o.MaxValue+4096) // a batch of the largest value always fits
	if o.RetryInterval <= 0 {
		o.RetryInterval = time.Second
	}
	if o.syncFile == nil {
		o.syncFile = fdatasync
	}
	return o
}

func (o Options) flushAt() int { return max(1, o.Buffer/2) }
