//go:build linux

package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// TestCheckVolume: what the operator allows, and what no one can.
func TestCheckVolume(t *testing.T) {
	base := t.TempDir()
	o := Options{Root: filepath.Join(base, "root"), RunDir: filepath.Join(base, "run"), StateRoot: filepath.Join(base, "state")}
	data := filepath.Join(base, "srv", "data")
	for _, d := range []string{data, filepath.Join(data, "sub"), filepath.Join(base, "ref"), o.StateRoot, filepath.Join(o.Root, "releases")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(o.StateRoot, filepath.Join(base, "srv", "sneaky")); err != nil {
		t.Fatal(err)
	}
	o.Host = &HostConfig{File: "/etc/tori-run/host.yml", Volumes: []AllowedVolume{
		{Path: filepath.Join(base, "srv"), From: "/etc/tori-run/host.yml:2"},
		{Path: filepath.Join(base, "ref"), ReadOnly: true, From: "--allow-volume " + filepath.Join(base, "ref") + ":ro"},
	}}
	m := &specs.Manifest{Name: "cap", Source: "capsule.yml"}
	for _, tc := range []struct {
		host string
		ro   bool
		want string // "" = allowed
	}{
		{data, false, ""},
		{data + "/sub/../sub", false, ""},
		{filepath.Join(base, "ref"), true, ""},
		{filepath.Join(base, "ref"), false, "is allowed read-only only (--allow-volume " + filepath.Join(base, "ref") + ":ro)"},
		{filepath.Join(base, "srv", "sneaky"), false, "(that is " + o.StateRoot + ") is tori-run's state root (TORI_STATE_ROOT)"},
		{filepath.Join(o.StateRoot, "other"), false, "is inside tori-run's own " + o.StateRoot},
		{o.Root, false, "holds tori-run's own " + filepath.Join(o.Root, "releases")},
		{base, false, "holds tori-run's own"},
		{"/", false, "holds tori-run's own"},
		{"/run", false, "holds tori-run's own /run/tori"},
		{o.RunDir + "/containers", false, "is inside tori-run's own " + o.RunDir},
		{filepath.Join(base, "srv", "missing"), false, "does not exist"},
	} {
		v := specs.Volume{Host: tc.host, Capsule: "/data", ReadOnly: tc.ro, Line: 7}
		real, err := CheckVolume(m, v, o)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.host, err)
		case tc.want == "" && real != filepath.Clean(tc.host):
			t.Errorf("%s: bound as %s", tc.host, real)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.host, err, tc.want)
		case tc.want != "":
			var ve *VolumeError
			if !errors.As(err, &ve) || !strings.HasPrefix(err.Error(), "capsule.yml:7: volumes: "+tc.host+":/data:") {
				t.Errorf("%s: error %q does not start with the manifest's line and the volume", tc.host, err)
			}
		}
	}
	o.Host = nil
	_, err := CheckVolume(m, specs.Volume{Host: data, Capsule: "/data", Line: 3}, o)
	if err == nil || !strings.Contains(err.Error(), "--allow-volume "+data) || !strings.Contains(err.Error(), "/etc/tori-run/host.yml:\n  volumes:\n    - path: "+data) {
		t.Errorf("unallowed: %v, want the flag and the host.yml lines", err)
	}
}

func TestLoadHost(t *testing.T) {
	f := filepath.Join(t.TempDir(), "host.yml")
	if err := os.WriteFile(f, []byte("volumes:\n  - path: /srv/a\n    read_only: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := LoadHost(f, []string{"/srv/b", "/srv/c:ro"})
	if err != nil {
		t.Fatal(err)
	}
	want := []AllowedVolume{{Path: "/srv/a", ReadOnly: true, From: f + ":2"}, {Path: "/srv/b", From: "--allow-volume /srv/b"}, {Path: "/srv/c", ReadOnly: true, From: "--allow-volume /srv/c:ro"}}
	if !slices.Equal(h.Volumes, want) {
		t.Errorf("volumes %+v, want %+v", h.Volumes, want)
	}
	var ue *UsageError
	if _, err := LoadHost(f, []string{"srv"}); !errors.As(err, &ue) {
		t.Errorf("a relative --allow-volume: %v, want a usage error", err)
	}
	if _, err := LoadHost(f+".missing", nil); err == nil {
		t.Error("a missing --config file was accepted")
	}
}

func TestCapsuleCaps(t *testing.T) {
	m := &specs.Manifest{Capabilities: specs.Capabilities{Add: []string{"CAP_NET_RAW"}, Drop: []string{"CAP_CHOWN", "CAP_KILL"}}}
	caps, err := capsuleCaps(m)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(caps, "CAP_CHOWN") || slices.Contains(caps, "CAP_KILL") || !slices.Contains(caps, "CAP_NET_RAW") || len(caps) != len(plan.DefaultCaps)-1 {
		t.Errorf("caps = %v", caps)
	}
	caps, _ = capsuleCaps(&specs.Manifest{Capabilities: specs.Capabilities{Drop: []string{"ALL"}, Add: []string{"CAP_KILL"}}})
	if !slices.Equal(caps, []string{"CAP_KILL"}) {
		t.Errorf("drop ALL, add KILL: %v", caps)
	}
	for _, c := range []string{"CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"} {
		if slices.Contains(plan.DefaultCaps, c) {
			t.Errorf("the default set holds %s", c)
		}
	}
}

// TestHostEtc: the allow-list never lets a secret through, and recreates
// links into /usr as links.
func TestHostEtc(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"passwd", "group", "shadow", "gshadow", "shadow-", "sudoers", "machine-id", "hosts", "python3.11/x"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"ssh", "sudoers.d", "security"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../usr/lib/os-release", filepath.Join(dir, "os-release")); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range listEtc(dir) {
		got[e.Name] = e.Link
	}
	for _, secret := range []string{"shadow", "gshadow", "shadow-", "sudoers", "sudoers.d", "ssh", "security", "machine-id"} {
		if _, ok := got[secret]; ok {
			t.Errorf("/etc/%s is in the capsule", secret)
		}
	}
	for _, need := range []string{"passwd", "group", "hosts", "python3.11"} {
		if l, ok := got[need]; !ok || l != "" {
			t.Errorf("/etc/%s: bound %v, link %q", need, ok, l)
		}
	}
	if got["os-release"] != "../usr/lib/os-release" {
		t.Errorf("os-release link = %q", got["os-release"])
	}
}
