//go:build linux

package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// initArgvOf is the capsule's process in the plan compiled with o's
// binaries.
func initArgvOf(t *testing.T, o Options) []string {
	t.Helper()
	f := plan.AssumedFacts()
	f.Binary, f.Init = o.Binary, o.InitBinary
	m := &specs.Manifest{Name: "x", Layers: []string{specs.LayerHost}, Seccomp: specs.SeccompUnconfined}
	p, err := plan.Compile(plan.Input{Manifest: m, ID: "x-1"}, f)
	if err != nil {
		t.Fatal(err)
	}
	return p.Spec.Process.Args
}

// TestResolveInitEmbedded: a tori-run that embeds an init installs it under
// its run folder and makes it the capsule's PID 1 at /.tori/init, without
// binding itself; one that embeds none binds itself as the init.
func TestResolveInitEmbedded(t *testing.T) {
	bin := []byte("\x7fELF stand-in for cmd/tori-init")
	sum := sha256.Sum256(bin)
	digest := hex.EncodeToString(sum[:])
	defer func(f func() ([]byte, string)) { embeddedInit = f }(embeddedInit)

	embeddedInit = func() ([]byte, string) { return bin, digest }
	o := Options{RunDir: t.TempDir(), Log: zerolog.Nop()}
	if err := resolveInit(&o, o.Log, true); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(o.RunDir, "init", digest); o.InitBinary != want || o.Binary != "" {
		t.Fatalf("embedded: InitBinary %q, Binary %q; want %q and nothing else bound", o.InitBinary, o.Binary, want)
	}
	if got, err := os.ReadFile(o.InitBinary); err != nil || string(got) != string(bin) {
		t.Fatalf("installed init: %q, %v", got, err)
	}
	if argv := initArgvOf(t, o); !slices.Equal(argv, []string{plan.CapsuleInit, "capsule-init"}) {
		t.Errorf("the capsule's process is %q, want /.tori/init capsule-init", argv)
	}

	embeddedInit = func() ([]byte, string) { return nil, "" }
	o = Options{RunDir: t.TempDir(), Log: zerolog.Nop()}
	if err := resolveInit(&o, o.Log, true); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if o.InitBinary != "" || o.Binary != self {
		t.Fatalf("fallback: InitBinary %q, Binary %q; want tori-run itself (%s)", o.InitBinary, o.Binary, self)
	}
	if argv := initArgvOf(t, o); !slices.Equal(argv, []string{capsuleBinary, "capsule-init"}) {
		t.Errorf("the fallback's process is %q, want /.tori/tori-run capsule-init", argv)
	}
	if _, err := os.Stat(filepath.Join(o.RunDir, "init")); err == nil {
		t.Error("the fallback installed something")
	}
}
