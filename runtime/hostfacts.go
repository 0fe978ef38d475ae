//go:build linux

package runtime

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

	"github.com/tori-run/tori-run/specs"
)

// Facts of the host that both the instance lifecycle and the host checks
// (runtime/hostcheck) read: kernel versions, executables on a PATH, a
// python's version.

// userNSOverlay: overlay mounts inside user namespaces (rootless capsules).
var userNSOverlay = kernelVersion{5, 11}

type kernelVersion struct{ major, minor int }

func (v kernelVersion) less(w kernelVersion) bool {
	return v.major < w.major || v.major == w.major && v.minor < w.minor
}

func (v kernelVersion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// parseKernel reads MAJOR.MINOR from the start of a release such as "6.1.0-26-amd64" or "6.18.44-fc-v657".
func parseKernel(release string) (kernelVersion, error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return kernelVersion{}, fmt.Errorf("kernel release %q is not MAJOR.MINOR.PATCH", release)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return kernelVersion{}, fmt.Errorf("kernel release %q: major %q: %w", release, parts[0], err)
	}
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i]
	}
	minor, err := strconv.Atoi(minorDigits)
	if err != nil {
		return kernelVersion{}, fmt.Errorf("kernel release %q: minor %q: %w", release, parts[1], err)
	}
	return kernelVersion{major, minor}, nil
}

// lookPathIn finds an executable regular file name in the colon-separated dirs of pathList.
func lookPathIn(name, pathList string) (string, error) {
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

// pythonVersionRunner returns a function that runs bin -c pythonScript with a clean environment (the capsule's
// PATH only), kills it after timeout, and returns what it printed.
func pythonVersionRunner(timeout time.Duration) func(bin string) (string, error) {
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

// parseVersion reads MAJOR.MINOR[.PATCH] (a patch is required only when needPatch).
func parseVersion(s string, needPatch bool) ([3]int, error) {
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

// KernelVersion is a kernel's MAJOR.MINOR.
type KernelVersion = kernelVersion

// Less says whether v is older than w.
func (v kernelVersion) Less(w kernelVersion) bool { return v.less(w) }

// NewKernelVersion is MAJOR.MINOR.
func NewKernelVersion(major, minor int) KernelVersion { return kernelVersion{major, minor} }

// ParseKernel reads MAJOR.MINOR from the start of a kernel release.
func ParseKernel(release string) (KernelVersion, error) { return parseKernel(release) }

// LookPathIn finds an executable regular file name in the colon-separated dirs of pathList.
func LookPathIn(name, pathList string) (string, error) { return lookPathIn(name, pathList) }

// PythonVersionRunner returns a function that prints the MAJOR.MINOR.PATCH of
// the python at bin, run with the capsule's PATH only, within timeout.
func PythonVersionRunner(timeout time.Duration) func(bin string) (string, error) {
	return pythonVersionRunner(timeout)
}

// ParseVersion reads MAJOR.MINOR[.PATCH] (a patch is required only when needPatch).
func ParseVersion(s string, needPatch bool) ([3]int, error) { return parseVersion(s, needPatch) }

// RootlessFindings are validate --host's findings for a non-root user (rootless.go).
func RootlessFindings(kernel KernelVersion, kernelErr error, wanted []string) []Finding {
	return rootlessFindings(kernel, kernelErr, wanted)
}

// CheckVolume resolves volume v of m as a run would on this host, or says
// why it is refused (a *VolumeError for the operator's rules).
func CheckVolume(m *specs.Manifest, v specs.Volume, o Options) (string, error) {
	return checkVolume(m, v, o)
}
