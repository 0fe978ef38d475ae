package hostcheck

import (
	"archive/zip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/specs"
)

// ReportSchema is the version of the JSON form of Report; it changes only
// when a field changes meaning or goes away.
const ReportSchema = 1

// Target kinds that Validate recognises.
const (
	KindManifest = "manifest" // a capsule.yml
	KindAppDir   = "app-dir"  // a folder holding the app (and usually capsule.yml)
	KindZip      = "zip"      // a zip of the app
	KindRelease  = "release"  // an installed release folder
	KindArchive  = "archive"  // a capsule archive (tori-run build's output)
	KindHost     = "host"     // no target: the host alone
)

// ValidateOptions say what to check besides the target itself.
type ValidateOptions struct {
	// Manifest pairs a manifest with an app folder or zip that holds none.
	Manifest string
	// Slice is a systemd .slice file whose limits override resources:.
	Slice string
	// Host adds the host checks (kernel, overlay, cgroups, state dir, and
	// the interpreter the manifest asks for).
	Host     bool
	StateDir string
	// Runtime names tori-run's folders (Root, RunDir) and, in Runtime.Host,
	// what the operator allows (--allow-volume, the host configuration):
	// with Host, each volume is checked against them as run would.
	Runtime runtime.Options
}

// CapsuleInfo summarises a valid manifest.
type CapsuleInfo struct {
	Name     string   `json:"name"`
	Version  string   `json:"version"`
	Services []string `json:"services"`
}

// Report is what validate found. Its JSON form is stable (ReportSchema).
type Report struct {
	Schema   int          `json:"schema"`
	Target   string       `json:"target,omitempty"`
	Kind     string       `json:"kind"`
	Capsule  *CapsuleInfo `json:"capsule,omitempty"`
	Findings []Finding    `json:"findings"`
}

// Count returns how many findings have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == s {
			n++
		}
	}
	return n
}

// Failed says whether any finding failed.
func (r *Report) Failed() bool { return r.Count(StatusFail) > 0 }

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// addErr adds err as failed findings: one per FieldError when it holds
// specs.Errors, else one finding.
func (r *Report) addErr(check string, err error, hint string) {
	var errs specs.Errors
	if !errors.As(err, &errs) {
		r.add(Finding{Check: check, Status: StatusFail, Message: err.Error(), Hint: hint})
		return
	}
	for _, e := range errs {
		r.add(Finding{Check: check, Status: StatusFail, Message: e.Msg, Hint: hint,
			File: e.File, Line: e.Line, Column: e.Column, Field: e.Field})
	}
}

// Validate checks target — a manifest, an app folder, a zip or an installed
// release; "" for the host alone — and, with o.Host, the host.
func Validate(target string, o ValidateOptions) *Report {
	r := &Report{Schema: ReportSchema, Target: target}
	m := r.validateTarget(target, o)
	if m != nil {
		r.Capsule = &CapsuleInfo{Name: m.Name, Version: m.Version}
		for _, s := range m.Services {
			r.Capsule.Services = append(r.Capsule.Services, s.Name)
		}
	}
	if o.Host {
		ho := HostOptions{StateDir: o.StateDir}
		if m != nil {
			ho.Python = m.Dependencies.Python
			ho.Directives = m.Resources.Directives()
			for _, s := range m.Services {
				ho.Directives = append(ho.Directives, s.Resources.Directives()...)
			}
		}
		r.Findings = append(r.Findings, CheckHost(ho)...)
		r.add(runtime.SeccompSupportFinding())
		if m != nil {
			r.checkVolumesOnHost(m, o)
		}
	}
	return r
}

func (r *Report) validateTarget(target string, o ValidateOptions) *specs.Manifest {
	if target == "" {
		r.Kind = KindHost
		if o.Manifest != "" {
			return r.checkManifest(o.Manifest, o.Slice, nil)
		}
		return nil
	}
	info, err := os.Stat(target)
	if err != nil {
		r.Kind = KindManifest
		r.add(Finding{Check: "target", Status: StatusFail, Message: err.Error(),
			Hint: "give a capsule.yml, an app folder, an app zip or an installed release folder"})
		return nil
	}
	switch {
	case info.IsDir():
		return r.checkDir(target, o)
	case strings.HasSuffix(strings.ToLower(target), ".zip"):
		return r.checkZip(target, o)
	case release.IsArchiveName(target):
		return r.checkArchive(target, o)
	default:
		dir := filepath.Dir(target)
		if _, err := os.Stat(filepath.Join(dir, "tori", "metadata.json")); err == nil && filepath.Base(target) == "capsule.yml" {
			return r.checkDir(dir, o) // an installed release's manifest
		}
		r.Kind = KindManifest
		// The manifest's folder is the app (as run and build --from-dir
		// take it): check it exactly as build would.
		return r.checkManifestWithSource(target, o.Slice, release.BuildOptions{FromDir: filepath.Dir(target), Manifest: target})
	}
}

func (r *Report) checkDir(dir string, o ValidateOptions) *specs.Manifest {
	app := os.DirFS(dir)
	r.Kind = KindAppDir
	if _, err := fs.Stat(app, "tori/metadata.json"); err == nil {
		// An installed release: capsule.yml beside app/.
		r.Kind = KindRelease
		sub, _ := fs.Sub(app, "app")
		return r.checkManifestWithApp(filepath.Join(dir, "capsule.yml"), o.Slice, sub)
	}
	manifest := o.Manifest
	if manifest == "" {
		manifest = filepath.Join(dir, "capsule.yml")
	}
	return r.checkManifestWithSource(manifest, o.Slice, release.BuildOptions{FromDir: dir, Manifest: manifest})
}

func (r *Report) checkZip(file string, o ValidateOptions) *specs.Manifest {
	r.Kind = KindZip
	zr, err := zip.OpenReader(file)
	if err != nil {
		r.add(Finding{Check: "zip", Status: StatusFail, Message: fmt.Sprintf("%s: %v", file, err), Hint: "give a zip archive of the app"})
		return nil
	}
	defer zr.Close()
	app := appRoot(&zr.Reader)
	if o.Manifest != "" {
		return r.checkManifestWithSource(o.Manifest, o.Slice, release.BuildOptions{FromZip: file, Manifest: o.Manifest})
	}
	f, err := app.Open("capsule.yml")
	if err != nil {
		r.add(Finding{Check: "manifest", Status: StatusFail, Message: fmt.Sprintf("%s holds no capsule.yml at its top", file),
			Hint: "pass the manifest with --manifest capsule.yml"})
		return nil
	}
	defer f.Close()
	name := file + "!/capsule.yml"
	m, err := specs.Parse(f, name)
	if err != nil {
		r.addErr("manifest", err, "")
		return nil
	}
	r.manifestOK(m, o.Slice)
	r.checkSource(m, release.BuildOptions{FromZip: file, Manifest: name})
	return m
}

// checkArchive checks the manifest a capsule archive carries and what its
// metadata says; the digest and every file are verified by install.
func (r *Report) checkArchive(file string, o ValidateOptions) *specs.Manifest {
	r.Kind = KindArchive
	manifest, meta, err := release.ReadManifest(file)
	if err != nil {
		r.add(Finding{Check: "archive", Status: StatusFail, Message: err.Error(), Hint: "give an archive made by tori-run build"})
		return nil
	}
	m, err := specs.Parse(strings.NewReader(string(manifest)), file+"!/capsule.yml")
	if err != nil {
		r.addErr("manifest", err, "")
		return nil
	}
	r.manifestOK(m, o.Slice)
	sha := runtime.ShowBuildSHA(meta.BuildSHA)
	r.add(Finding{Check: "archive", Status: StatusPass, File: file,
		Message: fmt.Sprintf("%d files, content %s, build SHA %s, built by tori-run %s; install verifies the digest and every file",
			len(meta.Files), meta.ContentDigest, sha, meta.ToolVersion)})
	return m
}

// appRoot returns the app inside a zip: its top, or the single folder that
// holds everything (as zips made by "zip -r app.zip app/" are).
func appRoot(zr *zip.Reader) fs.FS {
	top := ""
	for _, f := range zr.File {
		first, _, _ := strings.Cut(strings.TrimPrefix(f.Name, "./"), "/")
		if !strings.Contains(f.Name, "/") {
			return zr // a file at the top
		}
		if top != "" && first != top {
			return zr
		}
		top = first
	}
	if top == "" {
		return zr
	}
	sub, err := fs.Sub(zr, top)
	if err != nil {
		return zr
	}
	return sub
}

func (r *Report) checkManifestWithApp(manifest, slice string, app fs.FS) *specs.Manifest {
	m, err := specs.Load(manifest)
	if err != nil {
		r.addErr("manifest", err, manifestHint(err))
		return nil
	}
	r.manifestOK(m, slice)
	r.checkApp(m, app)
	return m
}

// checkManifestWithSource checks a manifest, then the app of o exactly as
// tori-run build would take it (release.AppFS): what build refuses,
// validate reports, whichever path it is given.
func (r *Report) checkManifestWithSource(manifest, slice string, o release.BuildOptions) *specs.Manifest {
	m, err := specs.Load(manifest)
	if err != nil {
		r.addErr("manifest", err, manifestHint(err))
		return nil
	}
	r.manifestOK(m, slice)
	r.checkSource(m, o)
	return m
}

func (r *Report) checkSource(m *specs.Manifest, o release.BuildOptions) {
	app, closer, err := release.AppFS(o)
	if err != nil {
		r.addErr("app", err, "tori-run build refuses this app for the same reason")
		return
	}
	defer closer.Close()
	n := len(r.Findings)
	r.checkApp(m, app)
	if r.Kind == KindManifest {
		for i := n; i < len(r.Findings); i++ {
			if f := &r.Findings[i]; f.Status == StatusFail && f.Hint == "" && strings.Contains(f.Message, "is not in the app") {
				f.Hint = "the folder holding " + filepath.Base(m.Source) + " is taken as the app; for an app in a zip: tori-run validate --manifest " + m.Source + " APP.zip"
			}
		}
	}
}

// checkManifest checks a manifest file; when dir holds its requirements
// file, the pins are checked too.
func (r *Report) checkManifest(manifest, slice string, dir fs.FS) *specs.Manifest {
	m, err := specs.Load(manifest)
	if err != nil {
		r.addErr("manifest", err, manifestHint(err))
		return nil
	}
	r.manifestOK(m, slice)
	req := m.Dependencies.PipRequirements
	switch {
	case req == "":
	case dir == nil:
	default:
		if _, err := fs.Stat(dir, req); err != nil {
			r.add(Finding{Check: "requirements", Status: StatusWarn,
				Message: fmt.Sprintf("%s is not next to %s, so its pins were not checked", req, manifest),
				Hint:    "validate the app folder or zip to check the pins"})
			return m
		}
		r.checkRequirements(m, dir)
	}
	return m
}

func (r *Report) manifestOK(m *specs.Manifest, slice string) {
	names := make([]string, len(m.Services))
	for i, s := range m.Services {
		names[i] = s.Name
	}
	r.add(Finding{Check: "manifest", Status: StatusPass, File: m.Source,
		Message: fmt.Sprintf("%s %s: services %s; layers %s; network %s", m.Name, m.Version,
			strings.Join(names, ", "), strings.Join(m.Layers, ", "), m.Network)})
	r.add(runtime.ConfinementFinding(m))
	if slice != "" {
		over, err := specs.LoadSlice(slice)
		if err != nil {
			r.addErr("slice", err, "fix the slice file, or leave out --slice to use the manifest's resources")
			return
		}
		m.Resources = m.Resources.Override(over)
		r.add(Finding{Check: "slice", Status: StatusPass, File: slice,
			Message: "limits: " + describeResources(m.Resources) + " (the slice overrides resources: directive by directive)"})
	} else if len(m.Resources.Directives()) > 0 {
		r.add(Finding{Check: "resources", Status: StatusPass, File: m.Source, Message: "limits: " + describeResources(m.Resources)})
	}
}

func (r *Report) checkApp(m *specs.Manifest, app fs.FS) {
	if err := specs.CheckApp(m, app); err != nil {
		r.addErr("app", err, "")
		return
	}
	if m.Seccomp != "" && m.Seccomp != specs.SeccompUnconfined {
		if err := runtime.CheckSeccompProfile(m, app); err != nil {
			r.add(Finding{Check: "seccomp", Status: StatusFail, File: m.Source, Field: "seccomp", Message: err.Error(),
				Hint: "give a profile in moby's JSON format (github.com/moby/profiles/seccomp default.json is one), or seccomp: unconfined"})
			return
		}
	}
	if m.Dependencies.PipRequirements != "" {
		r.checkRequirements(m, app)
	}
	r.add(Finding{Check: "app", Status: StatusPass, Message: "every service's program is in the app and executable (.py files run with the capsule's Python)"})
}

func (r *Report) checkRequirements(m *specs.Manifest, app fs.FS) {
	reqs, err := specs.CheckRequirements(app, m.Dependencies.PipRequirements)
	if err != nil {
		r.addErr("requirements", err, "pin every requirement with == or ~=")
		return
	}
	r.add(Finding{Check: "requirements", Status: StatusPass, File: path.Clean(m.Dependencies.PipRequirements),
		Message: fmt.Sprintf("%s: %d requirements, all pinned with == or ~=", m.Dependencies.PipRequirements, len(reqs))})
}

func describeResources(res specs.Resources) string {
	var parts []string
	add := func(name, v string) { parts = append(parts, name+"="+v) }
	if res.CPUQuota != nil {
		add("CPUQuota", fmt.Sprintf("%g%%", float64(*res.CPUQuota)))
	}
	if res.CPUWeight != nil {
		add("CPUWeight", fmt.Sprint(*res.CPUWeight))
	}
	if res.MemoryMax != nil {
		add("MemoryMax", res.MemoryMax.String())
	}
	if res.MemoryHigh != nil {
		add("MemoryHigh", res.MemoryHigh.String())
	}
	if res.IOWeight != nil {
		add("IOWeight", fmt.Sprint(*res.IOWeight))
	}
	if res.TasksMax != nil {
		add("TasksMax", res.TasksMax.String())
	}
	if res.AllowedCPUs != nil {
		add("AllowedCPUs", res.AllowedCPUs.String())
	}
	return strings.Join(parts, " ")
}

func manifestHint(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "give the path of a capsule.yml, or an app folder that holds one"
	}
	return ""
}
