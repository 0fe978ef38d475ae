//go:build linux

package runtime

import (
	"strings"
	"testing"

	"github.com/tori-run/tori-run/specs"
)

// A user's capsule without cgroups is refused, before anything is made,
// when it asks for what that run cannot give: rootfs layers on a kernel
// older than 5.11 (no OverlayFS in a user namespace). Listening
// sockets need no cgroup: they are not refused (toritest's TestRootless
// runs them).
func TestRootlessRefusal(t *testing.T) {
	parse := func(src string) *specs.Manifest {
		m, err := specs.Parse(strings.NewReader(src), "capsule.yml")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	plain := parse("name: a\nversion: \"1.0.0\"\nservices:\n  web: { command: /bin/true }\n")
	if err := rootlessRefusal(&Target{Manifest: plain}); err != nil {
		t.Errorf("a plain capsule: %v", err)
	}
	sock := parse("name: a\nversion: \"1.0.0\"\nservices:\n  web: { command: /bin/true }\nsockets:\n  http: { listen: \"tcp://127.0.0.1:8080\" }\n")
	if err := rootlessRefusal(&Target{Manifest: sock}); err != nil {
		t.Errorf("a capsule with sockets: %v", err)
	}
	// Rootfs layers need OverlayFS in a user namespace: Linux 5.11.
	if err := rootlessOverlay("5.10.0-28-amd64"); err == nil || !strings.Contains(err.Error(), "5.11 or newer") || !strings.Contains(err.Error(), "5.10.0-28-amd64") {
		t.Errorf("rootfs layers on Linux 5.10: %v; want a refusal naming 5.11 and this kernel", err)
	}
	for _, k := range []string{"5.11.0", "6.1.0-18-amd64"} {
		if err := rootlessOverlay(k); err != nil {
			t.Errorf("rootfs layers on Linux %s: %v", k, err)
		}
	}
}
