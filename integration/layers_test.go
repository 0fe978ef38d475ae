package integration

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
)

// installFolder builds and installs a folder as a release and returns its
// digest.
func installFolder(t *testing.T, o runtime.Options, dir string) string {
	t.Helper()
	res, err := release.Build(context.Background(), release.BuildOptions{FromDir: dir, Manifest: filepath.Join(dir, "capsule.yml"), OutputDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	store, err := release.Open(o.Root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Install(context.Background(), res.Path); err != nil {
		t.Fatal(err)
	}
	return res.Digest
}

// TestRootfsLayer: a capsule on an installed rootfs layer (a static busybox)
// runs with that layer as its /, and none of the host's system folders.
func TestRootfsLayer(t *testing.T) {
	requireRoot(t)
	if !isStatic("/bin/busybox") {
		t.Skip("needs a static busybox at /bin/busybox (apt-get install busybox-static) to make a rootfs layer")
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	o := options(t)
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "bin", "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "cat", "ls", "id"} {
		if err := os.Symlink("busybox", filepath.Join(base, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "etc-marker"), []byte("from the layer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A user only the layer knows: user: is looked up in the capsule's own
	// /etc/passwd, not the host's.
	if err := os.MkdirAll(filepath.Join(base, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\ncapsuser:x:4242:4343::/home:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "capsule.yml"), []byte("name: base\nversion: \"1.0.0\"\nservices:\n  none: { command: /bin/sh }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	digest := installFolder(t, o, base)
	// The capsule's init is tori-run itself, bound in: on a root without a
	// libc it must be the static build (as make build makes it), not this
	// dynamically linked test binary.
	o.Binary = staticToriRun(t)

	m := capsule(t, "layers: ["+digest+"]\nservices:\n  a:\n    command: /bin/sh -c \"cat /etc-marker; ls /usr 2>&1; echo done\"\n")
	inst := start(t, m, o)
	_, lines := service(t, inst, "a")
	if l := expectLine(t, lines, "from the layer"); l != "from the layer" {
		t.Errorf("the root is not the layer: %q", l)
	}
	if l := expectLine(t, lines, "ls: "); !strings.Contains(l, "No such file") {
		t.Errorf("the host's /usr is visible on a rootfs layer: %q", l)
	}
	expectLine(t, lines, "done")

	if err := inst.Destroy(context.Background()); err != nil { // the state of "itest" is one instance's at a time
		t.Fatal(err)
	}
	m = capsule(t, "layers: ["+digest+"]\nuser: capsuser\nservices:\n  a:\n    command: /bin/sh -c \"echo uid $(id -u) gid $(id -g)\"\n")
	inst = start(t, m, o)
	_, lines = service(t, inst, "a")
	if l := expectLine(t, lines, "uid "); l != "uid 4242 gid 4343" {
		t.Errorf("user: capsuser from the layer's /etc/passwd: %q", l)
	}
}

// TestLayerErrors: an unknown layer, and host stacked with a rootfs layer,
// are refused before anything is made.
func TestLayerErrors(t *testing.T) {
	requireRoot(t)
	o := options(t)
	for body, want := range map[string]string{
		"layers: [" + strings.Repeat("ab", 32) + "]\nservices:\n  a: { command: /bin/true }\n":       "is not an installed release",
		"layers: [" + strings.Repeat("cd", 32) + ", host]\nservices:\n  a: { command: /bin/true }\n": "cannot be stacked with rootfs layers",
	} {
		_, err := runtime.Resolve(capsule(t, body), o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	assertNothingLeft(t, o)
}

// isStatic says whether path is an ELF executable without an interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// staticToriRun is a static tori-run: $TORI_RUN_BINARY (the QEMU guest has
// one), else built once, as make build does.
func staticToriRun(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("TORI_RUN_BINARY"); b != "" && isStatic(b) {
		return b
	}
	out := filepath.Join(t.TempDir(), "tori-run")
	cmd := exec.Command("go", "build", "-tags", "netgo,osusergo,seccomp", "-ldflags", "-linkmode external -extldflags -static", "-o", out, "../cmd/tori-run")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build a static tori-run (%v): %s", err, b)
	}
	return out
}
