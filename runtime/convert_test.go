//go:build linux

package runtime

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// Unit tests, without root, of the pure conversions from the manifest to
// what the leaves take. Each input goes through specs.Parse, so a test
// says what a capsule.yml becomes.

func manifestOf(t *testing.T, body string) *specs.Manifest {
	t.Helper()
	m, err := specs.Parse(strings.NewReader("name: x\nversion: \"1.0.0\"\n"+body), "capsule.yml")
	if err != nil {
		t.Fatalf("manifest:\n%s\n%v", body, err)
	}
	return m
}

func TestToCgroupResources(t *testing.T) {
	for _, tc := range []struct {
		name, resources string
		want            cgroups.Resources
	}{
		{"none", "", cgroups.Resources{}},
		{"every directive", "CPUQuota: 150%\n  CPUWeight: 200\n  MemoryMax: 512M\n  MemoryHigh: 1G\n  IOWeight: 50\n  TasksMax: 64\n  AllowedCPUs: 0-1,3\n",
			cgroups.Resources{CPUQuotaPercent: new(150.0), CPUWeight: new(uint64(200)), MemoryMax: new(int64(512 << 20)),
				MemoryHigh: new(int64(1 << 30)), IOWeight: new(uint64(50)), TasksMax: new(int64(64)), AllowedCPUs: "0-1,3"}},
		{"infinity is -1", "MemoryMax: infinity\n  MemoryHigh: infinity\n  TasksMax: infinity\n",
			cgroups.Resources{MemoryMax: new(int64(-1)), MemoryHigh: new(int64(-1)), TasksMax: new(int64(-1))}},
		{"fractional quota", "CPUQuota: 12.5%\n", cgroups.Resources{CPUQuotaPercent: new(12.5)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "entrypoint: /bin/true\nservices: [a]\n"
			if tc.resources != "" {
				body += "resources:\n  " + tc.resources
			}
			got := toCgroupResources(manifestOf(t, body).Resources)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", asJSON(got), asJSON(tc.want))
			}
		})
	}
}

// show gives v as JSON: the values behind the pointers, for messages.
func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestSupervisorConfigs(t *testing.T) {
	m := manifestOf(t, `services:
  db:
    command: /bin/db
    restart: always
    backoff: { initial: 1s, max: 1m, reset_after: 5m }
    max_restarts: 7
    restart_window: 2m
    stop_signal: SIGINT
    stop_timeout: 3s
    ready: { notify: true, interval: 2s, retries: 5 }
    health: { http: "http://127.0.0.1:8080/health", interval: 30s, timeout: 1s, retries: 2, on_failure: ignore }
  web:
    command: /bin/web
    after: [db]
    ready: { tcp: "127.0.0.1:8080" }
    health: { exec: "/bin/check --deep" }
  job:
    command: /bin/job
    restart: never
`)
	defaults := supervisor.ServiceConfig{
		Restart:       supervisor.RestartOnFailure,
		Backoff:       supervisor.Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: time.Minute},
		MaxRestarts:   5,
		RestartWindow: time.Minute,
		StopSignal:    syscall.SIGTERM,
		StopTimeout:   10 * time.Second,
	}
	db := supervisor.ServiceConfig{
		Name:          "db",
		Restart:       supervisor.RestartAlways,
		Backoff:       supervisor.Backoff{Initial: time.Second, Max: time.Minute, ResetAfter: 5 * time.Minute},
		MaxRestarts:   7,
		RestartWindow: 2 * time.Minute,
		StopSignal:    syscall.SIGINT,
		StopTimeout:   3 * time.Second,
		Ready:         &supervisor.Probe{Kind: supervisor.ProbeNotify, Interval: 2 * time.Second, Timeout: time.Second, Retries: 5},
		Health: &supervisor.Probe{Kind: supervisor.ProbeHTTP, URL: "http://127.0.0.1:8080/health", Interval: 30 * time.Second,
			Timeout: time.Second, Retries: 2, OnFailure: supervisor.OnFailureIgnore},
	}
	web := defaults
	web.Name, web.After = "web", []string{"db"}
	web.Ready = &supervisor.Probe{Kind: supervisor.ProbeTCP, Addr: "127.0.0.1:8080", Interval: time.Second, Timeout: time.Second, Retries: 30}
	web.Health = &supervisor.Probe{Kind: supervisor.ProbeExec, Exec: []string{"/bin/check", "--deep"}, Interval: 10 * time.Second,
		Timeout: 2 * time.Second, Retries: 3, OnFailure: supervisor.OnFailureRestart}
	job := defaults
	job.Name, job.Restart = "job", supervisor.RestartNever

	got := ManifestSupervision(m)
	want := []supervisor.ServiceConfig{db, web, job}
	if len(got) != len(want) {
		t.Fatalf("%d configs, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("service %s:\ngot  %s\nwant %s", want[i].Name, asJSON(got[i]), asJSON(want[i]))
		}
	}
	// The supervisor accepts what the runtime gives it.
	sup, err := supervisor.New(got, nil, supervisor.Options{})
	if err != nil {
		t.Fatalf("supervisor.New refuses the converted configs: %v", err)
	}
	if err := sup.Stop(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestServiceEnv(t *testing.T) {
	m := manifestOf(t, `entrypoint: /bin/true
env: { A: top, B: top, PATH: /opt/bin }
services:
  web:
    env: { B: web, C: "3" }
  job: {}
`)
	tori := []string{"TORI_BUILD_SHA=abc123", "TORI_CAPSULE=x", "TORI_RELEASE=x-1.0.0", "TORI_STATE_SOCKET=/run/tori/state.sock"}
	for _, tc := range []struct {
		service string
		want    []string
	}{
		// The service's env wins over the manifest's, which wins over the defaults.
		{"web", append([]string{"A=top", "B=web", "C=3", "HOME=/root", "PATH=/opt/bin"}, append(tori[:3:3], "TORI_SERVICE=web", tori[3])...)},
		{"job", append([]string{"A=top", "B=top", "HOME=/root", "PATH=/opt/bin"}, append(tori[:3:3], "TORI_SERVICE=job", tori[3])...)},
	} {
		got := serviceEnv(m, m.Service(tc.service), "x-1.0.0", "abc123")
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.service, got, tc.want)
		}
	}
	// Without env anywhere: the defaults. tori-run's own variables win even
	// over a manifest that set them (the parser refuses that; this holds
	// for a Manifest built by hand too).
	bare := &specs.Manifest{Name: "y", Env: []specs.EnvVar{{Name: "TORI_SERVICE", Value: "forged"}, {Name: "TORI_CAPSULE", Value: "forged"}}}
	got := serviceEnv(bare, &specs.Service{Name: "s", Env: []specs.EnvVar{{Name: "TORI_RELEASE", Value: "forged"}}}, "y-2", "")
	want := []string{"HOME=/root", "PATH=" + capsulePath, "TORI_BUILD_SHA=none", "TORI_CAPSULE=y", "TORI_RELEASE=y-2", "TORI_SERVICE=s",
		"TORI_STATE_SOCKET=/run/tori/state.sock"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tori-run's variables:\ngot  %q\nwant %q", got, want)
	}
}
