package toritest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/toritest"
)

// BenchmarkStart: spawn to ready of a one-service capsule from an app
// folder (the service is ready when started: no probe), then its stop. It
// reports the median and p90 of Start alone, and of Stop.
func BenchmarkStart(b *testing.B) {
	var starts, stops []time.Duration
	for b.Loop() {
		t0 := time.Now()
		c := toritest.Start(b, "testdata/hello")
		t1 := time.Now()
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		starts, stops = append(starts, t1.Sub(t0)), append(stops, time.Since(t1))
	}
	b.ReportMetric(quantile(starts, 0.5), "start-p50-ms")
	b.ReportMetric(quantile(starts, 0.9), "start-p90-ms")
	b.ReportMetric(quantile(stops, 0.5), "stop-p50-ms")
}

// BenchmarkStartArchive: the same from a capsule archive. The first Start
// of a file in a process installs it (extract, verify, sync) into the
// shared cache; the later ones run the installed release. It reports the
// first Start and the median of the others.
func BenchmarkStartArchive(b *testing.B) {
	res, err := release.Build(context.Background(), release.BuildOptions{FromDir: "testdata/hello", Manifest: "testdata/hello/capsule.yml", OutputDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	var first time.Duration
	var later []time.Duration
	for b.Loop() {
		t0 := time.Now()
		c := toritest.Start(b, res.Path)
		d := time.Since(t0)
		if first == 0 {
			first = d
		} else {
			later = append(later, d)
		}
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(first)/float64(time.Millisecond), "first-start-ms")
	if len(later) > 0 {
		b.ReportMetric(quantile(later, 0.5), "start-p50-ms")
	}
}

func quantile(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))]) / float64(time.Millisecond)
}
