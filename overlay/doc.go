// Package overlay holds tori-run's OverlayFS code. For now it has one job: Check, the true test that overlay
// mounts work on this host, used by `tori-run validate --host`.
//
// Check mounts for real (as root) rather than trusting /proc/filesystems: the listing says the kernel knows the
// filesystem, not that a mount will succeed here (missing CAP_SYS_ADMIN, a seccomp profile, an upper layer on a
// filesystem without the needed xattrs or d_type, or lower and upper overlapping on one filesystem, which the
// kernel refuses with ELOOP). It stages everything on a 1 MiB tmpfs of its own, so the answer is about overlay
// itself, and leaves nothing mounted or on disk: mounts are undone deepest-first with EBUSY retried a bounded
// number of times, and a directory is removed only after the mount on it is gone (never RemoveAll).
//
// Errors from mount(2) and umount2(2) are *MountError, carrying every argument and unwrapping to the errno;
// ErrNeedRoot and ErrNotSupported are wrapped for errors.Is.
//
// Not for mounting capsule layers: that needs the layer and lowerdir handling the runtime adds.
package overlay
