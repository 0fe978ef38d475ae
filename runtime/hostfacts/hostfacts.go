// Package hostfacts reads the facts of the host that both the instance
// lifecycle (runtime) and the host checks (runtime/hostcheck) need: the
// kernel's version, executables on a PATH, the capsule's python and its
// version (the .py rule of SPEC §1). It imports specs only.
package hostfacts

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SystemPath is the PATH of a capsule on the `host` layer: only the host's system folders are bound into it,
// so this is where its python3 is looked for, not in the caller's $PATH.
const SystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// UserNSOverlay is the first kernel that mounts OverlayFS inside a user
// namespace (rootless capsules).
var UserNSOverlay = KernelVersion{5, 11}

// KernelVersion is a kernel's MAJOR.MINOR.
type KernelVersion struct{ Major, Minor int }

// Less says whether v is older than w.
func (v KernelVersion) Less(w KernelVersion) bool {
	return v.Major < w.Major || v.Major == w.Major && v.Minor < w.Minor
}

func (v KernelVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// ParseKernel reads MAJOR.MINOR from the start of a release such as "6.1.0-26-amd64" or "6.18.44-fc-v657".
func ParseKernel(release string) (KernelVersion, error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return KernelVersion{}, fmt.Errorf("kernel release %q is not MAJOR.MINOR.PATCH", release)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return KernelVersion{}, fmt.Errorf("kernel release %q: major %q: %w", release, parts[0], err)
	}
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i]
	}
	minor, err := strconv.Atoi(minorDigits)
	if err != nil {
		return KernelVersion{}, fmt.Errorf("kernel release %q: minor %q: %w", release, parts[1], err)
	}
	return KernelVersion{major, minor}, nil
}

// LookPathIn finds an executable regular file name in the colon-separated dirs of pathList.
func LookPathIn(name, pathList string) (string, error) {
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, pathList)
}

// pythonScript prints MAJOR.MINOR.PATCH of the interpreter.
const pythonScript = `import sys;print("%d.%d.%d"%sys.version_info[:3])`

// PythonVersionRunner returns a function that runs bin -c pythonScript with a clean environment (the capsule's
// PATH only), kills it after timeout, and returns what it printed: the MAJOR.MINOR.PATCH of the python at bin.
func PythonVersionRunner(timeout time.Duration) func(bin string) (string, error) {
	return func(bin string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-c", pythonScript)
		cmd.Env = []string{"PATH=" + SystemPath, "LC_ALL=C"}
		cmd.WaitDelay = time.Second // a grandchild holding stdout open must not hang us
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s -c '%s' did not finish within %s", bin, pythonScript, timeout)
		}
		if err != nil {
			return "", fmt.Errorf("%s -c '%s': %w: %s", bin, pythonScript, err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(stdout.String()), nil
	}
}

// ParseVersion reads MAJOR.MINOR[.PATCH] (a patch is required only when needPatch).
func ParseVersion(s string, needPatch bool) ([3]int, error) {
	var v [3]int
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 || needPatch && len(parts) != 3 {
		return v, fmt.Errorf("%q is not a version like 3.10", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("%q is not a version like 3.10", s)
		}
		v[i] = n
	}
	return v, nil
}
