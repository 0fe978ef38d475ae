// Package daemon is `tori-run daemon`: it runs every enabled capsule
// (refs/<name>/current), re-adopts what a previous daemon left running,
// serves the control API on a root-only Unix socket (status, start, stop,
// restart, events, logs, upgrade) and upgrades capsules blue-green, with a
// durable record per upgrade so that a daemon started after a crash finishes
// it. Client talks to it.
//
// It makes no mount, cgroup or container itself: instances are runtime's
// (runtime.Create, runtime.Adopt, (*runtime.Instance).Destroy), supervision
// is the supervisor's.
package daemon
