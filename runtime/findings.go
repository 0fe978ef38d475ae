package runtime

// What validate reports, on every OS; the checks of the host itself are in
// hostcheck.go (Linux).

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

// HostOptions says what CheckHost checks the host for.
type HostOptions struct {
	// StateDir is where capsule state lives (TORI_STATE_ROOT); empty means DefaultStateRoot.
	StateDir string
	// Python is the version the manifest wants ("3.10"); empty if it asks none, and then python3 is not checked.
	Python string
	// Directives are the resource directives the manifest sets (CPUQuota, MemoryMax, ...); empty reports all.
	Directives []string
}

// SystemPath is the PATH of a capsule on the `host` layer: only the host's system folders are bound into it,
// so this is where its python3 is looked for, not in the caller's $PATH.
const SystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
