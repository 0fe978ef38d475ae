//go:build !unix

package atomicfile

import (
	"errors"
	"os"
)

// SyncDir does nothing off Unix: Windows cannot flush a folder handle
// (FlushFileBuffers needs write access to it); NTFS journals the rename
// itself.
func SyncDir(string) error { return nil }

// WriteFile off Unix has no callers yet (the daemon and the supervisor are
// Linux-only); it says so rather than writing without the guarantees.
func WriteFile(path string, _ []byte, _ os.FileMode) error {
	return &os.PathError{Op: "write", Path: path, Err: errors.ErrUnsupported}
}
