//go:build linux

package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
)

// upgradeMetrics are the daemon's upgrade metrics: tori_upgrades_total by
// result (done, rolled-back, recovered-done, recovered-rolled-back) and
// tori_upgrade_phase, 1 for the phase each capsule's upgrade is in. A nil
// *upgradeMetrics records nothing.
type upgradeMetrics struct {
	total *prometheus.CounterVec
	phase *prometheus.GaugeVec
}

var upgradePhases = []Phase{PhaseStarting, PhaseWaitingReady, PhaseWaitingHealthy, PhaseSwitching}

func newUpgradeMetrics(reg prometheus.Registerer) (*upgradeMetrics, error) {
	m := &upgradeMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tori_upgrades_total",
			Help: "Upgrades and rollbacks that ended, by result: done, rolled-back, or recovered-* when a restarted daemon finished them."}, []string{"result"}),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tori_upgrade_phase",
			Help: "1 for the phase of each capsule's upgrade under way (starting, waiting-ready, waiting-healthy, switching)."}, []string{"capsule", "phase"}),
	}
	for _, c := range []prometheus.Collector{m.total, m.phase} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"done", "rolled-back"} {
		m.total.WithLabelValues(r)
	}
	return m, nil
}

func (m *upgradeMetrics) count(result string) {
	if m != nil {
		m.total.WithLabelValues(result).Inc()
	}
}

// setPhase marks capsule's upgrade phase; "" (or an end) clears it.
func (m *upgradeMetrics) setPhase(capsule string, phase Phase) {
	if m == nil {
		return
	}
	for _, p := range upgradePhases {
		if p == phase {
			m.phase.WithLabelValues(capsule, string(p)).Set(1)
		} else {
			m.phase.DeleteLabelValues(capsule, string(p))
		}
	}
}
