// Package trampoline is the fast path of tori-run's service trampoline
// (capinit.ExecCommand): a C constructor that, when the binary runs as
//
//	tori-run capsule-exec MODE STATUS-FD PATH ARGV0 ARGS...
//
// sets LISTEN_PID (mode listen-pid) and stacks a seccomp filter answering
// clone3 with ENOSYS (mode no-clone3), then execs PATH, all before the Go
// runtime starts, as runc's nsexec does its work before Go.
// A Go program cannot act between fork and exec, and starting the Go
// runtime of tori-run's binary (its package inits included) costs 5-20 ms
// here against ~1 ms for this; see docs/PERFORMANCE.md.
//
// The program is the one capinit.NoClone3Filter assembles (the Go path,
// taken when the binary is built without cgo); capinit's tests check that
// both refuse clone3. Import it for its side effect, once, from runtime.
package trampoline
