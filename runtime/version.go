package runtime

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/tori-run/tori-run/runtime.version=...
// -X github.com/tori-run/tori-run/runtime.buildSHA=..." (the Makefile does).
// Without them, the VCS stamp of the Go build info is used.
var (
	version  = "0.1.0-dev"
	buildSHA = ""
)

// VersionInfo says which tori-run this is.
type VersionInfo struct {
	Version  string `json:"version"`
	BuildSHA string `json:"build_sha"`
	Modified bool   `json:"modified"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Init is the SHA-256 of the capsule init (cmd/tori-init) this binary
	// embeds and binds into capsules; "" when it binds itself (a build
	// without make build's toriinit tag).
	Init string `json:"init,omitempty"`
}

// Version returns the version and build SHA of this binary.
func Version() VersionInfo {
	v := VersionInfo{Version: version, BuildSHA: buildSHA, Go: goruntime.Version(), Platform: goruntime.GOOS + "/" + goruntime.GOARCH, Init: EmbeddedInit()}
	if v.BuildSHA != "" {
		return v
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.BuildSHA = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func (v VersionInfo) String() string {
	sha := v.BuildSHA
	if sha == "" {
		sha = "unknown"
	}
	if v.Modified {
		sha += " (modified)"
	}
	init := "tori-run itself (no embedded tori-init)"
	if v.Init != "" {
		init = "tori-init sha256:" + v.Init
	}
	return fmt.Sprintf("tori-run %s\nbuild: %s\n%s %s\ncapsule init: %s", v.Version, sha, v.Go, v.Platform, init)
}
