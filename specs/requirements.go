package specs

import (
	"bufio"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// Requirement is one pinned line of a pip requirements file.
type Requirement struct {
	Name     string `json:"name"`
	Operator string `json:"operator"` // ==, === or ~=
	Version  string `json:"version"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

var (
	reqRe = lazyRE(`^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[A-Za-z0-9._,\s-]*\])?\s*(.*)$`)
	pinRe = lazyRE(`^(===|==|~=)\s*([A-Za-z0-9][A-Za-z0-9.!+_-]*)$`)
	// Global options that change where pip looks, not what it installs.
	harmlessOptions = map[string]bool{
		"-i": true, "--index-url": true, "--extra-index-url": true, "--no-index": true,
		"-f": true, "--find-links": true, "--trusted-host": true, "--prefer-binary": true,
		"--require-hashes": true, "--only-binary": true, "--no-binary": true, "--pre": true,
	}
)

const pinExpect = "expected name==version or name~=version (optionally with [extras], ; markers and --hash options)"

// CheckRequirements reads the requirements file file inside the app fsys and
// checks that every requirement is pinned with == (or ===) or ~=. Files
// included with -r or -c are followed (inside the app only). It returns the
// requirements, and an Errors naming each offending line.
func CheckRequirements(fsys fs.FS, file string) ([]Requirement, error) {
	c := &reqChecker{fsys: fsys, seen: map[string]bool{}}
	c.file(path.Clean(file), "", 0)
	return c.reqs, c.errs.orNil()
}

type reqChecker struct {
	fsys fs.FS
	seen map[string]bool
	reqs []Requirement
	errs Errors
}

func (c *reqChecker) fail(file string, line int, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (c *reqChecker) file(name, from string, fromLine int) {
	if c.seen[name] {
		return
	}
	c.seen[name] = true
	f, err := c.fsys.Open(name)
	if err != nil {
		where := "the app"
		if from != "" {
			c.fail(from, fromLine, "includes %s, which is not in the app: %v", name, err)
			return
		}
		c.fail(name, 0, "the requirements file is not in %s; expected dependencies.pip_requirements to name a file in the app (%v)", where, err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pending strings.Builder
	lineNo, start := 0, 0
	for sc.Scan() {
		lineNo++
		if pending.Len() == 0 {
			start = lineNo
		}
		raw := sc.Text()
		if strings.HasSuffix(raw, "\\") {
			pending.WriteString(strings.TrimSuffix(raw, "\\"))
			pending.WriteByte(' ')
			continue
		}
		pending.WriteString(raw)
		line := stripComment(pending.String())
		pending.Reset()
		if line != "" {
			c.line(name, start, line)
		}
	}
	if err := sc.Err(); err != nil {
		c.fail(name, lineNo, "reading: %v", err)
	}
}

// stripComment removes a # comment: at the start of a line or after
// whitespace, as pip does.
func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			s = s[:i]
			break
		}
	}
	return strings.TrimSpace(s)
}

func (c *reqChecker) line(file string, n int, line string) {
	fields := strings.Fields(line)
	if strings.HasPrefix(line, "-") {
		opt, arg, _ := strings.Cut(fields[0], "=")
		if arg == "" && len(fields) > 1 {
			arg = fields[1]
		}
		switch {
		case opt == "-r" || opt == "--requirement" || opt == "-c" || opt == "--constraint":
			if arg == "" || path.IsAbs(arg) || strings.HasPrefix(path.Clean(path.Join(path.Dir(file), arg)), "..") {
				c.fail(file, n, "%s %q: expected a file inside the app", opt, arg)
				return
			}
			c.file(path.Join(path.Dir(file), arg), file, n)
		case opt == "-e" || opt == "--editable":
			c.fail(file, n, "%q: an editable install is not a pin; %s", line, pinExpect)
		case harmlessOptions[opt]:
		default:
			c.fail(file, n, "%q: option %s is not supported in a capsule's requirements", line, opt)
		}
		return
	}
	// Per-requirement options (--hash=...) follow the specifier.
	spec := line
	if i := strings.Index(spec, " -"); i >= 0 {
		for _, opt := range strings.Fields(spec[i:]) {
			if strings.HasPrefix(opt, "-") && !strings.HasPrefix(opt, "--hash") && !strings.HasPrefix(opt, "--config-settings") && !strings.HasPrefix(opt, "--global-option") {
				c.fail(file, n, "%q: option %s is not supported after a requirement", line, opt)
				return
			}
		}
		spec = spec[:i]
	}
	spec, _, _ = strings.Cut(spec, ";") // environment markers
	spec = strings.TrimSpace(spec)
	m := reqRe.FindStringSubmatch(spec)
	if m == nil || strings.Contains(spec, "://") || strings.Contains(spec, " @ ") || strings.HasPrefix(m[3], "@") {
		c.fail(file, n, "%q is not a pinned requirement (a URL or path is not a pin); %s", spec, pinExpect)
		return
	}
	rest := strings.TrimSpace(m[3])
	if rest == "" {
		c.fail(file, n, "%q is not pinned: no version; %s", spec, pinExpect)
		return
	}
	if strings.Contains(rest, ",") {
		c.fail(file, n, "%q is not pinned: a range of versions; %s", spec, pinExpect)
		return
	}
	p := pinRe.FindStringSubmatch(rest)
	switch {
	case p == nil && strings.Contains(rest, "*"):
		c.fail(file, n, "%q is not pinned: a wildcard version; %s", spec, pinExpect)
		return
	case p == nil:
		c.fail(file, n, "%q is not pinned: %q allows more than one version; %s", spec, rest, pinExpect)
		return
	case p[1] == "~=" && !strings.Contains(p[2], "."):
		c.fail(file, n, "%q: ~= needs at least two version parts (e.g. ~=1.4); %s", spec, pinExpect)
		return
	}
	c.reqs = append(c.reqs, Requirement{Name: m[1], Operator: p[1], Version: p[2], File: file, Line: n})
}
