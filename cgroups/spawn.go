package cgroups

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups/spawn"
)

// SpawnFiles opens what a process spawner needs to start a child directly in g (StartIn), in a form that may
// be handed to a process that must not reach the host's file system (tori-run's init in a capsule): on v1 the
// `tasks` file of each hierarchy (O_WRONLY; a file, not a folder: no path leads from it anywhere); on v2 the
// cgroup2 directory as the root of a detached, read-only copy of its mount holding this one folder
// (DetachedDir), never as a folder of the host's mount, from which openat(fd, "..") would climb to the host's
// "/" (the class of runc's CVE-2024-21626). The caller closes the files.
//
// On a hybrid host (a version 1 group) the cgroup2 folder is left out: the child is born in the v1
// hierarchies alone and stays in its parent's cgroup2 group. The unified hierarchy holds no controller there,
// and everything that asks which group a process is in (Procs, Kill, the notify sender check, the state
// proxy's identify) finds it through the v1 hierarchies. Being born there too would take
// clone3(CLONE_INTO_CGROUP), and a spawner that needs clone3 cannot run under a seccomp filter that answers
// clone3 with ENOSYS (as moby's does, so that the flags of clone(2) can be checked): tori-run's init on v1
// and hybrid hosts runs under exactly that filter.
//
// Inside a cgroup namespace prefer OpenNamespaced, which needs nothing from the host.
func (g *Group) SpawnFiles() ([]*os.File, error) {
	var out []*os.File
	for _, d := range g.dirs {
		if d.Version == 2 && g.version == 1 {
			continue // hybrid: born in v1 alone (see above)
		}
		var f *os.File
		var err error
		if d.Version == 2 {
			f, err = DetachedDir(d.Mount, d.dir)
		} else {
			f, err = openBeneath(d.Mount, d.dir, "tasks", unix.O_WRONLY)
		}
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("spawn files of cgroup %s: %w", g.path, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// DetachedDir: see spawn.DetachedDir.
func DetachedDir(mount, dir string) (*os.File, error) { return spawn.DetachedDir(mount, dir) }

// Contained: see spawn.Contained.
func Contained(f *os.File) error { return spawn.Contained(f) }

// OpenNamespaced: see spawn.OpenNamespaced.
func OpenNamespaced(mount, rel string) (*os.File, error) { return spawn.OpenNamespaced(mount, rel) }

// StartIn: see spawn.StartIn, which holds the code so that tori-run's capsule init can start children in
// their cgroups without linking this package's dependencies.
func StartIn(version int, files []*os.File, cmd *exec.Cmd) error {
	return spawn.StartIn(version, files, cmd)
}
