package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// OSProber is the Prober of the live host.
type OSProber struct{}

// ReadFile reads path.
func (OSProber) ReadFile(path string) ([]byte, error) {
	return os.ReadFile(path)
}

// ProbeChild makes dir/tori-probe-<pid>-<random>, lists it and removes it. The child is empty and no process
// is ever moved into it. Removal retries EBUSY (the kernel may still be tearing the cgroup down) a bounded
// number of times; a child that cannot be removed is named in the error.
func (OSProber) ProbeChild(dir string) ([]string, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("random name for a probe cgroup: %w", err)
	}
	child := filepath.Join(dir, fmt.Sprintf("tori-probe-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:])))
	if err := os.Mkdir(child, 0o755); err != nil {
		return nil, err // *PathError names child
	}
	entries, listErr := os.ReadDir(child)
	if err := rmdirRetry(child); err != nil {
		return nil, fmt.Errorf("remove probe cgroup %s (left behind): %w", child, err)
	}
	if listErr != nil {
		return nil, listErr
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

func rmdirRetry(dir string) error {
	var err error
	for range 10 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &os.PathError{Op: "rmdir", Path: dir, Err: err}
}
