package proxy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tori-run/tori-run/state"
)

// Every state series carries the capsule's release and build SHA beside
// its capsule label.
func TestMetricsCarryRelease(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.SetRelease("alpha", "abc123", "none")
	h := startProxy(t, state.Options{OnCommit: m.CommitObserver("alpha")}, Options{Capsule: "alpha", Metrics: m, RatePerMin: 60, Burst: 2})
	if err := h.cl.Put(context.Background(), "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range mt.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if got["capsule"] != "alpha" || got[LabelRelease] != "abc123" || got[LabelBuildSHA] != "none" {
				t.Errorf("%s %v: want capsule=alpha release=abc123 build_sha=none", mf.GetName(), got)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no state series gathered")
	}
}
