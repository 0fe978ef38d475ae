//go:build linux

package daemon

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestUpgradeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newUpgradeMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.setPhase("web", PhaseWaitingReady)
	m.setPhase("web", PhaseSwitching)
	m.count("done")
	m.count("rolled-back")
	m.count("rolled-back")
	want := `
# HELP tori_upgrade_phase 1 for the phase of each capsule's upgrade under way (starting, waiting-ready, waiting-healthy, switching).
# TYPE tori_upgrade_phase gauge
tori_upgrade_phase{capsule="web",phase="switching"} 1
# HELP tori_upgrades_total Upgrades and rollbacks that ended, by result: done, rolled-back, or recovered-* when a restarted daemon finished them.
# TYPE tori_upgrades_total counter
tori_upgrades_total{result="done"} 1
tori_upgrades_total{result="rolled-back"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	m.setPhase("web", "")
	if n := testutil.CollectAndCount(m.phase); n != 0 {
		t.Errorf("phase series after the end: %d", n)
	}
	var none *upgradeMetrics
	none.count("done")
	none.setPhase("web", PhaseDone)
}
