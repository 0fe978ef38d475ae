package specs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// LoadSlice reads a systemd .slice file.
func LoadSlice(file string) (Resources, error) {
	f, err := os.Open(file)
	if err != nil {
		return Resources{}, err
	}
	defer f.Close()
	return ParseSlice(f, file)
}

// ParseSlice reads the [Slice] section of a systemd slice unit into
// Resources, with the same directive syntax as a manifest's resources:.
// [Unit] and [Install] sections are accepted and ignored, as systemd reads
// them for other purposes; any other section, and any directive tori-run
// does not enforce, is an error with its line, so that a limit is never
// silently dropped.
//
// systemd syntax followed: '#' and ';' start comment lines, a trailing
// backslash continues a line, a later assignment of a directive overrides an
// earlier one, and an empty assignment (MemoryMax=) resets it.
func ParseSlice(r io.Reader, name string) (Resources, error) {
	var (
		res     Resources
		errs    Errors
		section string
		sawHead bool
		lineNo  int
		pending string
		start   int
	)
	fail := func(line int, field, format string, args ...any) {
		errs = append(errs, &FieldError{File: name, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(io.LimitReader(r, MaxManifestSize))
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		if pending == "" {
			start = lineNo
		}
		if strings.HasSuffix(raw, "\\") {
			pending += strings.TrimSuffix(raw, "\\") + " "
			continue
		}
		line := strings.TrimSpace(pending + raw)
		pending = ""
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				fail(start, "", "%q is not a section header; expected [Slice]", line)
				continue
			}
			section = line[1 : len(line)-1]
			if section == "Slice" {
				sawHead = true
			} else if section != "Unit" && section != "Install" {
				fail(start, section, "unknown section [%s]; expected [Slice] (with [Unit] and [Install] ignored)", section)
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			fail(start, "", "%q is not an assignment; expected Directive=value", line)
			continue
		}
		if section == "" {
			fail(start, key, "assignment outside a section; expected it under [Slice]")
			continue
		}
		if section != "Slice" {
			continue
		}
		set, known := directiveSetters[key]
		if !known {
			fail(start, key, "unknown or unsupported directive; tori-run enforces %s", strings.Join(DirectiveNames, ", "))
			continue
		}
		if val == "" {
			resetDirective(&res, key)
			continue
		}
		if err := set(&res, val); err != nil {
			fail(start, key, "%v", err)
		}
	}
	if err := sc.Err(); err != nil {
		fail(lineNo, "", "reading: %v", err)
	}
	if !sawHead && len(errs) == 0 {
		fail(0, "", "no [Slice] section; expected a systemd slice unit with [Slice] and directives such as MemoryMax=16G")
	}
	return res, errs.orNil()
}

func resetDirective(r *Resources, key string) {
	switch key {
	case "CPUQuota":
		r.CPUQuota = nil
	case "CPUWeight":
		r.CPUWeight = nil
	case "MemoryMax":
		r.MemoryMax = nil
	case "MemoryHigh":
		r.MemoryHigh = nil
	case "IOWeight":
		r.IOWeight = nil
	case "TasksMax":
		r.TasksMax = nil
	case "AllowedCPUs":
		r.AllowedCPUs = nil
	}
}
