//go:build linux && toriinit

package initbin

import _ "embed"

// The Makefile writes these two files before it builds tori-run with the
// tag toriinit (make build: the init target); they are not in git.

//go:embed tori-init
var embeddedInit []byte

//go:embed tori-init.sha256
var embeddedInitDigest string

func init() {
	embedded, embeddedDigest = embeddedInit, embeddedInitDigest
}
