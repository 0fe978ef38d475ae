package runtime

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// Log field names. Every line about a capsule's work carries FieldCapsule,
// FieldRelease and FieldBuildSHA (see CapsuleLogger); lines about one
// service add FieldService and FieldPID.
const (
	FieldCapsule  = "capsule"
	FieldRelease  = "release"
	FieldBuildSHA = "build_sha"
	FieldService  = "service"
	FieldPID      = "pid"
)

// NewLogger makes the process logger: JSON lines, or readable console
// output when format is "console", or "auto" and w is a terminal.
func NewLogger(w *os.File, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: expected debug, info, warn or error", level)
	}
	var out io.Writer = w
	switch format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !term.IsTerminal(int(w.Fd()))}
	case "auto":
		if term.IsTerminal(int(w.Fd())) {
			out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: expected auto, console or json", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

// BuildSHAAbsent is what logs, metrics, status and version show for a
// release that records no build SHA (an archive built from a zip without
// --build-sha): never an empty string.
const BuildSHAAbsent = "none"

// ShowBuildSHA returns sha, or BuildSHAAbsent when there is none.
func ShowBuildSHA(sha string) string {
	if sha == "" {
		return BuildSHAAbsent
	}
	return sha
}

// CapsuleLogger returns l with the fields that identify a capsule's work.
// A release without a build SHA logs build_sha=BuildSHAAbsent.
func CapsuleLogger(l zerolog.Logger, capsule, release, buildSHA string) zerolog.Logger {
	return l.With().Str(FieldCapsule, capsule).Str(FieldRelease, release).Str(FieldBuildSHA, ShowBuildSHA(buildSHA)).Logger()
}
