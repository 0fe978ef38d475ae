package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var binary string

// TestMain builds the real binary once; the tests run it as a user would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tori-cli-test-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tori-run")
	out, err := exec.Command("go", "build", "-tags", "seccomp", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, argv0 string, args ...string) result {
	t.Helper()
	bin := binary
	if argv0 != "" {
		bin = filepath.Join(t.TempDir(), argv0)
		if err := os.Symlink(binary, bin); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "TORI_ROOT="+t.TempDir())
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, stdout.String(), stderr.String()}
}

const repo = "../.."

func TestCLIExitCodesAndMessages(t *testing.T) {
	for _, tc := range []struct {
		name      string
		argv0     string
		args      []string
		code      int
		stdout    []string // substrings
		stderr    []string
		notStdout []string
	}{
		{name: "seed manifest beside its app", args: []string{"validate", repo + "/examples/metacog/capsule.yml"}, code: 0,
			stdout: []string{"PASS  manifest", "tori-metacognitive 2.1.0: services tori-metacog, tori-observer", "PASS  app", "0 fail"}},
		// The folder of a capsule.yml is its app, as for build --from-dir:
		// a manifest far from its app fails as build would, and says how to
		// check it against a zip.
		{name: "seed manifest without its app", args: []string{"validate", repo + "/specs/testdata/good/seed-capsule.yml"}, code: 1,
			stdout: []string{"PASS  manifest", "start_true_metacognition.py is not in the app", "validate --manifest " + repo + "/specs/testdata/good/seed-capsule.yml APP.zip"}},
		{name: "reference app folder", args: []string{"validate", repo + "/examples/metacog"}, code: 0,
			stdout: []string{"(app-dir)", "PASS  requirements", "2 requirements, all pinned", "PASS  app"}},
		{name: "slice overrides", args: []string{"validate", repo + "/examples/metacog", "--slice", repo + "/examples/metacog/tori-metacog.slice"}, code: 0,
			stdout: []string{"PASS  slice", "CPUQuota=80% MemoryMax=16G IOWeight=100"}},
		{name: "bad manifest lists every error with lines", args: []string{"validate", repo + "/specs/testdata/bad/bad-service.yml"}, code: 1,
			stdout: []string{
				"FAIL  manifest          " + repo + "/specs/testdata/bad/bad-service.yml:6:18: services.web.stop_signal: \"SIGFOO\" is not a signal",
				"bad-service.yml:12:12: services.web.ready: expected exactly one of",
				"0 pass, 0 warn, 7 fail"}},
		{name: "bad slice", args: []string{"validate", repo + "/examples/metacog", "--slice", repo + "/specs/testdata/slices/bad.slice"}, code: 1,
			stdout: []string{"FAIL  slice", "bad.slice:5: MemorySwapMax: unknown or unsupported directive"}},
		{name: "missing file", args: []string{"validate", "/nonexistent/capsule.yml"}, code: 1,
			stdout: []string{"FAIL  target", "no such file"}},
		{name: "no target is a usage error", args: []string{"validate"}, code: 2,
			stderr: []string{"give a capsule.yml, an app folder or zip, or --host"}},
		{name: "unknown flag is a usage error", args: []string{"validate", "--frobnicate"}, code: 2,
			stderr: []string{"unknown flag: --frobnicate"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{"unknown command"}},
		{name: "too many args", args: []string{"spec", "a", "b"}, code: 2, stderr: []string{"accepts 1 arg(s), received 2"}},
		// spec from the facts spec assumes off Linux: they are named, and the
		// config.json is the plan's golden file's (runtime/plan/testdata).
		{name: "spec from assumed facts", args: []string{"spec", "--assume-host", repo + "/examples/metacog/capsule.yml"}, code: 0,
			stdout: []string{`"/.tori/tori-run"`, `"source": "/usr/local/bin/tori-run"`, `"cgroupsPath": "tori/tori-metacognitive-\u003cid\u003e"`},
			stderr: []string{"no host probed; assumed: cgroup v2; kernel 6.1.0"}},
		{name: "bad log level", args: []string{"--log-level", "loud", "version"}, code: 2, stderr: []string{`--log-level "loud": expected debug, info, warn or error`}},
		{name: "upgrade without a daemon", args: []string{"upgrade", "--socket", "/nonexistent/tori.sock", "a", "b"}, code: 1, stderr: []string{"the daemon does not answer at /nonexistent/tori.sock"}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"tori-run ", "build: "}},
		{name: "help", args: []string{"--help"}, code: 0, stdout: []string{"Capsule artifacts:", "validate", "Running capsules:", "Talking to the daemon:"}},
		{name: "capsbuild alias", argv0: "capsbuild", args: []string{"--help"}, code: 0, stdout: []string{"tori-run build"}},
		{name: "capsdeploy alias", argv0: "capsdeploy", args: []string{"validate", repo + "/examples/metacog/capsule.yml"}, code: 0, stdout: []string{"PASS  manifest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.argv0, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
		})
	}
}

// TestValidateJSON checks the stable machine-readable form.
func TestValidateJSON(t *testing.T) {
	r := runCLI(t, "", "validate", "--json", repo+"/specs/testdata/bad/bad-after.yml")
	if r.code != 1 {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Schema   int    `json:"schema"`
		Kind     string `json:"kind"`
		Findings []struct {
			Check, Status, Message, File, Field string
			Line, Column                        int
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if rep.Schema != 1 || rep.Kind != "manifest" || len(rep.Findings) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	f := rep.Findings[1]
	if f.Status != "fail" || f.Line != 6 || f.Column != 15 || f.Field != "services.b.after" || !strings.Contains(f.Message, "dependency cycle: b -> c -> b") {
		t.Errorf("finding: %+v", f)
	}
}

// TestValidateHost checks that --host tells the truth about the cgroup mode
// of the machine it runs on.
func TestValidateHost(t *testing.T) {
	r := runCLI(t, "", "validate", "--host", "--json")
	var rep struct {
		Findings []struct{ Check, Status, Message string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	want := "legacy"
	if isCgroup2("/sys/fs/cgroup") {
		want = "unified"
	} else if isCgroup2("/sys/fs/cgroup/unified") {
		want = "hybrid"
	}
	found := false
	for _, f := range rep.Findings {
		if f.Check == "cgroup-mode" && strings.Contains(f.Message, want) {
			found = true
		}
	}
	if !found {
		t.Errorf("no cgroups finding saying %q:\n%s", want, r.stdout)
	}
}

func isCgroup2(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.controllers"))
	return err == nil
}
