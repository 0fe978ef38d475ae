package release

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. Every error this package returns names the
// file or entry concerned; these only classify it.
var (
	// ErrNotFound: no installed release matches a reference.
	ErrNotFound = errors.New("release not found")
	// ErrAmbiguous: a reference matches more than one release.
	ErrAmbiguous = errors.New("ambiguous release reference")
	// ErrUnsafeEntry: an input zip or archive holds an entry that could
	// write or point outside its tree: an absolute path, "..", a symlink
	// leaving the app, a hard link, a device node, a FIFO, a setuid bit...
	ErrUnsafeEntry = errors.New("unsafe entry")
	// ErrLimit: an input is over one of the Limits (files, bytes, file size).
	ErrLimit = errors.New("over the limit")
	// ErrDigestMismatch: content does not hash to what was recorded or named.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidArchive: an archive is not a capsule in canonical form.
	ErrInvalidArchive = errors.New("not a capsule archive in canonical form")
)

// EntryError is a problem with one entry of an input (a zip, an archive or a
// folder). Err is one of the sentinels above, or an underlying error.
type EntryError struct {
	Input string // the zip, archive or folder
	Entry string // the entry's name as stored in the input
	Msg   string // what is wrong and what was expected
	Err   error
}

func (e *EntryError) Error() string {
	s := fmt.Sprintf("%s: entry %q: %s", e.Input, e.Entry, e.Msg)
	if e.Err != nil && !isSentinel(e.Err) {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *EntryError) Unwrap() error { return e.Err }

func isSentinel(err error) bool {
	switch err {
	case ErrNotFound, ErrAmbiguous, ErrUnsafeEntry, ErrLimit, ErrDigestMismatch, ErrInvalidArchive:
		return true
	}
	return false
}

func entryErr(input, entry string, kind error, format string, args ...any) error {
	return &EntryError{Input: input, Entry: entry, Msg: fmt.Sprintf(format, args...), Err: kind}
}
