//go:build linux

package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

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

// The subordinate ranges of a user follow it in the capsule: ids 1.. in
// file order, by name or uid, a range holding the user's own id left out
// (the kernel refuses overlapping ranges).
func TestSubIDRanges(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(f, []byte("other:100000:65536\nalice:200000:1000\n1001:300000:10\nalice:1001:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, why := subIDRanges(f, "alice", 1001)
	want := []rspec.LinuxIDMapping{{ContainerID: 1, HostID: 200000, Size: 1000}, {ContainerID: 1001, HostID: 300000, Size: 10}}
	if why != "" || !slices.Equal(got, want) {
		t.Errorf("alice (uid 1001): %v %q; want %v", got, why, want)
	}
	if got, why := subIDRanges(f, "bob", 1002); got != nil || !strings.Contains(why, "no range for bob") {
		t.Errorf("bob: %v %q; want no range", got, why)
	}
	if _, why := subIDRanges(filepath.Join(t.TempDir(), "none"), "alice", 1001); !strings.Contains(why, "does not exist") {
		t.Errorf("no file: %q", why)
	}
	m := idMaps{uids: append([]rspec.LinuxIDMapping{{ContainerID: 0, HostID: 1001, Size: 1}}, want...),
		gids: []rspec.LinuxIDMapping{{ContainerID: 0, HostID: 1001, Size: 1}}}
	if !m.maps(1000, 0) || m.maps(1000, 1000) || m.maps(2000, 0) {
		t.Errorf("maps: uid 1000 gid 0 mapped, gid 1000 and uid 2000 not; got %v %v %v", m.maps(1000, 0), m.maps(1000, 1000), m.maps(2000, 0))
	}
}
