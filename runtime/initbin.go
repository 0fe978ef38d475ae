//go:build linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime/initbin"
)

// embeddedInit is initbin.Embedded; tests give it bytes.
var embeddedInit = initbin.Embedded

// The small capsule init (cmd/tori-init) is bound at plan.CapsuleInit; the
// fallback, tori-run itself, at plan.CapsuleBinary (runtime/plan/spec.go).

// resolveInit picks the capsule's PID 1: Options.InitBinary if given, else
// the init this tori-run embeds (installed under <RunDir>/init, see
// runtime/initbin), else tori-run itself (os.Executable), as every build
// without the toriinit tag (go build, go test, toritest from another
// module) does. tori-run's own binary is bound too only as that fallback
// or when the caller named it (Options.Binary: tests run workloads from it).
// Without install (tori-run spec) the embedded init's path is only named.
func resolveInit(o *Options, log zerolog.Logger, install bool) error {
	if o.InitBinary == "" {
		if bin, digest := embeddedInit(); bin != nil {
			dir := o.layout().Inits()
			o.InitBinary = filepath.Join(dir, digest)
			if install {
				p, err := initbin.Install(dir, bin, digest)
				if err != nil {
					return fmt.Errorf("installing the capsule init under %s: %w", dir, err)
				}
				o.InitBinary = p
			}
		} else if o.Binary == "" {
			log.Debug().Msg("this tori-run embeds no capsule init (built without make build's toriinit tag): each capsule's init is tori-run itself")
		}
	}
	if o.InitBinary == "" && o.Binary == "" {
		var err error
		if o.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("tori-run's own binary, the capsule init: %w", err)
		}
	}
	return nil
}

// EmbeddedInit is the SHA-256 of the capsule init this tori-run carries
// (tori-run version), or "" when it binds itself.
func EmbeddedInit() string {
	_, d := initbin.Embedded()
	return d
}
