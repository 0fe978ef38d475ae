// Package hostconf is what the operator allows capsules on a host (the
// host configuration file and --allow-volume) and the rule every volume is
// checked by before anything is made: a capsule binds only what was
// allowed, never tori-run's own folders, and the path bound is the path
// checked. It also resolves the manifest's user: to the uid and gid the
// services run as.
package hostconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/user"

	"github.com/tori-run/tori-run/specs"
)

// Config is what the operator allows capsules on this host: the host
// configuration file (specs.HostConfig, /etc/tori-run/host.yml) and the
// --allow-volume flags.
type Config struct {
	// File is the configuration file read ("" none), named in messages.
	File string
	// Config is its content; never nil after LoadHost.
	Config *specs.HostConfig
	// Volumes are the host paths capsules may bind, from the file and the
	// flags, in that order.
	Volumes []AllowedVolume
}

// AllowedVolume is one host path capsules may bind, the path and below.
type AllowedVolume struct {
	Path     string
	ReadOnly bool   // only :ro binds of it
	From     string // where it was allowed: "--allow-volume /srv/data" or "host.yml:3"
}

// Load reads the host configuration (file, or the default
// /etc/tori-run/host.yml when file is "": there a missing file allows
// nothing) and adds the --allow-volume PATH[:ro] flags.
func Load(file string, allow []string) (*Config, error) {
	h := &Config{Config: &specs.HostConfig{}}
	explicit := file != ""
	if !explicit {
		file = specs.DefaultHostConfig
	}
	c, err := specs.LoadHost(file)
	switch {
	case err == nil:
		h.File, h.Config = file, c
		for _, v := range c.Volumes {
			h.Volumes = append(h.Volumes, AllowedVolume{Path: v.Path, ReadOnly: v.ReadOnly, From: fmt.Sprintf("%s:%d", file, v.Line)})
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("host configuration %s does not exist (given with --config or TORI_HOST_CONFIG)", file)
	default:
		return nil, err
	}
	for _, a := range allow {
		p, mode, _ := strings.Cut(a, ":")
		if !filepath.IsAbs(p) || (mode != "" && mode != "ro" && mode != "rw") {
			return nil, usageErrorf("--allow-volume %q: expected an absolute host path, optionally followed by :ro (only read-only binds) or :rw", a)
		}
		h.Volumes = append(h.Volumes, AllowedVolume{Path: filepath.Clean(p), ReadOnly: mode == "ro", From: "--allow-volume " + a})
	}
	return h, nil
}

// UsageError is an error in how tori-run was called (exit status 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// A VolumeError is a volume the capsule may not bind; its message names the
// manifest's file:line, the host path, and what would allow it.
type VolumeError struct {
	File   string
	Line   int
	Volume specs.Volume
	Msg    string
}

func (e *VolumeError) Error() string {
	ro := "rw"
	if e.Volume.ReadOnly {
		ro = "ro"
	}
	return fmt.Sprintf("%s:%d: volumes: %s:%s:%s: %s", e.File, e.Line, e.Volume.Host, e.Volume.Capsule, ro, e.Msg)
}

// Rules are what a volume is checked against: the operator's host
// configuration and tori-run's own folders, which no capsule may bind.
type Rules struct {
	Host      *Config
	StateRoot string   // TORI_STATE_ROOT: never bindable, whatever is allowed
	Own       []string // tori-run's folders (layout's ProtectedDirs, the run folder, ...)
}

// protected are the rules' own folders, made real; the host
// configuration file is one of them.
func (o Rules) protected() []string {
	out := slices.Clone(o.Own)
	if o.Host != nil && o.Host.File != "" {
		out = append(out, o.Host.File)
	}
	var real []string
	for _, p := range out {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		real = append(real, RealPath(p))
	}
	return real
}

// under says whether p is dir or inside it (both clean and absolute).
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// RealPath resolves symlinks and ".."; of a path that does not exist, the
// longest existing ancestor is resolved and the rest appended.
func RealPath(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest)
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// CheckVolumes checks each volume of m against what the operator allowed
// and returns them with their host paths resolved (the path bound is the
// path checked).
func CheckVolumes(m *specs.Manifest, r Rules) ([]specs.Volume, error) {
	var out []specs.Volume
	for _, v := range m.Volumes {
		real, err := CheckVolume(m, v, r)
		if err != nil {
			return nil, err
		}
		v.Host = real
		out = append(out, v)
	}
	return out, nil
}

// CheckVolume checks one volume against the rules and returns the host
// path it binds, resolved.
func CheckVolume(m *specs.Manifest, v specs.Volume, o Rules) (string, error) {
	fail := func(format string, args ...any) (string, error) {
		return "", &VolumeError{File: m.Source, Line: v.Line, Volume: v, Msg: fmt.Sprintf(format, args...)}
	}
	abs, err := filepath.Abs(v.Host)
	if err != nil {
		return fail("%v", err)
	}
	real := RealPath(abs)
	shown := v.Host
	if real != abs {
		shown = fmt.Sprintf("%s (that is %s)", v.Host, real)
	}
	if sr := RealPath(absOr(o.StateRoot)); real == sr {
		return fail("the host path %s is tori-run's state root (TORI_STATE_ROOT), which holds every capsule's state, so no flag allows it: keep the state root elsewhere (TORI_STATE_ROOT=/var/lib/tori/state) and allow this folder with --allow-volume %s (docs/SECURITY.md)", shown, real)
	}
	for _, p := range o.protected() {
		switch {
		case under(real, p):
			return fail("the host path %s is inside tori-run's own %s, which no capsule may see (a capsule reaches its state through TORI_STATE_SOCKET), so no flag allows it: bind a folder of its own, such as /srv/%s, which the operator allows with --allow-volume /srv/%s", shown, p, m.Name, m.Name)
		case under(p, real):
			return fail("the host path %s holds tori-run's own %s, which no capsule may see, so no flag allows it: bind a folder of its own, such as /srv/%s, which the operator allows with --allow-volume /srv/%s", shown, p, m.Name, m.Name)
		}
	}
	var allowed *AllowedVolume
	var roOnly *AllowedVolume
	if o.Host != nil {
		for i := range o.Host.Volumes {
			a := &o.Host.Volumes[i]
			if !under(real, RealPath(a.Path)) {
				continue
			}
			if a.ReadOnly && !v.ReadOnly {
				roOnly = a
				continue
			}
			allowed = a
			break
		}
	}
	if allowed == nil {
		if roOnly != nil {
			return fail("the host path %s is allowed read-only only (%s); declare it %s:%s:ro, or allow it read-write with --allow-volume %s", shown, roOnly.From, v.Host, v.Capsule, roOnly.Path)
		}
		return fail("the host path %s is not allowed on this host: the operator allows it with --allow-volume %s (on run, daemon, enable and validate --host; PATH:ro allows only read-only binds), or in %s:\n  volumes:\n    - path: %s",
			shown, real, hostConfigName(o), real)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fail("the host path %s does not exist; create it (mkdir -p %s) or fix volumes: in %s", shown, real, m.Source)
	}
	if !fi.IsDir() {
		return fail("the host path %s is not a folder", shown)
	}
	return real, nil
}

func hostConfigName(o Rules) string {
	if o.Host != nil && o.Host.File != "" {
		return o.Host.File
	}
	return specs.DefaultHostConfig
}

// ResolveUser finds the uid and gid the services run as: uid[:gid] as
// given, a name in the capsule's own /etc/passwd (the top rootfs layer that
// has one) or, on the host layer, the host's, which is what the capsule
// sees.
func ResolveUser(m *specs.Manifest, layers []string) (uint32, uint32, error) {
	if m.User == "" {
		return 0, 0, nil
	}
	passwd, group := "/etc/passwd", "/etc/group"
	if len(layers) > 0 {
		passwd, group = "", ""
		for _, l := range layers {
			if passwd == "" {
				if _, err := os.Stat(filepath.Join(l, "etc/passwd")); err == nil {
					passwd = filepath.Join(l, "etc/passwd")
				}
			}
			if group == "" {
				if _, err := os.Stat(filepath.Join(l, "etc/group")); err == nil {
					group = filepath.Join(l, "etc/group")
				}
			}
		}
	}
	u, err := user.GetExecUserPath(m.User, &user.ExecUser{}, passwd, group)
	if err != nil {
		where := passwd
		if where == "" {
			where = "the capsule's layers (no etc/passwd in them)"
		}
		return 0, 0, fmt.Errorf("%s: user %q: %v (looked up in %s)", m.Source, m.User, err, where)
	}
	return uint32(u.Uid), uint32(u.Gid), nil
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
