package overlay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrNeedRoot: the kernel lists overlay, but a test mount could not be tried because we are not root.
	ErrNeedRoot = errors.New("overlay: a real test mount needs root")
	// ErrNotSupported: the kernel does not offer the overlay filesystem (not built in, module not loaded).
	ErrNotSupported = errors.New("overlay: filesystem not supported by the kernel")
)

// MountError is a failed mount(2) or umount2(2) with every argument, as runc's mountError.
type MountError struct {
	Op     string // "mount" or "umount"
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
	Err    error
}

func (e *MountError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Source != "" {
		fmt.Fprintf(&b, " %s", e.Source)
	}
	fmt.Fprintf(&b, " on %s", e.Target)
	if e.FSType != "" {
		fmt.Fprintf(&b, " type %s", e.FSType)
	}
	if e.Flags != 0 {
		fmt.Fprintf(&b, " flags %#x", e.Flags)
	}
	if e.Data != "" {
		fmt.Fprintf(&b, " (%s)", e.Data)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *MountError) Unwrap() error { return e.Err }

// Check is the true test that OverlayFS works here. As root it mounts a small tmpfs on a fresh directory under
// scratchDir, makes lower, upper, work and merged in it, mounts an overlay, reads a lower file and writes a new
// file through the overlay (checking it lands in upper and the lower layer is untouched), then unmounts both and
// removes the directory. The tmpfs makes the test independent of whether scratchDir's filesystem can serve as
// an upper layer or overlaps a lower one.
//
// Not as root it only checks that /proc/filesystems lists overlay, and returns an error wrapping ErrNeedRoot
// saying a real mount was not tried. Errors from the kernel are *MountError; ErrNotSupported is wrapped when
// the kernel has no overlay.
func Check(scratchDir string) error {
	return checker{
		euid:        os.Geteuid(),
		filesystems: "/proc/filesystems",
		mount:       unix.Mount,
		unmount:     unix.Unmount,
	}.check(scratchDir)
}

// checker holds what Check takes from the system, so tests can make it fail at each step.
type checker struct {
	euid        int
	filesystems string
	mount       func(source, target, fstype string, flags uintptr, data string) error
	unmount     func(target string, flags int) error
}

const (
	tmpfsData      = "size=1m,mode=0700"
	tmpfsFlags     = unix.MS_NOSUID | unix.MS_NODEV
	unmountRetries = 50
	unmountWait    = 20 * time.Millisecond
)

func (c checker) check(scratchDir string) (err error) {
	if c.euid != 0 {
		listed, lerr := c.listed()
		if lerr != nil {
			return lerr
		}
		if !listed {
			return fmt.Errorf("%w: %s does not list overlay (module not loaded? root can load it: modprobe overlay)", ErrNotSupported, c.filesystems)
		}
		return fmt.Errorf("%w: %s lists overlay, but as uid %d a test mount was not tried", ErrNeedRoot, c.filesystems, c.euid)
	}

	dir, err := os.MkdirTemp(scratchDir, "tori-overlay-check-")
	if err != nil {
		return fmt.Errorf("overlay check: %w", err)
	}
	var tmpfsMounted, overlayMounted bool
	merged := filepath.Join(dir, "merged")
	defer func() {
		// Deepest first. A mount that will not go keeps everything above it in place: never remove a
		// directory that may still be a mount point.
		if overlayMounted {
			if uerr := c.unmountRetry(merged); uerr != nil {
				err = errors.Join(err, uerr, fmt.Errorf("overlay check: left %s mounted", merged))
				return
			}
		}
		if tmpfsMounted {
			if uerr := c.unmountRetry(dir); uerr != nil {
				err = errors.Join(err, uerr, fmt.Errorf("overlay check: left tmpfs mounted on %s", dir))
				return
			}
		}
		// Everything made after the tmpfs mount went with it: dir is empty.
		if rerr := os.Remove(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("overlay check: %w", rerr))
		}
	}()

	if err := c.mountErr("tori-overlay-check", dir, "tmpfs", tmpfsFlags, tmpfsData); err != nil {
		return err
	}
	tmpfsMounted = true

	lower, upper, work := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("overlay check: %w", err)
		}
	}
	const lowerText, newText = "from the lower layer\n", "written through the overlay\n"
	if err := os.WriteFile(filepath.Join(lower, "lower.txt"), []byte(lowerText), 0o600); err != nil {
		return fmt.Errorf("overlay check: %w", err)
	}

	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := c.mountErr("overlay", merged, "overlay", 0, data); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("%w: %w", ErrNotSupported, err)
		}
		return err
	}
	overlayMounted = true

	if err := expectFile(filepath.Join(merged, "lower.txt"), lowerText, "a lower file read through the overlay"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(merged, "new.txt"), []byte(newText), 0o600); err != nil {
		return fmt.Errorf("overlay check: write through the overlay: %w", err)
	}
	if err := os.WriteFile(filepath.Join(merged, "lower.txt"), []byte(newText), 0o600); err != nil {
		return fmt.Errorf("overlay check: copy-up of a lower file: %w", err)
	}
	if err := expectFile(filepath.Join(upper, "new.txt"), newText, "a new file in the upper layer"); err != nil {
		return err
	}
	if err := expectFile(filepath.Join(upper, "lower.txt"), newText, "a copied-up file in the upper layer"); err != nil {
		return err
	}
	return expectFile(filepath.Join(lower, "lower.txt"), lowerText, "the lower layer after a copy-up")
}

func expectFile(path, want, what string) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("overlay check: %s: %w", what, err)
	}
	if string(got) != want {
		return fmt.Errorf("overlay check: %s: %s holds %q, want %q", what, path, got, want)
	}
	return nil
}

func (c checker) mountErr(source, target, fstype string, flags uintptr, data string) error {
	if err := c.mount(source, target, fstype, flags, data); err != nil {
		return &MountError{Op: "mount", Source: source, Target: target, FSType: fstype, Flags: flags, Data: data, Err: err}
	}
	return nil
}

// unmountRetry unmounts target, retrying EBUSY a bounded number of times; EINVAL means it is not (or no
// longer) a mount point.
func (c checker) unmountRetry(target string) error {
	var err error
	for range unmountRetries {
		err = c.unmount(target, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(unmountWait)
	}
	return &MountError{Op: "umount", Target: target, Err: err}
}

// listed reports whether the filesystems file (/proc/filesystems) lists overlay.
func (c checker) listed() (bool, error) {
	b, err := os.ReadFile(c.filesystems)
	if err != nil {
		return false, fmt.Errorf("overlay check: %w", err)
	}
	return listsOverlay(bytes.NewReader(b))
}

func listsOverlay(r io.Reader) (bool, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == "overlay" {
			return true, nil
		}
	}
	return false, sc.Err()
}
