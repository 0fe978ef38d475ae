package runtime

// Default locations of SPEC §3. A non-root user points them at a folder of
// their own with --root / TORI_ROOT and TORI_STATE_ROOT.
const (
	DefaultRoot      = "/opt/tori"
	DefaultStateRoot = "/opt/tori/state"
	DefaultRunDir    = "/run/tori"
)
