package overlay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to mount (uid %d)", os.Geteuid())
	}
}

// assertClean fails the test if anything is mounted under dir or dir is not empty.
func assertClean(t *testing.T, dir string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			t.Errorf("still mounted: %s", line)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func rootChecker() checker {
	return checker{euid: 0, filesystems: "/proc/filesystems", mount: unix.Mount, unmount: unix.Unmount}
}

func TestCheck(t *testing.T) {
	requireRoot(t)
	scratch := t.TempDir()
	if err := Check(scratch); err != nil {
		t.Fatalf("Check(%s): %v", scratch, err)
	}
	assertClean(t, scratch)
}

func TestCheckNotRoot(t *testing.T) {
	dir := t.TempDir()
	with := filepath.Join(dir, "with")
	without := filepath.Join(dir, "without")
	if err := os.WriteFile(with, []byte("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(without, []byte("nodev\tsysfs\n\text4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noMount := func(string, string, string, uintptr, string) error {
		t.Fatal("mount called as non-root")
		return nil
	}
	err := checker{euid: 1000, filesystems: with, mount: noMount}.check(dir)
	if !errors.Is(err, ErrNeedRoot) || !strings.Contains(err.Error(), "uid 1000") {
		t.Errorf("listed, uid 1000: err = %v, want ErrNeedRoot naming the uid", err)
	}
	err = checker{euid: 1000, filesystems: without, mount: noMount}.check(dir)
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), without) {
		t.Errorf("not listed: err = %v, want ErrNotSupported naming %s", err, without)
	}
	err = checker{euid: 1000, filesystems: filepath.Join(dir, "missing"), mount: noMount}.check(dir)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing filesystems file: err = %v, want ErrNotExist", err)
	}
}

func TestCheckOverlayMountFails(t *testing.T) {
	requireRoot(t)
	for _, errno := range []unix.Errno{unix.EPERM, unix.ENODEV, unix.ELOOP} {
		t.Run(errno.Error(), func(t *testing.T) {
			scratch := t.TempDir()
			c := rootChecker()
			c.mount = func(source, target, fstype string, flags uintptr, data string) error {
				if fstype == "overlay" {
					return errno
				}
				return unix.Mount(source, target, fstype, flags, data)
			}
			err := c.check(scratch)
			var me *MountError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want a *MountError", err)
			}
			if me.Op != "mount" || me.FSType != "overlay" || !strings.HasPrefix(me.Target, scratch) ||
				!strings.Contains(me.Data, "lowerdir=") || !errors.Is(err, errno) {
				t.Errorf("MountError = %+v", me)
			}
			if errors.Is(err, ErrNotSupported) != (errno == unix.ENODEV) {
				t.Errorf("errors.Is(%v, ErrNotSupported) = %v", err, errno != unix.ENODEV)
			}
			assertClean(t, scratch)
		})
	}
}

func TestCheckTmpfsMountFails(t *testing.T) {
	requireRoot(t)
	scratch := t.TempDir()
	c := rootChecker()
	c.mount = func(string, string, string, uintptr, string) error { return unix.EPERM }
	err := c.check(scratch)
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "type tmpfs") {
		t.Errorf("err = %v, want EPERM from the tmpfs mount", err)
	}
	assertClean(t, scratch)
}

func TestCheckUnmountBusyRetried(t *testing.T) {
	requireRoot(t)
	scratch := t.TempDir()
	busy := map[string]int{}
	c := rootChecker()
	c.unmount = func(target string, flags int) error {
		if busy[target] < 2 {
			busy[target]++
			return unix.EBUSY
		}
		return unix.Unmount(target, flags)
	}
	if err := c.check(scratch); err != nil {
		t.Fatalf("check with EBUSY twice per unmount: %v", err)
	}
	if len(busy) != 2 {
		t.Errorf("unmounted %d targets, want 2 (overlay, tmpfs): %v", len(busy), busy)
	}
	assertClean(t, scratch)
}

func TestCheckUnmountFailsKeepsDir(t *testing.T) {
	requireRoot(t)
	scratch := t.TempDir()
	c := rootChecker()
	c.unmount = func(target string, flags int) error {
		if filepath.Base(target) != "merged" {
			return unix.EBUSY // the tmpfs never goes
		}
		return unix.Unmount(target, flags)
	}
	err := c.check(scratch)
	var me *MountError
	if !errors.As(err, &me) || me.Op != "umount" || !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "left tmpfs mounted on") {
		t.Fatalf("err = %v, want an umount MountError with EBUSY saying what was left", err)
	}
	// The directory must still be there, with the tmpfs on it: it was not removed while mounted.
	if _, serr := os.Stat(me.Target); serr != nil {
		t.Errorf("%s was removed while mounted: %v", me.Target, serr)
	}
	if err := unix.Unmount(me.Target, 0); err != nil {
		t.Fatalf("clean up %s: %v", me.Target, err)
	}
	if err := os.Remove(me.Target); err != nil {
		t.Fatal(err)
	}
	assertClean(t, scratch)
}

func TestUnmountEINVALIsDone(t *testing.T) {
	c := checker{unmount: func(string, int) error { return unix.EINVAL }}
	if err := c.unmountRetry("/not/mounted"); err != nil {
		t.Errorf("EINVAL: %v, want nil (already unmounted)", err)
	}
	calls := 0
	c = checker{unmount: func(string, int) error { calls++; return unix.EBUSY }}
	if err := c.unmountRetry("/busy"); !errors.Is(err, unix.EBUSY) || calls != unmountRetries {
		t.Errorf("always EBUSY: err = %v after %d calls, want EBUSY after %d", err, calls, unmountRetries)
	}
}

func TestMountErrorString(t *testing.T) {
	e := &MountError{Op: "mount", Source: "overlay", Target: "/x/merged", FSType: "overlay", Flags: unix.MS_NOSUID,
		Data: "lowerdir=/x/l,upperdir=/x/u,workdir=/x/w", Err: unix.ELOOP}
	want := "mount overlay on /x/merged type overlay flags 0x2 (lowerdir=/x/l,upperdir=/x/u,workdir=/x/w): too many levels of symbolic links"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}
	if !errors.Is(e, unix.ELOOP) {
		t.Error("MountError does not unwrap to its errno")
	}
	if got := (&MountError{Op: "umount", Target: "/x", Err: unix.EBUSY}).Error(); got != "umount on /x: device or resource busy" {
		t.Errorf("umount Error() = %q", got)
	}
}
