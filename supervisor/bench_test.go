package supervisor

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkRestartLatency measures exit → replacement running with
// backoff.initial 0: from the supervisor seeing a /bin/false exit (status
// 1) to the replacement's exec having succeeded (Runner.Start returned),
// both as stamped on the events. It reports the median and the 90th
// percentile per restart; ns/op is the whole cycle (process life
// included).
func BenchmarkRestartLatency(b *testing.B) {
	for _, withLogs := range []bool{false, true} {
		name := "discard-output"
		if withLogs {
			name = "log-to-files"
		}
		b.Run(name, func(b *testing.B) {
			cfg := ServiceConfig{Name: "false", Restart: RestartAlways, Backoff: Backoff{}, StopTimeout: time.Second}
			opts := Options{EventBuffer: 1 << 14}
			if withLogs {
				opts.LogDir = b.TempDir()
			}
			sup, err := New([]ServiceConfig{cfg}, &ExecRunner{Services: map[string]ExecService{"false": {Argv: []string{"/bin/false"}}}}, opts)
			if err != nil {
				b.Fatal(err)
			}
			sub := sup.Events()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			if err := sup.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			var exited time.Time
			for len(lat) < b.N {
				e := <-sub.C()
				switch e.Type {
				case EventExited:
					exited = e.Time
				case EventStarted:
					if !exited.IsZero() {
						lat = append(lat, e.Time.Sub(exited))
						exited = time.Time{}
					}
				}
			}
			b.StopTimer()
			if err := sup.Stop(context.Background()); err != nil {
				b.Fatal(err)
			}
			if sub.Dropped() > 0 {
				b.Logf("%d events dropped", sub.Dropped())
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "median-ns/restart")
			b.ReportMetric(float64(lat[len(lat)*9/10].Nanoseconds()), "p90-ns/restart")
		})
	}
}
