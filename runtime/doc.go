// Package runtime runs capsules: it wires tori-run's leaf packages (specs,
// overlay, cgroups, state, supervisor) into instances (Resolve, Create,
// Adopt, Destroy, Supervise), the foreground Run, the state proxy of each
// capsule and the metrics of a run.
//
// Above it, each with its own depguard rule: runtime/daemon (the daemon,
// its control API and client, enable, blue-green upgrades) and
// runtime/hostcheck (validate and the host checks). Below it: release
// (archives and the release store) and the leaves. Leaf packages know
// nothing of each other; only runtime and its subpackages import several of
// them (make lint checks this).
package runtime
