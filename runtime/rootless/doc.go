// Package rootless is what a capsule run by a user who is not root needs
// besides the instance itself (SPEC §3), all of it decided before anything
// is made: whether the user's delegated cgroup v2 subtree can hold the
// limits the capsule asks for, with the exact missing piece and its fix
// (CheckLimits, WantedDirectives); validate --host's rootless findings
// (Findings); the user namespace's id maps from /etc/subuid and /etc/subgid
// (detectIDMaps); what a run without root refuses (Refusal, UserMapped,
// Overlay); and the spec changes that make a capsule's OCI spec runnable by
// the user, with the rootfs layers mounted inside the capsule (Spec).
//
// runtime calls it (startWithoutCgroups, startRootlessContainer and Create's
// rootless branch stay there, as Instance's lifecycle); it imports no
// runtime, only cgroups, specs, runtime/hostfacts, runtime/hostconf and the
// runtime-spec.
package rootless
