// Package specs defines the capsule manifest (capsule.yml), the systemd-style
// resource directives it shares with .slice files, and the checks of a
// capsule's pinned Python requirements.
//
// Parsing is strict and exhaustive: Load and Parse report every problem of a
// file at once, each with its file, line, column and field path, and say what
// was expected. Nothing here touches the host; checks that need the host
// (interpreter versions, cgroup modes) live in package runtime.
//
// specs is a leaf: it imports no other package of tori-run, and it does not
// convert a manifest to an OCI runtime-spec (runtime does).
package specs
