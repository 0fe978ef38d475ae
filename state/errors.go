package state

import "errors"

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
	// ErrFailed: an fsync or a write to disk failed earlier. The store refuses
	// all further writes; close it and open it again to recover from the log.
	ErrFailed = errors.New("store failed; reopen to recover from the log")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
	// ErrCorrupt: a file that must be intact is not (a log segment other than
	// the last, a manifest, a data file the manifest lists).
	ErrCorrupt = errors.New("state directory corrupt")
)
