// Package toritest runs tori-run capsules from Go tests (SPEC §6): each
// Start makes an isolated capsule (its own PID, mount, IPC and UTS
// namespaces, cgroups, scratch layer and state), returns once every service
// is ready by the capsule's own readiness (sd_notify, exec/http/tcp probes),
// and registers a cleanup that stops it and removes everything it made.
// There is no daemon and no reaper process.
//
//	c := toritest.Start(t, "testdata/app")        // app folder, archive or installed name
//	out, _ := c.Logs("web")                        // what the service has written so far
//	st := c.State()                                // the capsule's state (state/client)
//	b, err := c.Exec("web", "cat", "/app/VERSION") // inside the service's namespaces and cgroup
//
// # The test binary is the capsule's init
//
// A capsule's PID 1 is tori-run's own init, and libcontainer sets up the
// namespaces by re-executing the current binary: in a test, the test
// binary. Importing this package installs that hook (an init function calls
// runtime.MaybeInit, which must run before main, on the main thread), so a
// test file needs nothing more than the import. A test binary that also
// runs its own workloads from an init function keeps working: this
// package's init runs first and returns unless the binary was started as a
// capsule's init.
//
// # Cleanup guarantees
//
// Every Start lives in its own folder under $TMPDIR/toritest-<uid>/, inside
// a folder of the test process that a flock marks as alive. tb.Cleanup
// stops the capsule (stop signals, timeouts, cgroup kill) and removes its
// mounts, cgroups, container state and files. If the test binary is killed
// (SIGKILL, a panic in another goroutine, a timeout), the kernel ends the
// capsule with it: its init holds a connection from the test process and
// exits when the kernel closes it, which kills every process of the
// capsule's PID namespace. What the kernel does not tie to a process — the
// overlay's mount, empty cgroups, files — is removed by the next Start of
// any test binary of the same user (or `tori-run gc`), which sweeps every
// folder whose process is gone.
//
// # Requirements
//
// Root, or (see docs/TORITEST.md) a user with a delegated cgroup v2 subtree.
// Tests that need root should skip otherwise; Start fails the test with the
// reason when the host cannot run capsules.
package toritest
