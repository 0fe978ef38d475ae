//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/layout"
)

// An upgrade under way is recorded in <root>/upgrades/<capsule>.json, and
// that record, not a guess from the processes found, is what a daemon
// started after a crash goes by: before the switch it keeps the old
// release (and removes the new one's instance), from the switch on the new
// one. The record is written atomically and durably (temp file, fsync,
// rename, fsync of the folder) at each phase.
type upgradeRecord struct {
	Capsule string    `json:"capsule"`
	Kind    string    `json:"kind"` // upgrade or rollback
	From    string    `json:"from"` // release digests
	To      string    `json:"to"`
	Phase   Phase     `json:"phase"`
	Started time.Time `json:"started"`
	// OldInstance and Candidate are the instances' ids (Candidate is empty
	// until its instance is made).
	OldInstance string `json:"old_instance"`
	Candidate   string `json:"candidate,omitempty"`
}

func upgradeRecordPath(root, capsule string) string {
	return layout.Layout{Root: root}.Upgrade(capsule)
}

func previousRef(root, name string) string { return layout.Layout{Root: root}.Ref(name, "previous") }

func readUpgradeRecord(root, capsule string) (*upgradeRecord, error) {
	b, err := os.ReadFile(upgradeRecordPath(root, capsule))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r upgradeRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", upgradeRecordPath(root, capsule), err)
	}
	return &r, nil
}

func writeUpgradeRecord(root string, r *upgradeRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	p := upgradeRecordPath(root, r.Capsule)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, append(b, '\n'), 0o600)
}

func removeUpgradeRecord(root, capsule string) error {
	return atomicfile.Remove(upgradeRecordPath(root, capsule))
}

// writeRef points refs/<name>/<which> at a release digest, durably.
func writeRef(root, name, which, digest string) error {
	p := layout.Layout{Root: root}.Ref(name, which)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, []byte(digest+"\n"), 0o644)
}

func readRef(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
