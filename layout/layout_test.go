package layout

import "testing"

// TestLayout: every path under the three roots, as SPEC §3 and the docs
// name them; a change here moves files on every host.
func TestLayout(t *testing.T) {
	l := New("/r", "/run/x", "/s")
	i := l.Instance("web-1")
	for got, want := range map[string]string{
		l.Releases():              "/r/releases",
		l.Ref("web", "current"):   "/r/refs/web/current",
		l.CurrentRefs():           "/r/refs/*/current",
		l.Upgrade("web"):          "/r/upgrades/web.json",
		l.InstanceGlob("web"):     "/r/instances/web-*",
		l.InstanceGlob(""):        "/r/instances/*",
		l.Logs("web"):             "/r/logs/web",
		l.ContainerRoot():         "/run/x/containers",
		l.ProbeCache():            "/run/x/cgroup-probe.json",
		l.Socket("web", "ctl"):    "/run/x/sockets/web/ctl.sock",
		l.ControlSocket():         "/run/x/tori.sock",
		l.CapsuleState("web"):     "/s/web",
		i.Dir:                     "/r/instances/web-1",
		i.Record:                  "/r/instances/web-1/instance.json",
		i.InitSocket:              "/r/instances/web-1/run/init.sock",
		i.Supervisor:              "/r/instances/web-1/run/supervisor",
		i.StateSocket:             "/r/instances/web-1/state/state.sock",
		i.AdminSocket:             "/r/instances/web-1/admin/state.sock",
		i.Upper:                   "/r/instances/web-1/scratch/upper",
		i.RootWork:                "/r/instances/web-1/scratch/root-work",
		InstanceAt(i.Dir).Lock:    "/r/instances/web-1/lock",
		New("", "", "").Root:      DefaultRoot,
		New("", "", "").StateRoot: DefaultStateRoot,
		New("", "", "").RunDir:    DefaultRunDir,
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if InstanceAt(i.Dir) != i || i.ID != "web-1" {
		t.Errorf("InstanceAt %+v", InstanceAt(i.Dir))
	}
}
