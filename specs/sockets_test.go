package specs

import (
	"strings"
	"testing"
	"time"
)

func TestSocketsAndUpdate(t *testing.T) {
	m, err := Parse(strings.NewReader(`name: web
version: "1.0.0"
services:
  web: {command: /bin/web}
  admin: {command: /bin/admin}
sockets:
  http: { listen: "tcp://127.0.0.1:8080", service: web }
  v6: { listen: "tcp6://[::1]:8081" }
  ctl: { listen: "unix:///run/ctl.sock", service: [web, admin] }
update: { min_healthy_time: 2s, healthy_deadline: 1m }
`), "capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{Name: "http", Network: "tcp", Address: "127.0.0.1:8080", Services: []string{"web"}},
		{Name: "v6", Network: "tcp6", Address: "[::1]:8081"},
		{Name: "ctl", Network: "unix", Address: "/run/ctl.sock", Services: []string{"web", "admin"}},
	}
	if len(m.Sockets) != len(want) {
		t.Fatalf("sockets = %+v", m.Sockets)
	}
	for i, w := range want {
		g := m.Sockets[i]
		if g.Name != w.Name || g.Network != w.Network || g.Address != w.Address || strings.Join(g.Services, ",") != strings.Join(w.Services, ",") {
			t.Errorf("socket %d = %+v, want %+v", i, g, w)
		}
	}
	if !m.Sockets[1].For("admin") || m.Sockets[0].For("admin") {
		t.Error("For: service: default all, else only those named")
	}
	if m.Update != (Update{MinHealthyTime: 2 * time.Second, HealthyDeadline: time.Minute}) {
		t.Errorf("update = %+v", m.Update)
	}
	m, err = Parse(strings.NewReader("name: web\nversion: \"1.0.0\"\nservices: [web]\nentrypoint: /bin/web\n"), "capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	if m.Update != DefaultUpdate() {
		t.Errorf("default update = %+v", m.Update)
	}
}

func TestSocketErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`sockets: {a: {listen: "tcp://127.0.0.1"}}`, "capsule.yml:6:23: sockets.a.listen:"},
		{`sockets: {a: {listen: "udp://127.0.0.1:53"}}`, `scheme "udp" is not a socket network`},
		{`sockets: {a: {listen: "tcp://example.com:80"}}`, "is not an IP address"},
		{`sockets: {a: {listen: "tcp://[::1]:80"}}`, "use tcp6://"},
		{`sockets: {a: {listen: "tcp6://127.0.0.1:80"}}`, "use tcp:// for it"},
		{`sockets: {a: {listen: "tcp://127.0.0.1:70000"}}`, "not a number from 0 to 65535"},
		{`sockets: {a: {listen: "unix://run/x.sock"}}`, "absolute path"},
		{`sockets: {a: {listen: "unix:///run/tori/x.sock"}}`, "reserved by tori-run"},
		{"sockets:\n  a: {listen: \"tcp://127.0.0.1:80\"}\n  b: {listen: \"tcp://127.0.0.1:80\"}", `capsule.yml:8:15: sockets.b.listen: tcp://127.0.0.1:80 is already declared by socket "a"`},
		{"sockets:\n  a: {listen: \"tcp://127.0.0.1:80\"}\n  a: {listen: \"tcp://127.0.0.1:81\"}", "capsule.yml:8:3: sockets.a: duplicate key"},
		{`sockets: {a: {listen: "tcp://127.0.0.1:80", service: nope}}`, `capsule.yml:6:54: sockets.a.service: names "nope", which is not a service`},
		{`sockets: {a: {service: web}}`, "sockets.a.listen: missing"},
		{`sockets: {a: {listen: "tcp://127.0.0.1:80", port: 1}}`, `unknown field "port"`},
		{`update: {min_healthy_time: 10m}`, "update.healthy_deadline: 5m0s is not longer than min_healthy_time 10m0s"},
		{`update: {min_healthy: 1s}`, `unknown field "min_healthy"`},
		{`update: {healthy_deadline: soon}`, "update.healthy_deadline"},
		{`env: {LISTEN_FDS: "3"}`, "set by tori-run"},
	} {
		_, err := Parse(strings.NewReader("name: web\nversion: \"1.0.0\"\nentrypoint: /bin/web\nservices:\n  web: {}\n"+tc.body+"\n"), "capsule.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.body, err, tc.want)
		}
	}
}
