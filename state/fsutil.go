package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

// syncFunc makes a file's data durable. The store calls it through
// Options.syncFile so tests can make it fail.
type syncFunc func(*os.File) error

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// publish writes data through write into a temporary file in dir, fsyncs it,
// renames it to name and fsyncs dir: after publish returns, name exists with
// the whole content or, if it fails, not at all (the temporary is removed).
func publish(dir, name string, sync syncFunc, write func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = write(f); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = sync(f); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	final := filepath.Join(dir, name)
	if err = os.Rename(tmp, final); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, final, err)
	}
	return atomicfile.SyncDir(dir)
}

// isNoSpace reports whether err means the disk or a disk quota is full.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, ErrNoSpace)
}

// mkdirAllSync is os.MkdirAll that also makes each folder it creates
// durable in its parent (a crash right after Open must not lose the state
// folder's name).
func mkdirAllSync(dir string, perm os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a folder", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return atomicfile.SyncDir(parent)
}
