//go:build linux

package hostfacts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/specs"
)

// fakeBin makes an executable file (or a symlink to target) at dir/name.
func fakeBin(t *testing.T, dir, name, target string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if target != "" {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindPythonOnHost(t *testing.T) {
	for _, tt := range []struct {
		name, want string
		bins       map[string]string // name -> symlink target ("" = a file)
		version    string            // what python3 says
		path, err  string
	}{
		{name: "exact python3.X first", want: "3.10", bins: map[string]string{"python3.10": "", "python3": "python3.11", "python3.11": ""}, version: "3.11.2", path: "python3.10"},
		{name: "newer python3 satisfies", want: "3.10", bins: map[string]string{"python3": "python3.11", "python3.11": ""}, version: "3.11.2", path: "python3"},
		{name: "older python3 does not", want: "3.12", bins: map[string]string{"python3": ""}, version: "3.11.2", err: "is 3.11.2, which is older"},
		{name: "no python at all", want: "3.10", bins: map[string]string{}, err: "hold neither python3.10 nor python3"},
		{name: "no declaration takes python3", want: "", bins: map[string]string{"python3": ""}, version: "3.9.2", path: "python3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, target := range tt.bins {
				fakeBin(t, dir, n, target)
			}
			v := capsuleView{pathList: filepath.Join(dir, "none") + ":" + dir,
				version: func(string) (string, error) { return tt.version, nil }}
			c, err := v.findPython(tt.want)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("findPython(%q) = %+v, %v; want an error with %q", tt.want, c, err, tt.err)
				}
				return
			}
			if err != nil || c.Path != filepath.Join(dir, tt.path) {
				t.Fatalf("findPython(%q) = %+v, %v; want %s", tt.want, c, err, tt.path)
			}
		})
	}
}

func TestFindPythonInLayers(t *testing.T) {
	top, base := t.TempDir(), t.TempDir()
	// The base layer has python3 -> python3.11 (absolute, resolved inside
	// the layer, not on the host); the top layer has nothing of it.
	fakeBin(t, filepath.Join(base, "usr/bin"), "python3.11", "")
	fakeBin(t, filepath.Join(base, "usr/bin"), "python3", "/usr/bin/python3.11")
	if err := os.MkdirAll(filepath.Join(top, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	v := layersView([]string{top, base})
	c, err := v.findPython("3.10")
	if err != nil || c.Path != "/usr/bin/python3" || c.Version != "3.11" {
		t.Fatalf("findPython = %+v, %v; want /usr/bin/python3 (3.11)", c, err)
	}
	if _, err := v.findPython("3.12"); err == nil || !strings.Contains(err.Error(), "is 3.11") {
		t.Fatalf("3.12 from a 3.11 layer: %v", err)
	}
	c, err = v.findPython("3.11")
	if err != nil || c.Path != "/usr/bin/python3.11" || !c.Exact {
		t.Fatalf("findPython(3.11) = %+v, %v", c, err)
	}
}

func TestApplyPython(t *testing.T) {
	m, err := specs.Load("../../specs/testdata/good/seed-capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fakeBin(t, dir, "python3.10", "")
	v := capsuleView{pathList: dir}
	if _, err := applyPython(m, v); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Services {
		want := filepath.Join(dir, "python3.10") + " python/core/start_true_metacognition.py"
		if got := strings.Join(s.Command, " "); got != want {
			t.Errorf("service %s runs %q; want %q", s.Name, got, want)
		}
	}
	m2, _ := specs.Load("../../specs/testdata/good/seed-capsule.yml")
	_, err = applyPython(m2, capsuleView{pathList: t.TempDir()})
	if !errors.Is(err, errNoPython) || !strings.Contains(err.Error(), "seed-capsule.yml") {
		t.Errorf("no python: %v; want errNoPython naming the manifest", err)
	}
}
