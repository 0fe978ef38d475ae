// Package capinit is tori-run's capsule init, PID 1 of every capsule, and
// its protocol with the host: requests to start, adopt and hold over a
// unixpacket socket, with files passed as SCM_RIGHTS (proto_linux.go); the
// init's server and reaper (Run); and the service trampoline (Exec,
// ExecCommand) that closes clone3 and sets LISTEN_PID between fork and exec.
//
// It is built into two binaries: tori-run (runtime.MaybeInit dispatches
// InitCommand and ExecCommand here, the fallback) and the small pure-Go
// cmd/tori-init, which tori-run embeds when built by the Makefile and binds
// into each capsule in its place (runtime/initbin). So the package must stay
// light: the standard library, golang.org/x/sys/unix, golang.org/x/net/bpf
// and cgroups/spawn, never libcontainer, the state store, prometheus or a
// YAML parser (.golangci.yml's depguard rule "capinit"; docs/PERFORMANCE.md
// says what each of those costs at every start).
package capinit
