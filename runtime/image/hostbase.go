package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"

	"github.com/tori-run/tori-run/specs"
)

// The minimal base of a capsule on layers: [host]: what its commands need
// from the host and nothing else.
//
//   - each program a service's command or exec probe names (a bare name is
//     looked up in the capsule's PATH on the host, a relative path is the
//     app's own file), and the interpreter of a #! script in the app
//     (#!/usr/bin/env X brings env and X);
//   - for each ELF file in the base, its interpreter (ld.so) and the closure
//     of its DT_NEEDED libraries, looked up as ld.so does in the system
//     folders;
//   - for a Python interpreter (a program named python*, or dependencies.python),
//     its standard library /usr/lib/pythonX.Y without __pycache__, tests, IDLE,
//     Tk, ensurepip and the static libpython of config-*; site-packages and
//     Debian's dist-packages are not included (give --base for more);
//   - every symlink on the way, as a symlink (merged-/usr's /bin -> usr/bin);
//   - /etc/passwd and /etc/group with root and the manifest's user;
//     /tmp (1777), /root, /run, /var/lib/tori.
//
// Anything a command starts that is not named (a program a shell script
// runs, a library loaded with dlopen) is not found: use --base then.

// capsulePATH is the PATH services see (runtime's capsulePath).
const capsulePATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hostBase collects host files into a layer. host is the host's root ("/"
// but for tests).
type hostBase struct {
	host  string
	l     *layer
	seen  map[string]bool // host paths already added
	elves []string        // ELF files whose libraries are still to be found
	libs  []string        // library search folders
}

func newHostBase(host string) *hostBase {
	b := &hostBase{host: host, l: newLayer(), seen: map[string]bool{}}
	b.libs = libraryDirs(host)
	return b
}

// libraryDirs are the folders ld.so searches without an ld.so.cache: the
// multiarch folders first, then ld.so.conf.d's, then the classic ones.
func libraryDirs(host string) []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "386": "i386-linux-gnu",
		"arm": "arm-linux-gnueabihf", "riscv64": "riscv64-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu"}[goruntime.GOARCH]
	var dirs []string
	if triplet != "" {
		dirs = append(dirs, "/lib/"+triplet, "/usr/lib/"+triplet, "/usr/local/lib/"+triplet)
	}
	confs, _ := filepath.Glob(filepath.Join(host, "etc/ld.so.conf.d/*.conf"))
	slices.Sort(confs)
	for _, c := range confs {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "/") && !slices.Contains(dirs, line) {
				dirs = append(dirs, line)
			}
		}
	}
	for _, d := range []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"} {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (b *hostBase) hostPath(p string) string { return filepath.Join(b.host, p) }

// add adds the host path p (absolute) and every symlink on the way to it.
// It returns the path p resolves to on the host.
func (b *hostBase) add(p string) (string, error) {
	return b.addDepth(path.Clean(p), 0)
}

func (b *hostBase) addDepth(p string, depth int) (string, error) {
	if depth > 40 {
		return "", fmt.Errorf("%s: too many levels of symlinks", p)
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := path.Join(cur, part)
		fi, err := os.Lstat(b.hostPath(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(b.hostPath(next))
			if err != nil {
				return "", err
			}
			b.l.symlink(next, t)
			if !path.IsAbs(t) {
				t = path.Join(cur, t)
			}
			rest := append([]string{t}, parts[i+1:]...)
			return b.addDepth(path.Join(rest...), depth+1)
		}
		if i < len(parts)-1 {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s: %s is not a folder", p, next)
			}
			b.l.dir(next, int64(fi.Mode().Perm()))
			cur = next
			continue
		}
		switch {
		case fi.IsDir():
			b.l.dir(next, int64(fi.Mode().Perm()))
		case fi.Mode().IsRegular():
			if !b.seen[next] {
				b.seen[next] = true
				b.l.file(next, int64(fi.Mode().Perm()), b.hostPath(next))
				if isELF(b.hostPath(next)) {
					b.elves = append(b.elves, next)
				}
			}
		default:
			return "", fmt.Errorf("%s is not a regular file, folder or symlink", next)
		}
		return next, nil
	}
	return cur, nil
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = f.ReadAt(magic[:], 0)
	return err == nil && string(magic[:]) == elf.ELFMAG
}

// closeLibraries adds the interpreter and needed libraries of every ELF
// file added so far, and theirs, until nothing new is needed.
func (b *hostBase) closeLibraries() error {
	for len(b.elves) > 0 {
		p := b.elves[0]
		b.elves = b.elves[1:]
		interp, needed, err := elfDeps(b.hostPath(p))
		if err != nil {
			return fmt.Errorf("%s: reading its ELF headers: %w", p, err)
		}
		if interp != "" {
			if _, err := b.add(interp); err != nil {
				return fmt.Errorf("%s: its ELF interpreter: %w", p, err)
			}
		}
		for _, lib := range needed {
			if err := b.addLibrary(p, lib); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *hostBase) addLibrary(from, lib string) error {
	if strings.Contains(lib, "/") {
		_, err := b.add(lib)
		return err
	}
	for _, d := range b.libs {
		cand := path.Join(d, lib)
		if fi, err := os.Stat(b.hostPath(cand)); err == nil && fi.Mode().IsRegular() {
			_, err := b.add(cand)
			return err
		}
	}
	return fmt.Errorf("%s needs %s, which is in none of %s", from, lib, strings.Join(b.libs, ", "))
}

// elfDeps reads an ELF file's interpreter and DT_NEEDED entries.
func elfDeps(p string) (string, []string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	interp := ""
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			buf := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(buf, 0); err != nil {
				return "", nil, err
			}
			interp = string(bytes.TrimRight(buf, "\x00"))
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		// A file without a dynamic section has no libraries to import.
		if f.Section(".dynamic") != nil {
			return "", nil, err
		}
	}
	return interp, needed, nil
}

// IsStatic reports whether the ELF file at p needs no interpreter and no
// shared library: what can run in any image.
func IsStatic(p string) (bool, error) {
	interp, needed, err := elfDeps(p)
	if err != nil {
		return false, err
	}
	return interp == "" && len(needed) == 0, nil
}

var pythonName = regexp.MustCompile(`^python(\d+(\.\d+)?)?$`)

// program adds what running argv needs: the program (from the PATH, the
// app, or an absolute path) and a script's interpreter. where names the
// manifest field for errors.
func (b *hostBase) program(argv []string, appDir, where string) error {
	if len(argv) == 0 {
		return nil
	}
	prog := argv[0]
	var hostFile string
	switch {
	case strings.HasPrefix(prog, "/app/"):
		return b.script(filepath.Join(appDir, strings.TrimPrefix(prog, "/app/")), where)
	case !strings.HasPrefix(prog, "/") && strings.Contains(prog, "/"):
		return b.script(filepath.Join(appDir, prog), where)
	case strings.HasPrefix(prog, "/"):
		hostFile = prog
	default:
		p, err := b.lookPath(prog)
		if err != nil {
			return fmt.Errorf("%s: program %q is not in the capsule's PATH on this host (%s); the minimal base holds only host programs: install it, or give --base IMAGE-LAYOUT", where, prog, capsulePATH)
		}
		hostFile = p
	}
	real, err := b.add(hostFile)
	if err != nil {
		return fmt.Errorf("%s: program %s: %w", where, hostFile, err)
	}
	if pythonName.MatchString(path.Base(prog)) || pythonName.MatchString(path.Base(real)) {
		if err := b.pythonStdlib(real); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if isShell(real) {
		b.shellScript(argv[1:], appDir, where)
	}
	if path.Base(real) == "env" {
		// env [-i] [NAME=VALUE]... PROGRAM ARGS: PROGRAM too.
		for i, a := range argv[1:] {
			if !strings.HasPrefix(a, "-") && !strings.Contains(a, "=") {
				return b.program(argv[1+i:], appDir, where)
			}
		}
	}
	if !isELF(b.hostPath(real)) {
		return b.interpreterOf(b.hostPath(real), where)
	}
	return nil
}

var shellNames = regexp.MustCompile(`^(sh|dash|bash|ash|ksh|zsh|busybox)$`)

func isShell(p string) bool { return shellNames.MatchString(path.Base(p)) }

// shellScript adds, from the arguments of a shell (sh -c 'SCRIPT'), every
// word that names a program in the capsule's PATH: a best effort, since a
// shell script's commands are not known until it runs. A word that names
// nothing on the host is left alone.
func (b *hostBase) shellScript(args []string, appDir, where string) {
	script := ""
	for i, a := range args {
		if a == "-c" && i+1 < len(args) {
			script = args[i+1]
		}
	}
	if script == "" && len(args) > 0 && appDir != "" && !strings.HasPrefix(args[0], "-") {
		// sh script.sh: the script is the app's.
		f := args[0]
		if !filepath.IsAbs(f) {
			f = filepath.Join(appDir, f)
		} else if rest, ok := strings.CutPrefix(f, "/app/"); ok {
			f = filepath.Join(appDir, rest)
		}
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Size() <= 1<<20 {
			if data, err := os.ReadFile(f); err == nil {
				script = string(data)
			}
		}
	}
	b.shellWords(script, where)
}

var shellWord = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._+-]*$`)

func (b *hostBase) shellWords(script, where string) {
	words := strings.FieldsFunc(script, func(r rune) bool {
		return strings.ContainsRune(" \t\n;|&()<>`$\"'{}!=", r)
	})
	seen := map[string]bool{}
	for _, w := range words {
		if seen[w] || !shellWord.MatchString(w) {
			continue
		}
		seen[w] = true
		if p, err := b.lookPath(w); err == nil && !b.seen[p] {
			_ = b.program([]string{w}, "", where+" (named in a shell script)")
		}
	}
}

func (b *hostBase) lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(capsulePATH) {
		p := path.Join(dir, name)
		fi, err := os.Stat(b.hostPath(p))
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fs.ErrNotExist
}

// script adds the interpreter of an app file that starts with #!.
func (b *hostBase) script(file, where string) error {
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if isELF(file) {
		// The app's own binary: its libraries come from the host.
		interp, needed, err := elfDeps(file)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", where, file, err)
		}
		if interp != "" {
			if _, err := b.add(interp); err != nil {
				return fmt.Errorf("%s: ELF interpreter of %s: %w", where, file, err)
			}
		}
		for _, lib := range needed {
			if err := b.addLibrary(file, lib); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		return nil
	}
	return b.interpreterOf(file, where)
}

// interpreterOf reads a #! line and adds its interpreter (and with
// /usr/bin/env, the program env runs).
func (b *hostBase) interpreterOf(file, where string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	line, _ := bufio.NewReader(f).ReadString('\n')
	f.Close()
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return nil
	}
	words := strings.Fields(rest)
	if len(words) == 0 {
		return fmt.Errorf("%s: %s: an empty #! line", where, file)
	}
	if isShell(words[0]) || (path.Base(words[0]) == "env" && len(words) > 1 && isShell(words[1])) {
		if b2, err := os.ReadFile(file); err == nil && len(b2) <= 1<<20 {
			defer b.shellWords(string(b2), where+" ("+filepath.Base(file)+")")
		}
	}
	argv := words[:1]
	if path.Base(words[0]) == "env" {
		if err := b.program(words[:1], "", where); err != nil {
			return err
		}
		args := words[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "-") {
			args = args[1:] // env -S and friends
		}
		if len(args) == 0 {
			return nil
		}
		argv = args[:1]
	}
	return b.program(argv, "", where+" (#! of "+filepath.Base(file)+")")
}

// pythonStdlib adds the standard library of the interpreter at real (a
// host path such as /usr/bin/python3.11).
func (b *hostBase) pythonStdlib(real string) error {
	name := path.Base(real)
	if !strings.Contains(name, ".") {
		return nil // python3 that is not a link to python3.X: nothing to guess
	}
	prefix := path.Dir(path.Dir(real)) // /usr
	lib := path.Join(prefix, "lib", name)
	if _, err := os.Stat(b.hostPath(lib)); err != nil {
		return fmt.Errorf("the standard library of %s is not at %s: %w", real, lib, err)
	}
	if _, err := b.add(lib); err != nil {
		return err
	}
	skip := func(rel string, d fs.DirEntry) bool {
		base := path.Base(rel)
		if d.IsDir() && (base == "__pycache__" || base == "site-packages" || base == "dist-packages") {
			return true
		}
		top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
		return slices.Contains([]string{"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}, top) ||
			strings.HasPrefix(top, "config-")
	}
	if err := b.l.tree(b.hostPath(lib), lib, skip); err != nil {
		return err
	}
	// Extension modules (lib-dynload/*.so) bring their libraries.
	for p, e := range b.l.entries {
		if e.typ != tar.TypeReg || !strings.HasPrefix("/"+p, lib+"/") || !strings.HasSuffix(p, ".so") || b.seen["/"+p] {
			continue
		}
		b.seen["/"+p] = true
		b.elves = append(b.elves, "/"+p)
	}
	slices.Sort(b.elves)
	return nil
}

// addEtc writes /etc/passwd and /etc/group: root, and the manifest's
// user as the host knows it.
func (b *hostBase) addEtc(user string) {
	passwd := []string{"root:x:0:0:root:/root:/bin/sh"}
	group := []string{"root:x:0:"}
	name, _, _ := strings.Cut(user, ":")
	if name != "" && name != "root" && !isNumber(name) {
		if line := findLine(b.hostPath("/etc/passwd"), name); line != "" {
			passwd = append(passwd, line)
			f := strings.Split(line, ":")
			if len(f) > 3 {
				if g := findField(b.hostPath("/etc/group"), 2, f[3]); g != "" {
					group = append(group, g)
				}
			}
		}
	}
	b.l.bytes("etc/passwd", 0o644, []byte(strings.Join(passwd, "\n")+"\n"))
	b.l.bytes("etc/group", 0o644, []byte(strings.Join(group, "\n")+"\n"))
}

func isNumber(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func findLine(file, name string) string { return findField(file, 0, name) }

func findField(file string, field int, value string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) > field && f[field] == value {
			return line
		}
	}
	return ""
}

// HostBase builds the minimal base layer for manifest m whose app is at
// appDir, from the host root host.
func hostBaseLayer(m *specs.Manifest, appDir, host string) (*layer, error) {
	b := newHostBase(host)
	// merged-/usr: keep the host's top-level links, so /bin/sh works.
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "lib32", "libx32"} {
		if fi, err := os.Lstat(b.hostPath("/" + d)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			if t, err := os.Readlink(b.hostPath("/" + d)); err == nil {
				b.l.symlink(d, t)
			}
		}
	}
	for _, s := range m.Services {
		where := fmt.Sprintf("%s: services.%s.command", m.Source, s.Name)
		if err := b.program(s.Command, appDir, where); err != nil {
			return nil, err
		}
		for _, p := range []struct {
			probe *specs.Probe
			field string
		}{{s.Ready, "ready"}, {s.Health, "health"}} {
			if p.probe != nil && len(p.probe.Exec) > 0 {
				if err := b.program(p.probe.Exec, appDir, fmt.Sprintf("%s: services.%s.%s.exec", m.Source, s.Name, p.field)); err != nil {
					return nil, err
				}
			}
		}
	}
	if m.Dependencies.Python != "" && !b.hasPython() {
		if err := b.program([]string{"python3"}, appDir, m.Source+": dependencies.python"); err != nil {
			return nil, err
		}
	}
	if err := b.closeLibraries(); err != nil {
		return nil, err
	}
	b.addEtc(m.User)
	b.l.dir("tmp", 0o1777)
	b.l.dir("root", 0o700)
	b.l.dir("run", 0o755)
	return b.l, nil
}

func (b *hostBase) hasPython() bool {
	for p := range b.seen {
		if pythonName.MatchString(path.Base(p)) {
			return true
		}
	}
	return false
}
