// Package daemon is `tori-run daemon`: it runs every enabled capsule
// (refs/<name>/current), re-adopts what a previous daemon left running,
// serves the control API on a root-only Unix socket (status, start, stop,
// restart, events, logs, upgrade) and upgrades capsules blue-green, with a
// durable record per upgrade so that a daemon started after a crash finishes
// it. Client talks to it.
//
// It makes no mount, cgroup or container itself: instances are runtime's
// (runtime.Create, runtime.Adopt, (*runtime.Instance).Destroy), supervision
// is the supervisor's. Where each capsule stands is a CapsuleState, moved
// only along the transition table in state.go; once the daemon begins to
// stop, no start begins and the starts under way are waited for, then
// stopped.
package daemon
