//go:build linux

package release

import (
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// stageDirs creates a release's entries inside its staging folder through
// directory file descriptors, never following a symlink: every path
// component is opened with O_NOFOLLOW relative to its parent, starting at
// the staging folder. It keeps the folders it opened, to spare one openat
// per component per entry (os.Root walks every component of every path).
// It is used by one goroutine.
type stageDirs struct {
	root int            // the staging folder; not owned
	fds  map[string]int // open folders by path relative to root
}

const maxOpenDirs = 256

func newStageDirs(root *os.File) *stageDirs {
	return &stageDirs{root: int(root.Fd()), fds: map[string]int{}}
}

// dir returns a descriptor of the folder p.
func (d *stageDirs) dir(p string) (int, error) {
	if p == "." {
		return d.root, nil
	}
	if fd, ok := d.fds[p]; ok {
		return fd, nil
	}
	parent, base, err := d.parent(p)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "openat", Path: p, Err: err}
	}
	if len(d.fds) >= maxOpenDirs {
		d.close()
	}
	d.fds[p] = fd
	return fd, nil
}

// parent returns a descriptor of p's folder, and p's base name.
func (d *stageDirs) parent(p string) (int, string, error) {
	fd, err := d.dir(path.Dir(p))
	return fd, path.Base(p), err
}

func (d *stageDirs) mkdir(p string) error {
	parent, base, err := d.parent(p)
	if err != nil {
		return err
	}
	if err := unix.Mkdirat(parent, base, 0o700); err != nil {
		return &os.PathError{Op: "mkdirat", Path: p, Err: err}
	}
	return nil
}

// create creates the file p, which must not exist, for writing.
func (d *stageDirs) create(p string) (*os.File, error) {
	parent, base, err := d.parent(p)
	if err != nil {
		return nil, err
	}
	return createAt(parent, base, p)
}

// parentDup returns a descriptor of p's folder that the caller owns, for
// use by another goroutine, and p's base name.
func (d *stageDirs) parentDup(p string) (int, string, error) {
	parent, base, err := d.parent(p)
	if err != nil {
		return -1, "", err
	}
	fd, err := unix.FcntlInt(uintptr(parent), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, "", &os.PathError{Op: "dup", Path: path.Dir(p), Err: err}
	}
	return fd, base, nil
}

// createAt creates the file base in the folder dirfd; name is for errors.
func createAt(dirfd int, base, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (d *stageDirs) writeFile(p string, data []byte, mode os.FileMode) error {
	f, err := d.create(p)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = fixFile(f, mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *stageDirs) symlink(target, p string) error {
	parent, base, err := d.parent(p)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(target, parent, base); err != nil {
		return &os.PathError{Op: "symlinkat", Path: p, Err: err}
	}
	return nil
}

// seal makes the folder p read-only (0555), owned by root when root runs.
func (d *stageDirs) seal(p string) error {
	fd, err := d.dir(p)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := unix.Fchown(fd, 0, 0); err != nil {
			return &os.PathError{Op: "fchown", Path: p, Err: err}
		}
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		return &os.PathError{Op: "fchmod", Path: p, Err: err}
	}
	return nil
}

// lchownRoot makes root own the symlink p, when root runs.
func (d *stageDirs) lchownRoot(p string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	parent, base, err := d.parent(p)
	if err != nil {
		return err
	}
	if err := unix.Fchownat(parent, base, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fchownat", Path: p, Err: err}
	}
	return nil
}

// fixFile gives an open file its installed mode, and root as owner when
// root runs.
func fixFile(f *os.File, mode os.FileMode) error {
	if os.Geteuid() == 0 {
		if err := f.Chown(0, 0); err != nil {
			return err
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	return nil
}

func (d *stageDirs) close() {
	for p, fd := range d.fds {
		unix.Close(fd)
		delete(d.fds, p)
	}
}
