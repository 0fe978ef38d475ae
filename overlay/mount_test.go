package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// layerDirs makes n lower folders under dir, each with a file named after it
// and a shared file that the top layer's copy must win.
func layerDirs(t *testing.T, dir string, n int, name func(i int) string) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, name(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range map[string]string{fmt.Sprintf("only-%d", i): "x", "shared": fmt.Sprint(i)} {
			if err := os.WriteFile(filepath.Join(d, f), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, d)
	}
	return out
}

func assertNoMounts(t *testing.T, dir string) {
	t.Helper()
	if m, err := MountsUnder(dir); err != nil || len(m) > 0 {
		t.Errorf("left mounted under %s: %v %v", dir, m, err)
	}
}

func TestMountStackWithScratch(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	lowers := layerDirs(t, dir, 3, func(i int) string { return fmt.Sprintf("l%d", i) })
	upper, work, target := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Mount(Layers{Lower: lowers, Upper: upper, Work: work, Volatile: true}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = UnmountAll(dir); assertNoMounts(t, dir) })
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(mi), "volatile") {
		t.Errorf("the scratch layer is not mounted volatile")
	}
	if b, _ := os.ReadFile(filepath.Join(target, "shared")); string(b) != "0" {
		t.Errorf("top layer must win: shared = %q", b)
	}
	for i := range lowers {
		if _, err := os.Stat(filepath.Join(target, fmt.Sprintf("only-%d", i))); err != nil {
			t.Errorf("layer %d not visible: %v", i, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "new"), []byte("w"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "new")); err != nil {
		t.Errorf("write did not land in the scratch layer: %v", err)
	}
	if err := RemoveUnmounted(dir); !errors.Is(err, ErrMounted) {
		t.Errorf("RemoveUnmounted of a mounted tree = %v, want ErrMounted", err)
	}
	if _, err := os.Stat(filepath.Join(lowers[0], "shared")); err != nil {
		t.Fatalf("refused remove still deleted lower files: %v", err)
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Errorf("second unmount must count as done: %v", err)
	}
	if err := RemoveUnmounted(filepath.Join(dir, "upper")); err != nil {
		t.Errorf("remove after unmount: %v", err)
	}
}

func TestMountSingleLayerReadOnly(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	lowers := layerDirs(t, dir, 1, func(int) string { return "app" })
	target := filepath.Join(dir, "merged")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Mount(Layers{Lower: lowers}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = UnmountAll(dir); assertNoMounts(t, dir) })
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("write to a read-only layer: %v", err)
	}
}

// TestMountManyLongLayers needs the relative-path compaction: 70 layers with
// long absolute paths do not fit in one page of mount options; relative, they
// do. 150 do not fit either way, and say so.
func TestMountManyLongLayers(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	long := strings.Repeat("x", 40)
	lowers := layerDirs(t, filepath.Join(dir, "layers", strings.Repeat("p", 60)), 150, func(i int) string { return fmt.Sprintf("%03d-%s", i, long) })
	if err := Mount(Layers{Lower: lowers}, filepath.Join(dir, "nowhere")); err == nil || !strings.Contains(err.Error(), "the kernel takes") {
		t.Errorf("150 layers: %v", err)
	}
	lowers = lowers[:70]
	if n := len(options(Layers{Lower: lowers}, "")); n <= maxMountData {
		t.Fatalf("test needs options over %d bytes, has %d", maxMountData, n)
	}
	target := filepath.Join(dir, "merged")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Mount(Layers{Lower: lowers}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = UnmountAll(dir); assertNoMounts(t, dir) })
	if _, err := os.Stat(filepath.Join(target, "only-69")); err != nil {
		t.Errorf("bottom layer not visible: %v", err)
	}
	wd, _ := os.Getwd()
	if strings.HasPrefix(wd, dir) {
		t.Errorf("the process's working folder moved to %s", wd)
	}
}

func TestMountRejects(t *testing.T) {
	for _, l := range []Layers{{}, {Lower: []string{"/a"}, Upper: "/u"}, {Lower: []string{"/a:b", "/c"}}} {
		if err := Mount(l, "/nonexistent"); err == nil {
			t.Errorf("Mount(%+v) accepted", l)
		}
	}
	if got := commonParent([]string{"/x/a/b/l1", "/x/a/b/l2", "/x/a/c"}); got != "/x/a" {
		t.Errorf("commonParent = %q", got)
	}
}

func TestUnmountAllDeepestFirst(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	outer, inner := filepath.Join(dir, "outer"), filepath.Join(dir, "outer", "inner")
	src := layerDirs(t, dir, 1, func(int) string { return "src" })[0]
	if err := os.Mkdir(outer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mountErr("tmpfs", outer, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Mount(Layers{Lower: []string{src}}, inner); err != nil {
		t.Fatal(err)
	}
	if m, _ := MountsUnder(dir); len(m) != 2 || m[0] != inner {
		t.Fatalf("MountsUnder = %v, want inner first", m)
	}
	if err := UnmountAll(dir); err != nil {
		t.Fatal(err)
	}
	assertNoMounts(t, dir)
}
