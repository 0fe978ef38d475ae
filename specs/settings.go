package specs

import (
	"fmt"
	"strconv"
	"time"
)

// Settings are tori-run's own numeric settings that a capsule sets through its
// manifest env (they are also passed to the services unchanged).
type Settings struct {
	// MaxTokensPerMin is the state proxy's rate limit for the capsule, in
	// operations a minute (MAX_TOKENS_PER_MIN).
	MaxTokensPerMin int `json:"max_tokens_per_min"`
	// StateBuffer is how many records may wait to be written
	// (TORI_STATE_BUFFER).
	StateBuffer int `json:"state_buffer"`
}

// DefaultSettings are used for what a manifest does not set.
func DefaultSettings() Settings {
	return Settings{MaxTokensPerMin: DefaultMaxTokens, StateBuffer: 1000}
}

// settingParsers parse the manifest env variables that are settings.
var settingParsers = map[string]func(s *Settings, v string) error{
	"MAX_TOKENS_PER_MIN": func(s *Settings, v string) (err error) {
		s.MaxTokensPerMin, err = ParseIntSetting("MAX_TOKENS_PER_MIN", v, 1, 1_000_000)
		return err
	},
	"TORI_STATE_BUFFER": func(s *Settings, v string) (err error) {
		s.StateBuffer, err = ParseIntSetting("TORI_STATE_BUFFER", v, 1, 1_000_000)
		return err
	},
}

// ParseIntSetting parses an integer setting named name, which must lie in
// [min, max]. The error names the variable and the value: a bad value is
// never replaced by a default.
func ParseIntSetting(name, value string, min, max int) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%s=%q: expected an integer from %d to %d", name, value, min, max)
	}
	return n, nil
}

// ParseDurationSetting parses a duration setting named name.
func ParseDurationSetting(name, value string) (time.Duration, error) {
	d, err := ParseDuration(value)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// ParseSizeSetting parses a size setting named name (systemd syntax, no
// infinity).
func ParseSizeSetting(name, value string) (uint64, error) {
	s, err := ParseSize(value)
	if err == nil && s.Infinity {
		err = fmt.Errorf("%q: expected a finite size", value)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return s.Bytes, nil
}
