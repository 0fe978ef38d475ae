package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

type cpioRecord struct {
	name  string
	mode  uint32
	rdev  [2]uint32
	nlink uint32
	data  string
}

// readCpio parses a newc archive the way the kernel does, checking alignment as it goes.
func readCpio(t *testing.T, b []byte) []cpioRecord {
	t.Helper()
	var recs []cpioRecord
	off := 0
	hex := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		namesize, size := int(hex(11)), int(hex(6))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		r := cpioRecord{name: name, mode: hex(1), nlink: hex(4), rdev: [2]uint32{hex(9), hex(10)},
			data: string(b[dataOff : dataOff+size])}
		off = align(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return recs
		}
		recs = append(recs, r)
	}
}

func TestArchive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("ELF..."), 0o755); err != nil {
		t.Fatal(err)
	}
	td := filepath.Join(dir, "testdata")
	if err := os.MkdirAll(filepath.Join(td, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(td, "sub", "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := newArchive()
	a.file("/usr/local/bin/tori-run", 0o755, src)
	a.symlink("bin/sh", "/bin/busybox")
	a.chardev("dev/console", 0o600, 5, 1)
	a.bytes("init", 0o755, []byte("#!/bin/sh\n"))
	a.dir("tmp", 0o1777)
	if err := a.tree("/t/00/testdata", td); err != nil {
		t.Fatal(err)
	}
	for _, compress := range []bool{false, true} {
		var buf bytes.Buffer
		if err := a.write(&buf, compress); err != nil {
			t.Fatal(err)
		}
		raw := buf.Bytes()
		if compress {
			zr, err := gzip.NewReader(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		recs := readCpio(t, raw)
		seen := map[string]cpioRecord{}
		for _, r := range recs {
			if dir := filepath.Dir(r.name); dir != "." {
				if p, ok := seen[dir]; !ok || p.mode&0o170000 != sIFDIR {
					t.Errorf("%s comes before its directory %s", r.name, dir)
				}
			}
			seen[r.name] = r
		}
		for name, want := range map[string]cpioRecord{
			"usr/local/bin/tori-run":  {mode: sIFREG | 0o755, nlink: 1, data: "ELF..."},
			"bin/sh":                  {mode: sIFLNK | 0o777, nlink: 1, data: "/bin/busybox"},
			"dev/console":             {mode: sIFCHR | 0o600, nlink: 1, rdev: [2]uint32{5, 1}},
			"init":                    {mode: sIFREG | 0o755, nlink: 1, data: "#!/bin/sh\n"},
			"tmp":                     {mode: sIFDIR | 0o1777, nlink: 2},
			"usr/local":               {mode: sIFDIR | 0o755, nlink: 2},
			"t/00/testdata/sub/a.txt": {mode: sIFREG | 0o644, nlink: 1, data: "hello"},
		} {
			got, ok := seen[name]
			want.name = name
			if !ok || got != want {
				t.Errorf("compress=%v %s = %+v, want %+v", compress, name, got, want)
			}
		}
	}
}

func TestParseKernelDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
	if got := parseKernelDepends(out); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("got %q", got)
	}
	if got := parseKernelDepends("linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n"); got != "" {
		t.Errorf("a virtual package was taken: %q", got)
	}
}

func TestParseModinfo(t *testing.T) {
	m := parseModinfo([]byte("license=GPL\x00depends=\x00name=overlay\x00\x00vermagic=6.1.0-56-amd64 SMP\x00"))
	if m["name"] != "overlay" || m["depends"] != "" || m["vermagic"] != "6.1.0-56-amd64 SMP" {
		t.Errorf("got %v", m)
	}
	if _, ok := m["depends"]; !ok {
		t.Error("empty depends= lost")
	}
	if got := moduleName("/x/kernel/fs/overlayfs/overlay.ko.xz"); got != "overlay" {
		t.Errorf("moduleName = %q", got)
	}
}

func TestInitScript(t *testing.T) {
	p := &guestPlan{Marker: "@@tori-vm:abc@@", TestTimeout: 18 * time.Minute, Run: "Test'X|Y",
		Pkgs: []testPkg{{ImportPath: "example.com/m/cgroups"}, {ImportPath: "example.com/m/integration/vm"}}}
	s := initScript(p)
	for _, want := range []string{
		"exec switch_root /newroot /init stage2",
		"mount -t cgroup2 cgroup2 /sys/fs/cgroup",
		">/sys/fs/cgroup/cgroup.subtree_control",
		"export TORI_VM_GUEST=1 TORI_RUN_BINARY=/usr/local/bin/tori-run",
		"(cd /t/00 && ./cgroups.test -test.v -test.count=1 -test.timeout=18m0s -test.run='Test'\\''X|Y'); echo \"$M exit 0 $?\"",
		"(cd /t/01 && ./vm.test ",
		"echo 1 >/proc/sys/kernel/printk",
		"poweroff -f",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("init script lacks %q:\n%s", want, s)
		}
	}
}

func TestConsole(t *testing.T) {
	pkgs := []testPkg{
		{ImportPath: "m/a", Short: "a"}, {ImportPath: "m/b", Short: "b"}, {ImportPath: "m/c", Short: "c"},
	}
	var out bytes.Buffer
	c := newConsole("@@M@@", pkgs, &out)
	for _, l := range []string{
		"[    0.1] early kernel line\r",
		"@@M@@ boot 3.2s; cgroup2 controllers for children: cpu memory",
		"@@M@@ start 0",
		"=== RUN   TestX",
		"--- PASS: TestX (0.00s)",
		"@@M@@ exit 0 0",
		"@@M@@ start 1",
		"no newline at the end@@M@@ exit 1 1",
		"@@M@@ start 2",
		"panic: boom",
	} {
		c.line(l)
	}
	for _, want := range []string{
		"vm | [    0.1] early kernel line\n",
		"vm a | === RUN   TestX\n",
		"vm b | no newline at the end\n",
		"vm c | panic: boom\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console output lacks %q:\n%s", want, out.String())
		}
	}
	var sum bytes.Buffer
	if c.summary(&sum, []string{"m/d"}, "the guest did not finish within 1m0s (QEMU killed)") {
		t.Error("summary passed with a failing and an unfinished package")
	}
	for _, want := range []string{"ok  \tm/a\t", "FAIL\tm/b\t", "(guest; exit status 1)", "FAIL\tm/c (guest; did not finish: the guest did not finish within 1m0s",
		"?   \tm/d\t[no test files]"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}

	c = newConsole("@@M@@", pkgs[:1], io.Discard)
	for _, l := range []string{"@@M@@ boot 1s", "@@M@@ start 0", "@@M@@ exit 0 0", "@@M@@ done 5s"} {
		c.line(l)
	}
	if !c.summary(io.Discard, nil, "") {
		t.Error("summary failed though every package passed")
	}
	c = newConsole("@@M@@", pkgs[:1], io.Discard)
	for _, l := range []string{"@@M@@ boot 1s", "@@M@@ start 0", "@@M@@ exit 0 0"} {
		c.line(l)
	}
	if c.summary(io.Discard, nil, "") {
		t.Error("summary passed without the done marker")
	}
}
