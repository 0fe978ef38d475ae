package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// EnsureDelegation prepares our own cgroup to hold tori-run's groups. On cgroup v1 (legacy and hybrid hosts)
// there is nothing to prepare: any cgroup may have both processes and children with controllers.
//
// On cgroup v2 a cgroup may enable controllers for its children only while it holds no process ("no internal
// processes"; the root cgroup is exempt). So when our own cgroup is not the root, EnsureDelegation moves THE
// CALLING PROCESS ONLY (all its threads) into the leaf <own>/supervisor, creating it, and then enables in
// <own>/cgroup.subtree_control every controller <own>/cgroup.controllers offers. If any other process is in
// <own>, nothing is changed and the error (wrapping ErrNotEmpty) names them and suggests --cgroup-parent.
// Calling it again, or from a process already in <own>/supervisor, is harmless.
//
// h must be the Host groups are then created with: it remembers the delegation.
func EnsureDelegation(h *Host) error {
	if h.Mode != Unified {
		return nil
	}
	var v2 *Hierarchy
	for i := range h.Hierarchies {
		if h.Hierarchies[i].Version == 2 {
			v2 = &h.Hierarchies[i]
		}
	}
	if v2 == nil {
		return fmt.Errorf("delegate cgroup: %w: cgroup2 is mounted but does not show our cgroup", ErrNoCgroups)
	}
	base := v2.base()
	dir, ok := v2.dirOf(base)
	if !ok {
		return fmt.Errorf("delegate cgroup %s: outside the cgroup2 mount %s", base, v2.Mount)
	}
	if base != "/" {
		if err := leaveForLeaf(v2.Mount, dir, os.Getpid()); err != nil {
			return err
		}
	}
	if err := enableSubtree(v2.Mount, dir); err != nil {
		return fmt.Errorf("delegate cgroup: %w", err)
	}
	h.delegated = true
	return nil
}

// leaveForLeaf moves pid from dir into dir/supervisor, unless another process is in dir.
func leaveForLeaf(mount, dir string, self int) error {
	pids, err := readPids(mount, dir)
	if err != nil {
		return fmt.Errorf("delegate cgroup %s: %w", dir, err)
	}
	others := slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return p == self })
	if len(others) > 0 {
		return fmt.Errorf("cannot use our cgroup %s for capsules: %w besides tori-run (pid %d): %s. "+
			"On cgroup v2 a cgroup with processes cannot enable controllers for child cgroups, and tori-run moves only itself. "+
			"Start tori-run in a cgroup of its own, or pass --cgroup-parent with a cgroup that holds no processes",
			dir, ErrNotEmpty, self, describePids(others))
	}
	if !slices.Contains(pids, self) {
		return nil // already in the leaf, or placed elsewhere by whoever started us
	}
	leaf := filepath.Join(dir, SupervisorLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("delegate cgroup: %w", err)
	}
	if err := writeProcs(mount, leaf, self); err != nil {
		return fmt.Errorf("delegate cgroup: moving tori-run into its leaf: %w", err)
	}
	return nil
}

// enableSubtree enables in dir/cgroup.subtree_control every controller of dir/cgroup.controllers that is not
// enabled yet. While dir holds processes the kernel refuses (EBUSY; the root cgroup is exempt): the error
// wraps ErrNotEmpty and names them.
func enableSubtree(mount, dir string) error {
	avail, err := readBeneath(mount, dir, "cgroup.controllers")
	if err != nil {
		return err
	}
	enabled, err := readBeneath(mount, dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	var want []string
	for c := range strings.FieldsSeq(avail) {
		if !slices.Contains(strings.Fields(enabled), c) {
			want = append(want, "+"+c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	// All or nothing, never one by one: cpu, cpuset and pids are "threaded" controllers, which the kernel
	// lets a cgroup with processes enable, and doing so makes it a thread root that can never enable memory
	// or io for its children.
	err = writeBeneath(mount, dir, "cgroup.subtree_control", strings.Join(want, " "))
	if errors.Is(err, unix.EBUSY) {
		pids, _ := readPids(mount, dir)
		return fmt.Errorf("%w (%w: %s)", err, ErrNotEmpty, describePids(pids))
	}
	return err
}
