package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrMounted is returned by RemoveUnmounted when something is still mounted
// under the folder it was asked to remove.
var ErrMounted = errors.New("still mounted")

// Layers is what Mount stacks: read-only lower folders, top first, and an
// optional writable scratch layer (Upper and its Work folder, on the same
// filesystem). Without Upper the result is read-only.
type Layers struct {
	Lower []string
	Upper string
	Work  string
	// Volatile skips the syncs of the upper layer (Linux 5.10+): for a
	// scratch layer that is discarded, unmounting need not flush the
	// whole upper filesystem. A kernel without it mounts without.
	Volatile bool
}

// maxMountData is the kernel's limit on mount(2)'s data: one page, with the
// terminating NUL.
var maxMountData = os.Getpagesize() - 1

// Mount mounts l at target. A single lower folder without a scratch layer is
// bind-mounted read-only (OverlayFS needs two lowers or an upper). When the
// lowerdir option would not fit in a page, the paths are made relative to
// their common parent and the mount is made from there (as containerd does);
// if that still does not fit, the error says so.
func Mount(l Layers, target string) error {
	if len(l.Lower) == 0 {
		return fmt.Errorf("overlay mount on %s: no lower layer", target)
	}
	if (l.Upper == "") != (l.Work == "") {
		return fmt.Errorf("overlay mount on %s: upper and work folders go together (upper %q, work %q)", target, l.Upper, l.Work)
	}
	for _, p := range append(append([]string{}, l.Lower...), l.Upper, l.Work) {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("overlay mount on %s: layer path %q contains ',' or ':', which mount options cannot carry", target, p)
		}
	}
	if len(l.Lower) == 1 && l.Upper == "" {
		return bindReadOnly(l.Lower[0], target)
	}
	data := options(l, "")
	if len(data) <= maxMountData {
		err := mountErr("overlay", target, "overlay", 0, data)
		if err != nil && l.Volatile && errors.Is(err, unix.EINVAL) {
			l.Volatile = false // an older kernel: no volatile option
			return mountErr("overlay", target, "overlay", 0, options(l, ""))
		}
		return err
	}
	dir := commonParent(append(append([]string{}, l.Lower...), l.Upper, l.Work))
	data = options(l, dir)
	if len(data) > maxMountData {
		return &MountError{Op: "mount", Source: "overlay", Target: target, FSType: "overlay",
			Data: data[:80] + "...", Err: fmt.Errorf("%d layers need %d bytes of options even relative to %s; the kernel takes %d", len(l.Lower), len(data), dir, maxMountData)}
	}
	return mountFrom(dir, target, data)
}

// options builds the overlay mount options, with paths relative to dir when
// dir is set.
func options(l Layers, dir string) string {
	rel := func(p string) string {
		if dir == "" || p == "" {
			return p
		}
		r, err := filepath.Rel(dir, p)
		if err != nil {
			return p
		}
		return r
	}
	lowers := make([]string, len(l.Lower))
	for i, p := range l.Lower {
		lowers[i] = rel(p)
	}
	data := "lowerdir=" + strings.Join(lowers, ":")
	if l.Upper != "" {
		data += ",upperdir=" + rel(l.Upper) + ",workdir=" + rel(l.Work)
		if l.Volatile {
			data += ",volatile"
		}
	}
	return data
}

// mountFrom mounts with relative layer paths resolved from dir. chdir is
// process-wide unless the thread has its own fs context, so it runs on a
// locked thread that first unshares CLONE_FS; the thread is discarded after
// (no UnlockOSThread), so no other goroutine ever runs in dir.
func mountFrom(dir, target, data string) error {
	absTarget, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("overlay mount on %s: unshare(CLONE_FS): %w", target, err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- fmt.Errorf("overlay mount on %s: chdir %s: %w", target, dir, err)
			return
		}
		errc <- mountErr("overlay", absTarget, "overlay", 0, data)
	}()
	return <-errc
}

func bindReadOnly(source, target string) error {
	if err := mountErr(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := mountErr("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
		_ = Unmount(target)
		return err
	}
	return nil
}

func mountErr(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return &MountError{Op: "mount", Source: source, Target: target, FSType: fstype, Flags: flags, Data: data, Err: err}
	}
	return nil
}

// commonParent returns the deepest folder that holds every path.
func commonParent(paths []string) string {
	var parts []string
	for i, p := range paths {
		if p == "" {
			continue
		}
		d := strings.Split(filepath.Clean(filepath.Dir(p)), "/")
		if i == 0 || parts == nil {
			parts = d
			continue
		}
		n := 0
		for n < len(parts) && n < len(d) && parts[n] == d[n] {
			n++
		}
		parts = parts[:n]
	}
	if len(parts) <= 1 {
		return "/"
	}
	return strings.Join(parts, "/")
}

// Unmount unmounts target, retrying EBUSY a bounded number of times. A path
// that is not a mount point (EINVAL) or does not exist counts as unmounted.
func Unmount(target string) error {
	c := checker{unmount: unix.Unmount}
	err := c.unmountRetry(target)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(abs))
	if err != nil {
		return nil, fmt.Errorf("reading mounts under %s: %w", abs, err)
	}
	var out []string
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	// Deepest first; a path mounted twice appears twice and is unmounted twice.
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// UnmountAll unmounts everything mounted at or below dir, deepest first.
func UnmountAll(dir string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := Unmount(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveUnmounted removes dir and everything in it, after checking that
// nothing is mounted at or below it: a RemoveAll through a mount point would
// delete the files of whatever is mounted there.
func RemoveUnmounted(dir string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: %w at %s", dir, ErrMounted, strings.Join(mounts, ", "))
	}
	return os.RemoveAll(dir)
}
