//go:build linux

package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// installVersions builds and installs one release per manifest text.
func installVersions(t *testing.T, s *Store, manifests ...string) []*Release {
	t.Helper()
	var out []*Release
	for _, m := range manifests {
		res := buildApp(t, m, testApp(), t.TempDir())
		rel, _, err := s.Install(context.Background(), res.Path)
		must(t, err)
		out = append(out, rel)
	}
	return out
}

func version(v string) string {
	return strings.Replace(testManifest, `"1.0.0"`, `"`+v+`"`, 1)
}

func named(name, v string) string {
	return strings.Replace(version(v), "name: demo", "name: "+name, 1)
}

func digests(rels []Release) []string {
	var out []string
	for _, r := range rels {
		out = append(out, r.Name+"@"+r.Version)
	}
	return out
}

func TestListResolveGC(t *testing.T) {
	root := storeRoot(t)
	s, err := Open(root, WithLogger(testLogger(t)))
	must(t, err)
	rels := installVersions(t, s, version("1.0.0"), version("1.0.1"), version("1.0.2"), named("other", "0.1.0"))
	v100, v101, v102, other := rels[0], rels[1], rels[2], rels[3]

	// References: a current ref for demo 1.0.0, an instance of other.
	must(t, os.MkdirAll(filepath.Join(root, "refs/demo"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "refs/demo/current"), []byte(v100.Digest+"\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "instances/abc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "instances/abc/release"), []byte("sha256:"+other.Digest), 0o644))

	list, err := s.List()
	must(t, err)
	if got := digests(list); !slices.Equal(got, []string{"demo@1.0.2", "demo@1.0.1", "demo@1.0.0", "other@0.1.0"}) {
		t.Errorf("list %q", got)
	}
	for _, r := range list {
		wantUse := r.Digest == v100.Digest || r.Digest == other.Digest
		if r.InUse != wantUse || r.Size == 0 || r.Files != 6 || r.InstalledAt.IsZero() {
			t.Errorf("%s@%s: %+v", r.Name, r.Version, r)
		}
	}
	if list[2].UsedBy[0] != "refs/demo/current" || list[3].UsedBy[0] != "instances/abc/release" {
		t.Errorf("used by %q, %q", list[2].UsedBy, list[3].UsedBy)
	}

	// Resolve: by name (newest), by digest, by prefix, and failures.
	for ref, want := range map[string]string{
		"demo": v102.Digest, v101.Digest: v101.Digest, v101.Digest[:6]: v101.Digest, "sha256:" + other.Digest[:10]: other.Digest,
	} {
		r, err := s.Resolve(ref)
		if err != nil || r.Digest != want {
			t.Errorf("resolve %q: %v %v", ref, r, err)
		}
	}
	for ref, want := range map[string]error{"nope": ErrNotFound, v101.Digest[:5]: ErrNotFound, "sha256:zz": ErrNotFound} {
		if _, err := s.Resolve(ref); !errors.Is(err, want) {
			t.Errorf("resolve %q: %v, want %v", ref, err, want)
		}
	}
	// A capsule named like another release's digest prefix is ambiguous.
	installVersions(t, s, named(v101.Digest[:8], "9.9.9"))
	if _, err := s.Resolve(v101.Digest[:8]); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("name that is a digest prefix: %v", err)
	}
	if r, err := s.Resolve("sha256:" + v101.Digest[:8]); err != nil || r.Digest != v101.Digest {
		t.Errorf("forced digest: %v %v", r, err)
	}

	// GC keeps the newest of each name and what is referenced.
	dry, err := s.GC(context.Background(), GCOptions{DryRun: true, Keep: 1})
	must(t, err)
	if got := digests(dry); !slices.Equal(got, []string{"demo@1.0.1"}) {
		t.Errorf("dry run would remove %q", got)
	}
	if _, err := os.Stat(v101.Path); err != nil {
		t.Error("dry run removed:", err)
	}
	gone, err := s.GC(context.Background(), GCOptions{Keep: 1})
	must(t, err)
	if got := digests(gone); !slices.Equal(got, []string{"demo@1.0.1"}) {
		t.Errorf("removed %q", got)
	}
	if _, err := os.Stat(v101.Path); !errors.Is(err, os.ErrNotExist) {
		t.Error("not removed:", err)
	}
	must(t, os.Remove(filepath.Join(root, "refs/demo/current")))
	gone, err = s.GC(context.Background(), GCOptions{})
	must(t, err)
	want := []string{"demo@1.0.2", "demo@1.0.0", v101.Digest[:8] + "@9.9.9"}
	if got := digests(gone); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("removed %q", got)
	}
	if rels, leftovers := installed(t, root); !slices.Equal(rels, []string{other.Digest}) || len(leftovers) != 0 {
		t.Errorf("left %v %v", rels, leftovers)
	}
	if _, err := s.GC(context.Background(), GCOptions{Keep: -1}); err == nil {
		t.Error("negative keep accepted")
	}
}

func TestVerifyFindsChanges(t *testing.T) {
	root := storeRoot(t)
	s, err := Open(root)
	must(t, err)
	rel := installVersions(t, s, testManifest)[0]
	app := filepath.Join(rel.Path, "app")
	writable := func(p string) { must(t, os.Chmod(p, 0o755)) }

	writable(filepath.Join(app, "app"))
	writable(filepath.Join(app, "app/util.py"))
	must(t, os.WriteFile(filepath.Join(app, "app/util.py"), []byte("x = 2\n"), 0o644))
	must(t, os.Chmod(filepath.Join(app, "app/util.py"), 0o444))
	must(t, os.Remove(filepath.Join(app, "app/__init__.py")))
	must(t, os.WriteFile(filepath.Join(app, "app/evil.py"), []byte("x"), 0o444))
	must(t, os.Chmod(filepath.Join(app, "app"), 0o555))
	writable(filepath.Join(app, "bin/start.sh")) // mode only

	rep, err := s.Verify("demo")
	must(t, err)
	t.Logf("%+v", rep)
	if rep.OK() ||
		!slices.Equal(rep.Changed, []string{"app/app/util.py", "app/bin/start.sh"}) ||
		!slices.Equal(rep.Missing, []string{"app/app/__init__.py"}) ||
		!slices.Equal(rep.Added, []string{"app/app/evil.py"}) {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(rep.Reasons["app/app/util.py"], "bytes, expected") || !strings.Contains(rep.Reasons["app/bin/start.sh"], "mode 0755") {
		t.Errorf("reasons %q", rep.Reasons)
	}
}

// An edit of tori/metadata.json that keeps the index consistent is caught
// by rebuilding the canonical stream.
func TestVerifyCatchesEditedMetadata(t *testing.T) {
	root := storeRoot(t)
	s, err := Open(root)
	must(t, err)
	rel := installVersions(t, s, testManifest)[0]
	meta := filepath.Join(rel.Path, metadataName)
	b, err := os.ReadFile(meta)
	must(t, err)
	must(t, os.Chmod(filepath.Dir(meta), 0o755))
	must(t, os.Chmod(meta, 0o644))
	must(t, os.WriteFile(meta, []byte(strings.Replace(string(b), `"tori_run_version": "test"`, `"tori_run_version": "evil"`, 1)), 0o444))
	rep, err := s.Verify(rel.Digest)
	must(t, err)
	if rep.OK() || !slices.Equal(rep.Changed, []string{metadataName}) {
		t.Errorf("report %+v", rep)
	}
}
