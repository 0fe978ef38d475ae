// Package examples holds the reference capsules; this test keeps what they
// vendor in step with its source.
package examples

import (
	"bytes"
	"os"
	"testing"
)

// TestVendoredStateClient: the reference capsule carries a copy of the
// stdlib-only state client (an app ships its libraries); it must be the
// one in clients/python.
func TestVendoredStateClient(t *testing.T) {
	src, err := os.ReadFile("../clients/python/tori_state.py")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile("metacog/python/core/tori_state.py")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, cp) {
		t.Fatal("examples/metacog/python/core/tori_state.py differs from clients/python/tori_state.py: cp clients/python/tori_state.py examples/metacog/python/core/")
	}
}
