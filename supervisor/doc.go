// Package supervisor runs a set of services and keeps them running: it
// starts them in dependency order, decides restarts, probes readiness and
// health, logs their output into rotated files, publishes events, and stops
// them in reverse order. It knows nothing of capsules or containers: it
// drives a Runner that the runtime implements (processes born in their
// cgroup, tracked by pidfd), and is tested with ExecRunner (plain os/exec)
// and a fake Clock.
//
// # The pieces
//
//   - Decide is the restart decision, a pure function of the policy, the
//     History, how the run ended, the time and a random source.
//   - Supervisor owns one goroutine per supervised service; all timing
//     (backoff, probe intervals, stop timeouts) goes through Options.Clock,
//     with one reusable timer per purpose and none armed while a service
//     simply runs: an idle supervisor makes no wakeups.
//   - Runner, Process and Prober are what the runtime implements.
//   - ReadLogs reads and follows what the supervisor logged.
//
// # When not to use it
//
// It is not an init: orphans of a service (children whose parent died) are
// reparented to the capsule's PID 1, tori-run's init, which reaps them;
// ExecRunner leaves them to this process's subreaper or to PID 1. It does
// not isolate or limit anything; ExecRunner is for tests and development
// (a process group, not a cgroup: see its documentation).
//
// See docs/SUPERVISOR.md for the state machine, the restart algorithm and
// the log format.
package supervisor
