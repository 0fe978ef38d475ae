package specs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// IsPythonScript says whether a command's program is a Python file of the
// app (a relative path ending in .py): such a command runs with the
// capsule's Python, so it needs neither an exec bit nor a #! line (zips
// made on Windows carry no Unix modes).
func IsPythonScript(prog string) bool {
	return !path.IsAbs(prog) && strings.HasSuffix(prog, ".py") && len(prog) > len(".py")
}

// CheckApp checks a manifest against the app it will run: the requirements
// file exists and is pinned, and every service's program, when it is a path
// inside the app, exists and is executable — or, for a .py file, is a
// regular file the capsule's Python runs (IsPythonScript). app is the app's
// root folder (os.DirFS of a folder, or a zip.Reader). Problems are returned
// as Errors.
func CheckApp(m *Manifest, app fs.FS) error {
	var errs Errors
	if f := m.Dependencies.PipRequirements; f != "" {
		if _, err := CheckRequirements(app, f); err != nil {
			var re Errors
			if errors.As(err, &re) {
				errs = append(errs, re...)
			} else {
				errs = append(errs, &FieldError{File: f, Msg: err.Error()})
			}
		}
	}
	checked := map[string]bool{}
	for _, s := range m.Services {
		if len(s.Command) == 0 {
			continue
		}
		prog := s.Command[0]
		py := IsPythonScript(prog)
		// A bare name is looked up in PATH inside the capsule; an absolute
		// path lives in a layer. Only app-relative paths can be checked here
		// (and .py files, which are always the app's).
		if path.IsAbs(prog) || (path.Base(prog) == prog && !py) || checked[prog] {
			continue
		}
		checked[prog] = true
		field := "services." + s.Name + ".command"
		info, err := fs.Stat(app, path.Clean(prog))
		switch {
		case err != nil:
			errs = append(errs, &FieldError{File: m.Source, Field: field, Msg: fmt.Sprintf("%s is not in the app; expected a file relative to the app folder", prog)})
		case info.IsDir():
			errs = append(errs, &FieldError{File: m.Source, Field: field, Msg: fmt.Sprintf("%s is a folder; expected an executable file", prog)})
		case py && !info.Mode().IsRegular():
			errs = append(errs, &FieldError{File: m.Source, Field: field, Msg: fmt.Sprintf("%s is not a regular file (mode %s); expected a Python file", prog, info.Mode())})
		case py:
			// Runs as `python3.X prog`: no exec bit needed.
		case info.Mode().Perm()&0o111 == 0:
			errs = append(errs, &FieldError{File: m.Source, Field: field, Msg: fmt.Sprintf("%s is not executable (mode %s); chmod +x it and give it a #! line", prog, info.Mode().Perm())})
		}
	}
	return errs.orNil()
}
