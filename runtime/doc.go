// Package runtime wires tori-run's leaf packages (specs, overlay, cgroups,
// state, supervisor) into the operations the CLI exposes: validating
// manifests, apps and hosts, and (in later work) running capsules.
//
// Leaf packages know nothing of each other; only runtime and its
// subpackages import several of them (make lint checks this).
package runtime
