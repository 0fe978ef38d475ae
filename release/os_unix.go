//go:build unix

package release

import (
	"fmt"
	"os"
	"syscall"
)

// oNoFollow makes an open fail on a symlink (the scan reads those as links).
const oNoFollow = syscall.O_NOFOLLOW

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
