//go:build linux

package rootless

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
	if err := Refusal(plain, nil, "6.1.0"); err != nil {
		t.Errorf("a plain capsule: %v", err)
	}
	sock := parse("name: a\nversion: \"1.0.0\"\nservices:\n  web: { command: /bin/true }\nsockets:\n  http: { listen: \"tcp://127.0.0.1:8080\" }\n")
	if err := Refusal(sock, nil, "6.1.0"); err != nil {
		t.Errorf("a capsule with sockets: %v", err)
	}
	// Rootfs layers need OverlayFS in a user namespace: Linux 5.11.
	if err := Overlay("5.10.0-28-amd64"); err == nil || !strings.Contains(err.Error(), "5.11 or newer") || !strings.Contains(err.Error(), "5.10.0-28-amd64") {
		t.Errorf("rootfs layers on Linux 5.10: %v; want a refusal naming 5.11 and this kernel", err)
	}
	for _, k := range []string{"5.11.0", "6.1.0-18-amd64"} {
		if err := Overlay(k); err != nil {
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

// A capsule with rootfs layers is refused on a kernel without OverlayFS in
// user namespaces, with the layers it names.
func TestRefusalLayersOldKernel(t *testing.T) {
	m, err := specs.Parse(strings.NewReader("name: a\nversion: \"1.0.0\"\nservices:\n  web: { command: /bin/true }\n"), "capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := Refusal(m, []string{t.TempDir()}, "5.10.0"); err == nil || !strings.Contains(err.Error(), "capsule.yml: layers") || !strings.Contains(err.Error(), "5.11 or newer") {
		t.Errorf("layers on Linux 5.10: %v; want the refusal naming the manifest and 5.11", err)
	}
	if err := Refusal(m, []string{t.TempDir()}, "6.1.0"); err != nil {
		t.Errorf("layers on Linux 6.1: %v", err)
	}
}

// Spec makes a capsule's spec runnable by a user: a user namespace, no
// cgroup namespace, mount or path without cgroups, /sys bound from the
// host, no uid=/gid= options, the app's overlay inside the capsule, and
// the rootfs layers' top-level folders mounted first (an overlay of two
// layers' folders, a bind of one's), their symlinks made in the root.
func TestSpec(t *testing.T) {
	top, bottom, rootfs := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Join(top, "usr"), filepath.Join(bottom, "usr"), filepath.Join(bottom, "etc"), filepath.Join(bottom, "proc")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("usr/bin", filepath.Join(top, "bin")); err != nil {
		t.Fatal(err)
	}
	s := &rspec.Spec{Linux: &rspec.Linux{CgroupsPath: "/tori/a", Resources: &rspec.LinuxResources{},
		Namespaces: []rspec.LinuxNamespace{{Type: rspec.PIDNamespace}, {Type: rspec.CgroupNamespace}, {Type: rspec.MountNamespace}}},
		Mounts: []rspec.Mount{{Destination: "/sys", Type: "sysfs", Source: "sysfs"}, {Destination: "/sys/fs/cgroup", Type: "cgroup2"},
			{Destination: "/dev/pts", Type: "devpts", Options: []string{"nosuid", "gid=5", "mode=620"}},
			{Destination: "/app", Type: "bind", Source: "/x"}}}
	app := rspec.Mount{Destination: "/app", Type: "overlay", Source: "overlay", Options: []string{"userxattr"}}
	if err := Spec(s, Mounts{App: &app, Layers: []string{top, bottom}, Rootfs: rootfs, RecursiveRO: "rro"}, false); err != nil {
		t.Fatal(err)
	}
	var ns []rspec.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	if !slices.Equal(ns, []rspec.LinuxNamespaceType{rspec.PIDNamespace, rspec.MountNamespace, rspec.UserNamespace}) {
		t.Errorf("namespaces %v; want pid, mount, user", ns)
	}
	if s.Linux.CgroupsPath != "" || s.Linux.Resources != nil || len(s.Linux.UIDMappings) == 0 || s.Linux.UIDMappings[0].ContainerID != 0 ||
		s.Linux.UIDMappings[0].HostID != uint32(os.Geteuid()) {
		t.Errorf("cgroups path %q, resources %v, uid maps %v; want none, none, the user as 0", s.Linux.CgroupsPath, s.Linux.Resources, s.Linux.UIDMappings)
	}
	var got []string
	for _, mt := range s.Mounts {
		got = append(got, mt.Destination+" "+mt.Type+" "+mt.Source+" "+strings.Join(mt.Options, ","))
	}
	want := []string{
		"/usr overlay overlay lowerdir=" + filepath.Join(top, "usr") + ":" + filepath.Join(bottom, "usr") + ",ro,nosuid,nodev,userxattr",
		"/etc bind " + filepath.Join(bottom, "etc") + " rbind,rro,nosuid,nodev",
		"/sys bind /sys rbind,nosuid,noexec,nodev,ro",
		"/dev/pts devpts  nosuid,mode=620",
		"/app overlay overlay userxattr",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mounts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l, err := os.Readlink(filepath.Join(rootfs, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("/bin in the root folder: %q %v; want the layer's symlink to usr/bin", l, err)
	}
}
