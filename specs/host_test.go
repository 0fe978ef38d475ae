package specs

import (
	"strings"
	"testing"
	"time"
)

func TestParseHost(t *testing.T) {
	c, err := ParseHost(strings.NewReader(`# the operator's word
volumes:
  - path: /srv/data
  - path: /srv/ref/
    read_only: true
state:
  quota: 1G
  event_retention: { count: 100000, age: 720h }
  max_tokens_per_min: 6000
`), "host.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []HostVolume{{Path: "/srv/data", Line: 3}, {Path: "/srv/ref", ReadOnly: true, Line: 4}}
	if len(c.Volumes) != 2 || c.Volumes[0] != want[0] || c.Volumes[1] != want[1] {
		t.Errorf("volumes = %+v, want %+v", c.Volumes, want)
	}
	if c.State.Quota == nil || c.State.Quota.Bytes != 1<<30 || c.State.EventRetention.Count != 100000 ||
		c.State.EventRetention.Age != 720*time.Hour || c.State.MaxTokensPerMin != 6000 {
		t.Errorf("state = %+v", c.State)
	}
	if c, err := ParseHost(strings.NewReader(""), "empty.yml"); err != nil || len(c.Volumes) != 0 {
		t.Errorf("an empty file: %+v, %v; want nothing allowed", c, err)
	}
}

func TestParseHostErrors(t *testing.T) {
	_, err := ParseHost(strings.NewReader(`volumes:
  - path: srv/data
  - read_only: yes
  - path: /a
  - path: /a
state:
  quota: 1g
  max_tokens: 5
  event_retention: { age: 30 }
volums: []
`), "host.yml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`host.yml:2:11: volumes[0].path: "srv/data" is not absolute`,
		`host.yml:3:16: volumes[1].read_only: expected true or false`,
		`host.yml:3:5: volumes[1].path: missing`,
		`host.yml:5:5: volumes[3].path: /a is already listed at line 4`,
		`host.yml:7:10: state.quota: "1g" is not a size`,
		`host.yml:8:3: state.max_tokens: unknown field "max_tokens"`,
		`host.yml:9:27: state.event_retention.age: "30" is not a duration`,
		`host.yml:10:1: volums: unknown field "volums"; did you mean "volumes"?`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}
