//go:build linux

package rootless

import (
	"fmt"

	"github.com/tori-run/tori-run/runtime/hostconf"
	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/specs"
)

// Refusal names what a capsule (m, with its resolved rootfs layers) asks
// for that a run without root and without cgroups does not give, before
// anything is made: never run it without that silently. kernel is the
// kernel's release (uname -r).
func Refusal(m *specs.Manifest, layers []string, kernel string) error {
	if err := UserMapped(m, layers); err != nil {
		return err
	}
	if len(layers) > 0 {
		if err := Overlay(kernel); err != nil {
			return fmt.Errorf("%s: layers %v: %w", m.Source, m.Layers, err)
		}
	}
	return nil
}

// UserMapped refuses a capsule whose user: has no id in the user namespace
// a capsule run without root gets (idmap.go).
func UserMapped(m *specs.Manifest, layers []string) error {
	if m.User == "" {
		return nil
	}
	uid, gid, err := hostconf.ResolveUser(m, layers)
	if err != nil {
		return err
	}
	if ids := detectIDMaps(); !ids.maps(uid, gid) {
		return fmt.Errorf("%s: user: %s (uid %d, gid %d) is not mapped in the capsule's user namespace: %s; give your user subordinate ids (%s), or run the capsule as root inside (no user:)",
			m.Source, m.User, uid, gid, ids.describe(), ids.hint)
	}
	return nil
}

// Overlay says whether the kernel release mounts OverlayFS inside a user
// namespace (5.11+), which a capsule's rootfs layers need without root.
func Overlay(release string) error {
	v, err := hostfacts.ParseKernel(release)
	if err != nil || v.Less(hostfacts.UserNSOverlay) {
		return fmt.Errorf("rootfs layers without root need OverlayFS inside a user namespace, which needs Linux %s or newer; this kernel is %s: run the capsule as root, or upgrade the kernel", hostfacts.UserNSOverlay, release)
	}
	return nil
}
