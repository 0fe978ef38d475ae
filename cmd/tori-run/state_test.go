package main

import (
	"os"
	"os/exec"
	"path/filepath"
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
	// The format follows -o's extension; --format wins.
	out := t.TempDir()
	pq := filepath.Join(out, "data", "x.parquet")
	os.Mkdir(filepath.Dir(pq), 0o700)
	if _, e, c := cli("", "state", "export", "demo", "-o", pq); c != 0 {
		t.Fatalf("export -o x.parquet: %d %s", c, e)
	}
	if b, _ := os.ReadFile(pq); len(b) < 8 || string(b[:4]) != "PAR1" {
		t.Fatalf("export -o x.parquet wrote %.20q, not Parquet", b)
	}
	jl := filepath.Join(out, "x.jsonl")
	if _, e, c := cli("", "state", "export", "demo", "-o", jl); c != 0 {
		t.Fatalf("export -o x.jsonl: %d %s", c, e)
	}
	if b, _ := os.ReadFile(jl); !strings.Contains(string(b), `"key":"a/1"`) {
		t.Fatalf("export -o x.jsonl wrote %q", b)
	}
	forced := filepath.Join(out, "forced.parquet")
	if _, e, c := cli("", "state", "export", "demo", "-o", forced, "--format", "jsonl"); c != 0 {
		t.Fatalf("export --format jsonl -o forced.parquet: %d %s", c, e)
	}
	if b, _ := os.ReadFile(forced); !strings.HasPrefix(string(b), "{") {
		t.Fatalf("--format jsonl must win over the extension, got %.20q", b)
	}
	if _, e, c := cli("", "state", "export", "demo", "-o", filepath.Join(out, "x.csv")); c != 2 || !strings.Contains(e, "cannot tell the format") {
		t.Fatalf("export -o x.csv: %d %s", c, e)
	}
	// Check and repair of a healthy state.
	if o, e, c := cli("", "state", "check", "demo"); c != 0 || !strings.Contains(o, "ok") {
		t.Fatalf("check: %d %s %s", c, o, e)
	}
	if o, e, c := cli("", "state", "repair", "demo"); c != 0 || !strings.Contains(o, "nothing dropped") {
		t.Fatalf("repair: %d %s %s", c, o, e)
	}
	// DuckDB reads the exported file (with the query of docs/STATE.md).
	node, err := exec.LookPath("node")
	script := filepath.Join("..", "..", "bench", "state", "duckdb_read.mjs")
	if _, err2 := os.Stat(filepath.Join("..", "..", "bench", "state", "node_modules", "@duckdb", "node-api")); err != nil || err2 != nil {
		t.Skip("DuckDB check needs node and `npm ci --prefix bench/state`")
	}
	got, err := exec.Command(node, script, out).Output()
	if err != nil || !strings.Contains(string(got), `"key":"a/1"`) || !strings.Contains(string(got), `"key":"a/2"`) {
		t.Fatalf("DuckDB on the exported Parquet: %v %s", err, got)
	}
}
