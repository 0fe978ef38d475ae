package specs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSeedManifestAccepted(t *testing.T) {
	m, err := Load("testdata/good/seed-capsule.yml")
	if err != nil {
		t.Fatalf("the seed's manifest must be accepted as written:\n%v", err)
	}
	if m.Name != "tori-metacognitive" || m.Version != "2.1.0" {
		t.Errorf("name/version = %q/%q", m.Name, m.Version)
	}
	if len(m.Services) != 2 || m.Services[0].Name != "tori-metacog" || m.Services[1].Name != "tori-observer" {
		t.Fatalf("services = %+v", m.Services)
	}
	for _, s := range m.Services {
		if got := strings.Join(s.Command, " "); got != "python/core/start_true_metacognition.py" {
			t.Errorf("%s: command = %q, want the entrypoint", s.Name, got)
		}
		if s.Restart != RestartOnFailure || s.StopSignal.Name != "SIGTERM" || s.StopTimeout != 10*time.Second {
			t.Errorf("%s: defaults not applied: %+v", s.Name, s)
		}
	}
	if m.Settings.MaxTokensPerMin != 200 {
		t.Errorf("MaxTokensPerMin = %d", m.Settings.MaxTokensPerMin)
	}
	if len(m.Volumes) != 1 || m.Volumes[0] != (Volume{Host: "/opt/tori/state", Capsule: "/data", Line: 16}) {
		t.Errorf("volumes = %+v", m.Volumes)
	}
	if m.Dependencies != (Dependencies{Python: "3.10", PipRequirements: "requirements_nodb.txt"}) {
		t.Errorf("dependencies = %+v", m.Dependencies)
	}
	if len(m.Layers) != 1 || m.Layers[0] != LayerHost || m.Network != NetworkHost {
		t.Errorf("layers/network defaults = %v/%v", m.Layers, m.Network)
	}
}

func TestFullForm(t *testing.T) {
	m, err := Load("testdata/good/full.yml")
	if err != nil {
		t.Fatal(err)
	}
	mc := m.Service("tori-metacog")
	if mc == nil {
		t.Fatal("no tori-metacog")
	}
	want := []string{"python3", "python/core/start_true_metacognition.py", "--role", "meta cog"}
	if strings.Join(mc.Command, "|") != strings.Join(want, "|") {
		t.Errorf("command = %q, want %q", mc.Command, want)
	}
	if mc.StopSignal.Num != 2 || mc.Restart != RestartAlways || mc.Backoff.ResetAfter != time.Minute {
		t.Errorf("service fields: %+v", mc)
	}
	if mc.Ready == nil || mc.Ready.HTTP == "" || mc.Health == nil || mc.Health.TCP == "" || mc.Health.OnFailure != "restart" {
		t.Errorf("probes: %+v %+v", mc.Ready, mc.Health)
	}
	if mc.Resources.MemoryMax.Bytes != 2<<30 || !mc.Resources.TasksMax.Infinity {
		t.Errorf("service resources: %+v", mc.Resources)
	}
	if obs := m.Service("tori-observer"); obs == nil || !obs.Ready.Notify || obs.Ready.Interval != 200*time.Millisecond {
		t.Errorf("observer: %+v", obs)
	}
	r := m.Resources
	if *r.CPUQuota != 80 || *r.CPUWeight != 100 || r.MemoryMax.Bytes != 16<<30 || r.MemoryHigh.Bytes != 12<<30 ||
		*r.IOWeight != 100 || r.TasksMax.N != 4096 || r.AllowedCPUs.String() != "0-1" {
		t.Errorf("resources: %+v", r)
	}
	if got := strings.Join(r.Directives(), ","); got != strings.Join(DirectiveNames, ",") {
		t.Errorf("Directives() = %s", got)
	}
	if m.Settings.MaxTokensPerMin != 600 || !m.ReadOnly || m.Network != NetworkNone || m.User != "1000:1000" {
		t.Errorf("top-level: %+v", m)
	}
	if m.Services[0].Name != "tori-observer" {
		t.Errorf("service order must follow the file, got %s first", m.Services[0].Name)
	}
}

// TestBadManifests checks every file of testdata/bad against its .want:
// each line of .want must be the start of one reported error line, and the
// number of errors must equal the number of lines, so that all errors are
// reported and nothing else is.
func TestBadManifests(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yml")
	if len(files) < 10 {
		t.Fatalf("bad corpus has %d files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(strings.TrimSuffix(f, ".yml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimSpace(string(data)), "\n")
			m, err := Load(f)
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			for i := range got {
				got[i] = strings.TrimPrefix(got[i], "testdata/bad/")
			}
			for _, w := range want {
				found := false
				for _, g := range got {
					if strings.HasPrefix(g, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("missing error\n  want prefix: %s\n  got:\n    %s", w, strings.Join(got, "\n    "))
				}
			}
			if len(got) != len(want) {
				t.Errorf("got %d errors, want %d:\n  %s", len(got), len(want), strings.Join(got, "\n  "))
			}
		})
	}
}

// TestAliasBomb: aliases that expand where the parser walks (each service
// an alias of one with a large env) are stopped by the node budget, and
// only by it: the same document with fewer aliases is a valid manifest.
func TestAliasBomb(t *testing.T) {
	bomb := func(services, vars int) string {
		var b strings.Builder
		b.WriteString("name: x\nversion: \"1.0.0\"\nservices:\n  s0: &s\n    command: /bin/true\n    env: {")
		for i := range vars {
			fmt.Fprintf(&b, "V%d: x, ", i)
		}
		b.WriteString("}\n")
		for i := 1; i < services; i++ {
			fmt.Fprintf(&b, "  s%d: *s\n", i)
		}
		return b.String()
	}
	// The shape is accepted: every alias expands into a service with its env.
	m, err := Parse(strings.NewReader(bomb(3, 3)), "small.yml")
	if err != nil {
		t.Fatalf("the small document must be valid: %v", err)
	}
	if len(m.Services) != 3 || len(m.Services[2].Env) != 3 {
		t.Fatalf("the small document's aliases did not expand: %+v", m.Services)
	}
	// 1000 services of 1000 variables: a 20 KB document that expands to
	// two million nodes, twenty times the budget.
	doc := bomb(1000, 1000)
	_, err = Parse(strings.NewReader(doc), "bomb.yml")
	var errs Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		t.Fatalf("a %d-byte alias bomb was accepted (err %v)", len(doc), err)
	}
	for _, e := range errs {
		if e.Msg != "document too large or too deeply aliased" {
			t.Errorf("want only the node budget's error, got %v", e)
		}
	}
}
