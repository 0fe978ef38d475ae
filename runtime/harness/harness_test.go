//go:build linux

package harness

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/specs"
)

// hostFor allows exactly what the harness binds, on top of the caller's
// host configuration, which it leaves as it was.
func TestHostFor(t *testing.T) {
	own := []runtime.AllowedVolume{{Path: "/etc/op", From: "host.yml"}}
	for _, tc := range []struct {
		name    string
		allow   []string
		volumes []Volume
		want    []runtime.AllowedVolume
		err     string
	}{
		{name: "none", want: own},
		{name: "allowed, modes", allow: []string{"/srv/a/:ro", "/srv/b", "/srv/c:rw"}, want: append(own[:1:1],
			runtime.AllowedVolume{Path: "/srv/a", ReadOnly: true, From: "the harness's allowed volume /srv/a/:ro"},
			runtime.AllowedVolume{Path: "/srv/b", From: "the harness's allowed volume /srv/b"},
			runtime.AllowedVolume{Path: "/srv/c", From: "the harness's allowed volume /srv/c:rw"})},
		{name: "own volumes, in their mode", volumes: []Volume{{Host: "/data", Capsule: "/mnt", ReadOnly: true}}, want: append(own[:1:1],
			runtime.AllowedVolume{Path: "/data", ReadOnly: true, From: "the harness's own volume /data"})},
		{name: "relative", allow: []string{"srv"}, err: `allowed volume "srv": expected an absolute host path`},
		{name: "bad mode", allow: []string{"/srv:rx"}, err: `allowed volume "/srv:rx": expected an absolute host path, optionally followed by :ro or :rw`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Room to grow: an append that shared it would show below.
			host := &runtime.HostConfig{Config: &specs.HostConfig{}, Volumes: append(make([]runtime.AllowedVolume, 0, 8), own...)}
			o := Options{Options: runtime.Options{Host: host}, AllowVolumes: tc.allow, Volumes: tc.volumes}
			h, err := hostFor(o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h.Volumes, tc.want) {
				t.Errorf("volumes = %+v\nwant      %+v", h.Volumes, tc.want)
			}
			// A second start from the same configuration changes neither
			// the caller's nor the first start's.
			if _, err := hostFor(Options{Options: o.Options, AllowVolumes: []string{"/other", "/other2", "/other3"}}); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(host.Volumes, own) || !reflect.DeepEqual(h.Volumes, tc.want) {
				t.Errorf("a later start changed an earlier one's allowed volumes: caller's %+v, first start's %+v", host.Volumes, h.Volumes)
			}
		})
	}
	if h, err := hostFor(Options{}); err != nil || h.Config == nil || len(h.Volumes) != 0 {
		t.Errorf("no host configuration: %+v, %v; want an empty one", h, err)
	}
}
