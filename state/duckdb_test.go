package state

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// duckdbScript is the independent reader: DuckDB through npm's
// @duckdb/node-api, installed by `npm ci` in bench/state.
var duckdbScript = filepath.Join("..", "bench", "state", "duckdb_read.mjs")

type duckdbOut struct {
	KV []struct {
		Key, Value, Seq, Service string
	} `json:"kv"`
	Events []struct {
		Seq, Value, Service string
	} `json:"events"`
}

func readWithDuckDB(t *testing.T, dir string) duckdbOut {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the DuckDB cross-check needs node and `npm ci --prefix bench/state`")
	}
	mod := filepath.Join(filepath.Dir(duckdbScript), "node_modules", "@duckdb", "node-api")
	if _, err := os.Stat(mod); err != nil {
		t.Skipf("%s is missing: run `npm ci --prefix bench/state` to install DuckDB for this cross-check", mod)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, duckdbScript, dir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node %s %s: %v\n%s", duckdbScript, dir, err, stderr)
	}
	var res duckdbOut
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode DuckDB output %q: %v", out, err)
	}
	return res
}

// TestDuckDBReadsTheFiles writes through the API (with deletes, binary
// values, events, flushes and compactions that leave replaced files on
// disk), then checks that DuckDB, reading data/*.parquet with the query of
// docs/STATE.md, agrees with the API.
func TestDuckDBReadsTheFiles(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{Buffer: 16, FlushInterval: -1, CompactRatio: 2, KeepManifests: 4})
	defer closeT(t, s)
	ctx := context.Background()
	for i := range 400 {
		key := fmt.Sprintf("obs/%03d", i%70)
		switch {
		case i%7 == 3:
			if _, err := s.Delete(ctx, "metacog", key); err != nil {
				t.Fatal(err)
			}
		case i%11 == 5:
			if _, err := s.AppendEvent(ctx, "observer", fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		default:
			v := fmt.Appendf(nil, "value %d ", i)
			if i%13 == 0 {
				v = append(v, 0, 0xff, '\n')
			}
			if _, err := s.Put(ctx, "metacog", key, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustPut(t, s, "k/ünïcødé/☃", "u")
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", s.Stats())
	got := readWithDuckDB(t, dir)

	var want []Entry
	s.Scan("", func(e Entry) bool { want = append(want, e); return true })
	if len(got.KV) != len(want) {
		t.Fatalf("DuckDB sees %d keys, the API %d", len(got.KV), len(want))
	}
	for i, e := range want {
		g := got.KV[i]
		if g.Key != e.Key || g.Value != base64.StdEncoding.EncodeToString(e.Value) || g.Seq != strconv.FormatUint(e.Seq, 10) || g.Service != e.Service {
			t.Errorf("key %d: DuckDB %+v, API %q=%q seq %d by %s", i, g, e.Key, e.Value, e.Seq, e.Service)
		}
	}
	evs := s.Events(0, 1<<30)
	if len(got.Events) != len(evs) {
		t.Fatalf("DuckDB sees %d events, the API %d", len(got.Events), len(evs))
	}
	for i, e := range evs {
		g := got.Events[i]
		if g.Seq != strconv.FormatUint(e.Seq, 10) || g.Value != base64.StdEncoding.EncodeToString(e.Value) || g.Service != e.Service {
			t.Errorf("event %d: DuckDB %+v, API seq %d %q", i, g, e.Seq, e.Value)
		}
	}
}
