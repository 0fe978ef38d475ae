//go:build linux

package cgprobe

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tori-run/tori-run/cgroups"
)

// The probe's answers kept under the run folder give the same Host as a
// full detection, and a file for another boot or mount table is ignored.
func TestDetectCgroupsCacheSameAsDetect(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root and no -short: probes make child cgroups")
	}
	want, err := cgroups.Detect()
	if err != nil {
		t.Skipf("no usable cgroups here: %v", err)
	}
	run := t.TempDir()
	for round := range 2 { // the first probes and writes the file, the second reads it
		got, err := Detect(run)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: cached detection differs:\n got %+v\nwant %+v", round, got, want)
		}
	}
	path := filepath.Join(run, "cgroup-probe.json")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no cache file: %v", err)
	}
	// A file whose key is not this host's is not used: the probe runs again
	// and rewrites it.
	if err := os.WriteFile(path, []byte(`{"key":"another boot","children":{"x":["bogus"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Detect(run)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after a foreign cache file: got %+v, want %+v", got, want)
	}
	if b, _ := os.ReadFile(path); string(b) == `{"key":"another boot","children":{"x":["bogus"]}}` {
		t.Fatal("the foreign cache file was kept")
	}
}
