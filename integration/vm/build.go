package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// A testPkg is one package whose tests run in the guest.
type testPkg struct {
	ImportPath string
	Short      string // import path without the module prefix, for prefixes and summaries
	Dir        string // source directory on the host
	Binary     string // the static test binary on the host
	Testdata   bool   // Dir has a testdata/ folder, copied into the guest beside the binary
}

// staticFlags build a static binary with cgo (libcontainer's nsexec needs cgo). -s -w only drop the
// symbol table and DWARF: stack traces still have names and lines (from pclntab), and the initramfs is
// about a third smaller.
// tags are added to netgo,osusergo: make test-vm passes its GOTAGS (seccomp), so that the guest's binaries
// are built as make build builds tori-run.
func staticFlags(tags string) []string {
	t := "netgo,osusergo"
	if tags != "" {
		t += "," + tags
	}
	return []string{"-tags", t, "-ldflags"}
}

const staticLdflags = "-s -w -linkmode external -extldflags -static"

func goEnv() []string { return append(os.Environ(), "CGO_ENABLED=1") }

// listPackages expands the package patterns with go list; packages without test files are returned
// separately (reported, not built).
func listPackages(patterns []string) (mod string, pkgs []testPkg, noTests []string, err error) {
	args := append([]string{"list", "-e", "-f",
		"{{.ImportPath}}\t{{.Dir}}\t{{len .TestGoFiles}}\t{{len .XTestGoFiles}}\t{{with .Error}}{{.Err}}{{end}}"},
		patterns...)
	cmd := exec.Command("go", args...)
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", nil, nil, fmt.Errorf("go list %s: %v: %s", strings.Join(patterns, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	module, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		return "", nil, nil, fmt.Errorf("go list -m: %v", err)
	}
	mod = strings.TrimSpace(string(module))
	for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			continue
		}
		short := strings.TrimPrefix(strings.TrimPrefix(f[0], mod), "/")
		if short == "" {
			short = "."
		}
		if f[4] != "" && !strings.Contains(f[4], "no Go files") {
			return "", nil, nil, fmt.Errorf("go list: %s: %s", f[0], f[4])
		}
		if f[2] == "0" && f[3] == "0" {
			noTests = append(noTests, f[0])
			continue
		}
		st, err := os.Stat(filepath.Join(f[1], "testdata"))
		pkgs = append(pkgs, testPkg{ImportPath: f[0], Short: short, Dir: f[1], Testdata: err == nil && st.IsDir()})
	}
	return mod, pkgs, noTests, nil
}

// buildTests builds each package's static test binary into dir.
func buildTests(pkgs []testPkg, dir, tags string) error {
	for i := range pkgs {
		p := &pkgs[i]
		p.Binary = filepath.Join(dir, fmt.Sprintf("%02d.test", i))
		args := append([]string{"test", "-c", "-o", p.Binary}, staticFlags(tags)...)
		args = append(args, staticLdflags, p.ImportPath)
		if err := goRun(args); err != nil {
			return err
		}
		if err := isStatic(p.Binary); err != nil {
			return err
		}
	}
	return nil
}

// buildToriRun builds the static tori-run the guest's tests call through TORI_RUN_BINARY.
func buildToriRun(out, module, extraLdflags, tags string) error {
	ld := staticLdflags
	if extraLdflags != "" {
		ld = extraLdflags + " " + ld
	}
	args := append([]string{"build", "-o", out}, staticFlags(tags)...)
	if err := goRun(append(args, ld, module+"/cmd/tori-run")); err != nil {
		return err
	}
	return isStatic(out)
}

// buildToriInit builds the small capsule init as make build does (pure Go, static, stripped).
func buildToriInit(out, module string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, module+"/cmd/tori-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build cmd/tori-init: %v\n%s", err, b)
	}
	return isStatic(out)
}

func goRun(args []string) error {
	cmd := exec.Command("go", args...)
	cmd.Env = goEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
