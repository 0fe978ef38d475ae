package runtime

import "github.com/tori-run/tori-run/layout"

// Default locations of SPEC §3 (layout names every path under
// them). A non-root user points them at a folder of their own with --root
// / TORI_ROOT, TORI_RUN_DIR and TORI_STATE_ROOT.
const (
	DefaultRoot      = layout.DefaultRoot
	DefaultStateRoot = layout.DefaultStateRoot
	DefaultRunDir    = layout.DefaultRunDir
)
