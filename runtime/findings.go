package runtime

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/tori-run/tori-run/specs"
)

// What validate reports, on every OS: the vocabulary of findings that
// runtime/hostcheck gathers (host checks, validate) and that runtime's own
// confinement and rootless checks produce.

// Status is the outcome of one host check.
type Status string

const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Finding is the result of one check, as `tori-run validate` prints it. Host checks set Check, Status,
// Message and Hint; manifest checks also say where (File, Line, Column, Field).
type Finding struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
}

// WorstStatus returns the most severe status among fs: fail over warn over pass (pass for none).
func WorstStatus(fs []Finding) Status {
	worst := StatusPass
	for _, f := range fs {
		switch f.Status {
		case StatusFail:
			return StatusFail
		case StatusWarn:
			worst = StatusWarn
		}
	}
	return worst
}

// Location is where a finding points: file[:line[:column]] and the field,
// as "capsule.yml:12:5: services.web.stop_signal", or "" when nowhere.
func (f Finding) Location() string {
	var b strings.Builder
	b.WriteString(f.File)
	if f.File != "" && f.Line > 0 {
		fmt.Fprintf(&b, ":%d", f.Line)
		if f.Column > 0 {
			fmt.Fprintf(&b, ":%d", f.Column)
		}
	}
	if f.Field != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(f.Field)
	}
	return b.String()
}

// ConfinementFinding says what confines capsule m (its filter and
// capabilities; off Linux only the filter it asks for).
func ConfinementFinding(m *specs.Manifest) Finding { return confinementFinding(m) }

// SeccompSupportFinding says whether this tori-run can apply filters here.
func SeccompSupportFinding() Finding { return seccompSupportFinding() }

// CheckSeccompProfile checks the capsule's own seccomp profile in app.
func CheckSeccompProfile(m *specs.Manifest, app fs.FS) error { return checkSeccompProfile(m, app) }
