// Package atomicfile replaces small files whole: after WriteFile returns,
// the file holds the new content, and after a crash (of the process or of
// the machine) it holds either the old content or the new, never a part.
//
// The steps are SQLite's and renameio's, plus the one renameio leaves to
// its caller: a temporary file beside the target, its content fsynced,
// renamed over the target, then the folder fsynced so that the rename
// itself survives a power cut. On failure the temporary file is removed and
// the target is untouched.
//
// No symlink is followed on the way: the folder is opened with O_NOFOLLOW
// and everything after happens relative to it (openat with O_EXCL for the
// temporary file, renameat, which replaces a symlink at the target's name
// rather than writing through it). A process that can write to the folder
// cannot make a write land elsewhere.
//
// It is for files of a few kilobytes written at once (records, references,
// status, restart history). Streams (archives, Parquet files) stage their
// own temporary file and call SyncDir after their rename.
package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Remove removes path, durably (its folder is fsynced); a path already
// gone is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}
