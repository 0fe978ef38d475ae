//go:build linux

package runtime

import (
	"strings"
	"testing"

	"github.com/tori-run/tori-run/specs"
)

// A user's capsule without cgroups is refused, before anything is made,
// when it asks for what that run cannot give: rootfs layers. Listening
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
	if err := rootlessRefusal(&Target{Manifest: plain, Layers: []string{"/x"}}); err == nil || !strings.Contains(err.Error(), "rootfs layers") {
		t.Errorf("rootfs layers: %v", err)
	}
}
