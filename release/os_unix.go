//go:build unix

package release

import "syscall"

// oNoFollow makes an open fail on a symlink (the scan reads those as links).
const oNoFollow = syscall.O_NOFOLLOW
