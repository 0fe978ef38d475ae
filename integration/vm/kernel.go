package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// A kernel is what the guest boots: Debian's stock kernel and the modules /init loads (overlay and
// whatever it depends on), deps first.
type kernel struct {
	Package string   // Debian package, e.g. linux-image-6.1.0-56-amd64
	Vmlinuz string   // path in the cache
	Modules []string // uncompressed .ko files in the cache, in load order
}

// wantedModules are the modules the guest loads; their dependencies are found from each .ko's modinfo.
var wantedModules = []string{"overlay"}

// defaultCacheDir is where kernels are kept between runs: /var/cache/tori-vm for root (CI), else the
// user's cache directory.
func defaultCacheDir() string {
	if d := os.Getenv("TORI_VM_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/tori-vm"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "tori-vm")
	}
	return filepath.Join(os.TempDir(), "tori-vm-cache")
}

// kernelPackage asks apt which package linux-image-amd64 currently depends on.
func kernelPackage() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %v: %s", err, bytes.TrimSpace(out))
	}
	if p := parseKernelDepends(string(out)); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image package:\n%s", out)
}

func parseKernelDepends(out string) string {
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "Depends:" || f[0] == "|Depends:") && strings.HasPrefix(f[1], "linux-image-") &&
			!strings.HasPrefix(f[1], "<") {
			return f[1]
		}
	}
	return ""
}

// loadCached returns the kernel cached under dir/pkg, if complete.
func loadCached(cache, pkg string) (*kernel, bool) {
	dir := filepath.Join(cache, pkg)
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, false
	}
	k := &kernel{Package: pkg, Vmlinuz: filepath.Join(dir, "vmlinuz")}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, false
	}
	for _, m := range strings.Fields(string(order)) {
		p := filepath.Join(dir, m)
		if _, err := os.Stat(p); err != nil {
			return nil, false
		}
		k.Modules = append(k.Modules, p)
	}
	return k, true
}

// newestCached is the most recently fetched complete kernel in the cache: the fallback when apt cannot
// say which kernel is current (no package lists, offline).
func newestCached(cache string) (*kernel, bool) {
	ents, _ := os.ReadDir(cache)
	var best *kernel
	var bestTime int64
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "linux-image-") {
			continue
		}
		k, ok := loadCached(cache, e.Name())
		if !ok {
			continue
		}
		if st, err := os.Stat(k.Vmlinuz); err == nil && st.ModTime().UnixNano() > bestTime {
			best, bestTime = k, st.ModTime().UnixNano()
		}
	}
	return best, best != nil
}

// getKernel returns the current Debian kernel and modules from the cache, downloading and unpacking the
// package first when it is not there. Only the kernel and the needed modules are kept (a few MB);
// kernels of other versions are removed once a new one is in place.
func getKernel(cache, pkg string, logf func(string, ...any)) (*kernel, error) {
	if pkg == "" {
		var err error
		if pkg, err = kernelPackage(); err != nil && os.Geteuid() == 0 {
			logf("%v; running apt-get update", err)
			if out, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
				logf("apt-get update: %v: %s", uerr, bytes.TrimSpace(out))
			}
			pkg, err = kernelPackage()
		}
		if err != nil {
			if k, ok := newestCached(cache); ok {
				logf("%v; using the cached %s", err, k.Package)
				return k, nil
			}
			return nil, err
		}
	}
	if k, ok := loadCached(cache, pkg); ok {
		return k, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cache, ".fetch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	logf("downloading %s into %s", pkg, cache)
	dl := exec.Command("apt-get", "download", "-q", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %v: %s", pkg, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s: want one .deb, got %v", pkg, debs)
	}
	tree := filepath.Join(tmp, "x")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], tree).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", debs[0], err, bytes.TrimSpace(out))
	}
	stage := filepath.Join(tmp, "stage")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return nil, err
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-*, got %v", pkg, vmlinuz)
	}
	if err := copyFile(filepath.Join(stage, "vmlinuz"), vmlinuz[0], nil); err != nil {
		return nil, err
	}
	moddirs, _ := filepath.Glob(filepath.Join(tree, "lib", "modules", "*", "kernel"))
	if len(moddirs) != 1 {
		return nil, fmt.Errorf("%s: want one lib/modules/*/kernel, got %v", pkg, moddirs)
	}
	mods, err := resolveModules(moddirs[0], wantedModules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkg, err)
	}
	var order []string
	for i, m := range mods {
		name := fmt.Sprintf("%02d-%s.ko", i, moduleName(m))
		if err := copyFile(filepath.Join(stage, name), m, decompressor(m)); err != nil {
			return nil, err
		}
		order = append(order, name)
	}
	if err := os.WriteFile(filepath.Join(stage, "modules.order"), []byte(strings.Join(order, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	dst := filepath.Join(cache, pkg)
	if err := os.Rename(stage, dst); err != nil {
		if k, ok := loadCached(cache, pkg); ok { // a concurrent run got there first
			return k, nil
		}
		return nil, err
	}
	// Other kernels are out of date now; keep the cache to one.
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "linux-image-") && e.Name() != pkg {
			os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
	k, ok := loadCached(cache, pkg)
	if !ok {
		return nil, fmt.Errorf("%s: cache entry %s incomplete", pkg, dst)
	}
	return k, nil
}

// moduleName is a module's name from its file name: overlay.ko.xz -> overlay.
func moduleName(p string) string {
	b := filepath.Base(p)
	return b[:strings.Index(b, ".ko")]
}

func normMod(s string) string { return strings.ReplaceAll(s, "-", "_") }

// resolveModules finds the wanted modules under dir (lib/modules/VER/kernel) with everything they depend
// on, in load order (dependencies first). The package ships no modules.dep (depmod makes it at install),
// so each module's "depends=" is read from its .modinfo section.
func resolveModules(dir string, wanted []string) ([]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files[normMod(moduleName(p))] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = normMod(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		p, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s not found under %s (needed by %v)", name, dir, chain)
		}
		state[name] = 1
		info, err := modinfo(p)
		if err != nil {
			return err
		}
		deps := strings.FieldsFunc(info["depends"], func(r rune) bool { return r == ',' })
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, p)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modinfo reads the key=value pairs of a (possibly compressed) module's .modinfo section.
func modinfo(p string) (map[string]string, error) {
	var buf bytes.Buffer
	if err := decompressTo(&buf, p, decompressor(p)); err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", p)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return parseModinfo(data), nil
}

func parseModinfo(data []byte) map[string]string {
	m := map[string]string{}
	for kv := range bytes.SplitSeq(data, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			if _, seen := m[k]; !seen {
				m[k] = v
			}
		}
	}
	return m
}

// decompressor is the command that decompresses a module to stdout, or nil for plain or gzip'd modules
// (which Go reads itself). Busybox's insmod cannot load compressed modules, so they are stored plain.
func decompressor(p string) []string {
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		return []string{"xz", "-dc", p}
	case strings.HasSuffix(p, ".ko.zst"):
		return []string{"zstd", "-dcq", p}
	}
	return nil
}

func decompressTo(w io.Writer, p string, cmd []string) error {
	if cmd != nil {
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdout = w
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(cmd, " "), err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(p, ".ko.gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		r = gz
	}
	_, err = io.Copy(w, r)
	return err
}

// copyFile copies src to dst, through the decompressor cmd when not nil.
func copyFile(dst, src string, cmd []string) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := decompressTo(out, src, cmd); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// isStatic tells whether the ELF executable p has no program interpreter (is statically linked).
func isStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New(p + " is dynamically linked")
		}
	}
	return nil
}
