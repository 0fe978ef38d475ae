//go:build linux

package hostfacts

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/specs"
)

// The .py rule (SPEC §1): a command whose program is a .py file of the app
// runs as `PYTHON FILE ARGS...`, with the interpreter the capsule sees:
// python3.X when the manifest declares dependencies.python "3.X" and the
// capsule has one, else python3 when its version satisfies the declaration
// (same major, same or newer minor), else an error naming what was found.
// No exec bit or #! line is needed, so apps zipped on Windows run as made.

// pythonChoice is the interpreter a capsule's .py commands run with.
type pythonChoice struct {
	Path    string // as the capsule sees it, e.g. /usr/bin/python3.11
	Version string // "3.11.2" when it was asked, else "3.11" from its name
	Exact   bool   // it is the python3.X the manifest declares
}

// capsuleView looks files up as a capsule sees them: on the host layer the
// host's system folders; with rootfs layers, those layers top first.
type capsuleView struct {
	layers   []string // host folders of the rootfs layers, top first; nil = the host
	pathList string   // the capsule's PATH (SystemPath)
	// version asks a host interpreter for its MAJOR.MINOR.PATCH; only the
	// host layer's interpreters can be run from the host.
	version func(bin string) (string, error)
}

func hostView() capsuleView {
	return capsuleView{pathList: SystemPath, version: PythonVersionRunner(pythonVersionTimeout)}
}

func layersView(layers []string) capsuleView {
	if len(layers) == 0 {
		return hostView()
	}
	return capsuleView{layers: layers, pathList: SystemPath}
}

// pythonName matches python3 or python3.X, the names a version shows in.
var pythonName = regexp.MustCompile(`^python(\d+)\.(\d+)$`)

// lookup finds name in the capsule's PATH: the path the capsule sees, and
// the file's name once symlinks are followed (python3 -> python3.11).
func (v capsuleView) lookup(name string) (capsulePath, target string, ok bool) {
	for _, dir := range filepath.SplitList(v.pathList) {
		p := path.Join(dir, name)
		if v.layers == nil {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				continue
			}
			if st, err := os.Stat(real); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
				return p, filepath.Base(real), true
			}
			continue
		}
		for _, layer := range v.layers {
			// Symlinks resolve inside the layer, as the capsule sees them.
			real, err := securejoin.SecureJoin(layer, p)
			if err != nil {
				continue
			}
			st, err := os.Stat(real)
			if err != nil {
				continue
			}
			if st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
				return p, filepath.Base(real), true
			}
		}
	}
	return "", "", false
}

// findPython picks the interpreter for a manifest that declares want
// ("3.10"; "" = any python3).
func (v capsuleView) findPython(want string) (pythonChoice, error) {
	var wmaj, wmin int
	if want != "" {
		w, err := ParseVersion(want, false)
		if err != nil {
			return pythonChoice{}, fmt.Errorf("dependencies.python: %w", err)
		}
		wmaj, wmin = w[0], w[1]
		exact := fmt.Sprintf("python%d.%d", wmaj, wmin)
		if p, _, ok := v.lookup(exact); ok {
			return pythonChoice{Path: p, Version: fmt.Sprintf("%d.%d", wmaj, wmin), Exact: true}, nil
		}
	}
	where := "the host's system folders (" + v.pathList + ")"
	if v.layers != nil {
		where = "the capsule's layers (" + v.pathList + ")"
	}
	declared := "the capsule declares python " + want
	if want == "" {
		declared = "the capsule runs a .py command"
	}
	p, target, ok := v.lookup("python3")
	if !ok {
		if want != "" {
			return pythonChoice{}, fmt.Errorf("%s, but %s hold neither python%s nor python3", declared, where, want)
		}
		return pythonChoice{}, fmt.Errorf("%s, but %s hold no python3", declared, where)
	}
	var have [3]int
	ver := ""
	switch {
	case v.version != nil:
		out, err := v.version(p)
		if err != nil {
			return pythonChoice{}, fmt.Errorf("%s; cannot tell the version of %s: %w", declared, p, err)
		}
		if have, err = ParseVersion(out, true); err != nil {
			return pythonChoice{}, fmt.Errorf("%s; %s printed a version tori-run cannot read: %w", declared, p, err)
		}
		ver = out
	default:
		mm := pythonName.FindStringSubmatch(target)
		if mm == nil {
			return pythonChoice{}, fmt.Errorf("%s; the layers' %s (%s) does not say its version in its name, and a layer's interpreter cannot be asked from the host; add a python%s to the layer", declared, p, target, cmpOr(want, "3.X"))
		}
		have[0], _ = strconv.Atoi(mm[1])
		have[1], _ = strconv.Atoi(mm[2])
		ver = fmt.Sprintf("%d.%d", have[0], have[1])
	}
	switch {
	case want == "" && have[0] == 3:
	case want == "":
		return pythonChoice{}, fmt.Errorf("%s, but %s is python %s, not python 3", declared, p, ver)
	case have[0] != wmaj || have[1] < wmin:
		return pythonChoice{}, fmt.Errorf("%s, but %s hold no python%s and their python3 (%s) is %s, which is older or another major version; install python%s or declare the version the app needs",
			declared, where, want, p, ver, want)
	}
	return pythonChoice{Path: p, Version: ver, Exact: want != "" && have[0] == wmaj && have[1] == wmin}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// errNoPython marks a capsule whose .py commands have no interpreter.
var errNoPython = errors.New("no python for the capsule's .py commands")

// applyPython rewrites every service command whose program is a .py file
// of the app into `PYTHON FILE ARGS...` (SPEC §1) and returns the choice;
// a manifest without .py commands is left as it is (zero choice).
func applyPython(m *specs.Manifest, v capsuleView) (pythonChoice, error) {
	need := false
	for _, s := range m.Services {
		if len(s.Command) > 0 && specs.IsPythonScript(s.Command[0]) {
			need = true
		}
	}
	if !need {
		return pythonChoice{}, nil
	}
	c, err := v.findPython(m.Dependencies.Python)
	if err != nil {
		return c, fmt.Errorf("%s: %w: %w", m.Source, errNoPython, err)
	}
	for i := range m.Services {
		s := &m.Services[i]
		if len(s.Command) > 0 && specs.IsPythonScript(s.Command[0]) {
			s.Command = append([]string{c.Path, strings.TrimPrefix(s.Command[0], "./")}, s.Command[1:]...)
		}
	}
	return c, nil
}

// pythonVersionTimeout bounds asking an interpreter for its version.
const pythonVersionTimeout = 5 * time.Second

// PreparePython applies the .py rule to a resolved manifest and says on log
// (runtime's CapsuleLogger) which interpreter was picked: a warning when it
// is not the declared python3.X. layers are the host folders of the
// capsule's rootfs layers, top first (none: the host layer).
func PreparePython(m *specs.Manifest, layers []string, log zerolog.Logger) error {
	c, err := applyPython(m, layersView(layers))
	if err != nil {
		return err
	}
	if c.Path != "" {
		ev := log.Debug()
		if !c.Exact && m.Dependencies.Python != "" {
			ev = log.Warn()
		}
		ev.Str("python", c.Path).Str("python_version", c.Version).
			Str("declared", m.Dependencies.Python).Msg("interpreter for the capsule's .py commands")
	}
	return nil
}
