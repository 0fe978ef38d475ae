//go:build linux

package runtime

import (
	"os"
	goruntime "runtime"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's C constructor joins namespaces before the Go runtime starts
	// when libcontainer re-executes this binary as "init".
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// The service trampoline's fast path (capinit.ExecCommand): a C
	// constructor that execs the service before the Go runtime starts.
	_ "github.com/tori-run/tori-run/runtime/trampoline"
	// Device rules of the capsule cgroup (libcontainer needs them registered).
	_ "github.com/opencontainers/cgroups/devices"

	"github.com/tori-run/tori-run/runtime/capinit"
)

// MaybeInit runs the entry points that must come before any CLI parsing,
// and does not return when one applies:
//
//   - "init": libcontainer's bootstrap, which re-executes this binary to set
//     up a container's namespaces, mounts and cgroups, then execs the
//     container's process;
//   - capinit.InitCommand: that process, tori-run's init, PID 1 of a
//     capsule, when tori-run binds itself in (no embedded cmd/tori-init:
//     initbin.go);
//   - capinit.ExecCommand: the init's trampoline to a service, which sets
//     LISTEN_PID and on cgroup v2 hosts closes clone3 before it execs the
//     service (the C constructor of runtime/trampoline does it before Go
//     when built with cgo).
//
// Tests that start capsules call it too, since there the test binary is
// /proc/self/exe.
//
// It must be called from an init function: only during init is the main
// goroutine sure to run on the process's main thread, and when MaybeInit
// returns that goroutine stays locked to it for the life of the process. libcontainer
// joins a container's mount namespace on a locked thread and lets Go discard
// the thread when the goroutine ends; Go cannot discard the main thread, so
// if such a goroutine ran there the main thread would stay in the dead
// container's namespace, and /proc/self (which shows the main thread) would
// show the container's mounts to the rest of tori-run.
func MaybeInit() {
	if len(os.Args) >= 2 {
		switch os.Args[1] {
		case "init":
			libcontainer.Init() // does not return
		case capinit.InitCommand:
			os.Exit(capinit.Run())
		case capinit.ExecCommand:
			os.Exit(capinit.Exec(os.Args[2:]))
		}
	}
	goruntime.LockOSThread()
}

// closeFiles closes each of files (capinit.CloseFiles).
func closeFiles(files []*os.File) { capinit.CloseFiles(files) }
