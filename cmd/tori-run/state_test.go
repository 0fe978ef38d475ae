package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestStateCLI: put, get, ls and export on a capsule that is not running
// (the store is opened directly).
func TestStateCLI(t *testing.T) {
	root, stateRoot := t.TempDir(), t.TempDir()
	cli := func(stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(binary, append([]string{"--root", root}, args...)...)
		cmd.Env = append(os.Environ(), "TORI_STATE_ROOT="+stateRoot)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return out.String(), errb.String(), code
	}
	if _, e, c := cli("", "state", "put", "demo", "a/1", "one"); c != 0 {
		t.Fatalf("put: %d %s", c, e)
	}
	if _, e, c := cli("two\n", "state", "put", "demo", "a/2"); c != 0 {
		t.Fatalf("put from stdin: %d %s", c, e)
	}
	if o, _, c := cli("", "state", "get", "demo", "a/2"); c != 0 || o != "two\n" {
		t.Fatalf("get: %d %q", c, o)
	}
	if o, _, c := cli("", "state", "ls", "demo", "a/"); c != 0 || o != "a/1\na/2\n" {
		t.Fatalf("ls: %d %q", c, o)
	}
	if _, e, c := cli("", "state", "get", "demo", "nope"); c != 1 || !strings.Contains(e, `"nope": no such key`) {
		t.Fatalf("get of a missing key: %d %s", c, e)
	}
	if o, _, c := cli("", "state", "export", "demo"); c != 0 || strings.Count(o, "\n") != 2 || !strings.Contains(o, `"key":"a/1"`) {
		t.Fatalf("export: %d %q", c, o)
	}
	if _, e, c := cli("", "state", "export", "demo", "--format", "parquet"); c != 2 || !strings.Contains(e, "give -o FILE") {
		t.Fatalf("parquet to a terminal: %d %s", c, e)
	}
}
