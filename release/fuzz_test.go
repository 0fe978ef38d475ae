//go:build linux

package release

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzInstall feeds arbitrary archive bytes to Install: it must not panic,
// must write nothing outside the store's staging, and must end with either
// one complete release or an error and no leftovers.
func FuzzInstall(f *testing.F) {
	res := buildApp(f, testManifest, testApp()[:4], f.TempDir())
	good := rawTar(f, res.Path)
	f.Add(good)
	gz, err := os.ReadFile(res.Path)
	must(f, err)
	f.Add(gz)
	es := readTar(f, good)
	es[4].hdr.Name = "../evil"
	f.Add(writeTar(f, es))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		work := storeRoot(t)
		archive := filepath.Join(work, "fuzz.tar")
		must(t, os.WriteFile(archive, data, 0o644))
		root := filepath.Join(work, "root")
		s, err := Open(root, WithLimits(Limits{MaxFiles: 64, MaxBytes: 1 << 20, MaxFileSize: 1 << 20}))
		must(t, err)
		rel, _, err := s.Install(context.Background(), archive)
		if top := listTree(t, work); !slices.Equal(top[:3], []string{". d---------", "fuzz.tar ----------", "root d---------"}) || !strings.HasPrefix(top[3], "root/releases ") {
			t.Fatalf("wrote outside the store: %q", top)
		}
		rels, leftovers := installed(t, root)
		if len(leftovers) != 0 {
			t.Fatalf("leftovers %q after %v", leftovers, err)
		}
		if err != nil {
			if len(rels) != 0 {
				t.Fatalf("error %v but releases %q", err, rels)
			}
			return
		}
		if len(rels) != 1 || rels[0] != rel.Digest {
			t.Fatalf("installed %q, releases %q", rel.Digest, rels)
		}
		if rep, err := s.Verify(rel.Digest); err != nil || !rep.OK() {
			t.Fatalf("installed release does not verify: %+v %v", rep, err)
		}
	})
}
