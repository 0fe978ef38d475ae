//go:build linux

package daemon

import (
	"path/filepath"
	"testing"
)

// TestUpgradeRecordDurable: the record is replaced whole, and removed.
func TestUpgradeRecordDurable(t *testing.T) {
	root := t.TempDir()
	if r, err := readUpgradeRecord(root, "web"); r != nil || err != nil {
		t.Fatalf("none yet: %v %v", r, err)
	}
	rec := &upgradeRecord{Capsule: "web", Kind: KindUpgrade, From: "a", To: "b", Phase: PhaseWaitingReady, OldInstance: "web-1"}
	if err := writeUpgradeRecord(root, rec); err != nil {
		t.Fatal(err)
	}
	rec.Phase = PhaseSwitching
	if err := writeUpgradeRecord(root, rec); err != nil {
		t.Fatal(err)
	}
	got, err := readUpgradeRecord(root, "web")
	if err != nil || got.Phase != PhaseSwitching || got.To != "b" {
		t.Fatalf("read back %+v %v", got, err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "upgrades", ".*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
	if err := removeUpgradeRecord(root, "web"); err != nil {
		t.Fatal(err)
	}
	if r, _ := readUpgradeRecord(root, "web"); r != nil {
		t.Error("still there")
	}
}
