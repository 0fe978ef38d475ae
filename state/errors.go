package state

import (
	"errors"
	"fmt"
)

// Sentinel errors; test them with errors.Is.
var (
	// ErrLocked: another process owns the state directory.
	ErrLocked = errors.New("state directory is locked by another process")
	// ErrBadKey: the key is empty, too long, not UTF-8 or holds a control character.
	ErrBadKey = errors.New("invalid key")
	// ErrTooLarge: a value, event or batch exceeds the configured limits.
	ErrTooLarge = errors.New("too large")
	// ErrBufferFull: the write buffer stayed full for Options.BufferWait; retry later.
	ErrBufferFull = errors.New("write buffer full")
	// ErrFailed: a write or fsync of the log failed (EIO, ENOSPC). The store
	// refuses writes until Store.RetryAfter has passed, then the next write
	// retries: it cuts the failed write off the log, starts a new segment and
	// goes on. Nothing acknowledged is lost; reads go on meanwhile.
	ErrFailed = errors.New("state write failed; retry later")
	// ErrNoSpace: the disk (or the operator's quota, see ErrQuota) is full.
	// Errors wrapping it also wrap ErrFailed when the disk is full.
	ErrNoSpace = errors.New("no space left for state")
	// ErrQuota: the capsule's state would exceed Options.Quota. It wraps
	// ErrNoSpace.
	ErrQuota = fmt.Errorf("%w: over the capsule's state quota", ErrNoSpace)
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
	// ErrCorrupt: a file that must be intact is not (a log segment other than
	// the last, a manifest, a data file the manifest lists).
	ErrCorrupt = errors.New("state directory corrupt")
)
