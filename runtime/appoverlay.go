//go:build linux

package runtime

import rspec "github.com/opencontainers/runtime-spec/specs-go"

// appOverlayMount is the app's overlay as a mount of the capsule's spec:
// made inside the capsule's mount namespace, it ends with it — with no
// unmount, even when nothing of tori-run is left to do one. userns: in a
// user namespace (trusted.* xattrs are root's; user.* are used instead).
func appOverlayMount(appDir, upper, work string, userns bool) rspec.Mount {
	opts := []string{"lowerdir=" + appDir, "upperdir=" + upper, "workdir=" + work, "nosuid", "nodev"}
	if userns {
		opts = append(opts, "userxattr")
	}
	return rspec.Mount{Destination: capsuleApp, Type: "overlay", Source: "overlay", Options: opts}
}

// appInCapsule replaces the bind of the host-mounted app by the overlay
// itself (Options.AppInCapsule).
func appInCapsule(s *rspec.Spec, readOnly bool, appDir, upper, work string) {
	for n, mt := range s.Mounts {
		if mt.Destination != capsuleApp {
			continue
		}
		if readOnly {
			s.Mounts[n].Source = appDir // the app itself, bound read-only
		} else {
			s.Mounts[n] = appOverlayMount(appDir, upper, work, false)
		}
	}
}
