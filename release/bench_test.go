//go:build linux

package release

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchApp writes an app of n files of about size bytes each, a third
// random bytes and the rest text, and returns its folder and total size.
func benchApp(b *testing.B, n, size int) (string, int64) {
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 1))
	words := strings.Fields("capsule release digest tori metacognition observer state proxy parquet service health ready")
	var total int64
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("pkg%02d/mod%03d/file%05d.dat", i%10, i%97, i))
		data := make([]byte, 0, size)
		if i%3 == 0 {
			for range size {
				data = append(data, byte(rng.Uint32()))
			}
		} else {
			for len(data) < size {
				data = append(data, words[rng.IntN(len(words))]...)
				data = append(data, " \n"[rng.IntN(2)])
			}
		}
		must(b, os.MkdirAll(filepath.Dir(p), 0o755))
		must(b, os.WriteFile(p, data, 0o644))
		total += int64(len(data))
	}
	must(b, os.WriteFile(filepath.Join(dir, "requirements.txt"), []byte("flask==3.0.0\n"), 0o644))
	must(b, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	must(b, os.WriteFile(filepath.Join(dir, "bin/start.sh"), []byte("#!/bin/sh\n"), 0o755))
	return dir, total
}

func BenchmarkBuild(b *testing.B) {
	dir, total := benchApp(b, 1000, 10<<10)
	manifest := writeManifest(b, b.TempDir(), testManifest)
	out := b.TempDir()
	b.SetBytes(total)
	for b.Loop() {
		if _, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: manifest, OutputDir: out}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInstall(b *testing.B) {
	dir, total := benchApp(b, 1000, 10<<10)
	res, err := Build(context.Background(), BuildOptions{FromDir: dir, Manifest: writeManifest(b, b.TempDir(), testManifest), OutputDir: b.TempDir()})
	must(b, err)
	b.SetBytes(total)
	for b.Loop() {
		s, err := Open(filepath.Join(storeRoot(b), fmt.Sprint(time.Now().UnixNano())))
		must(b, err)
		if _, _, err := s.Install(context.Background(), res.Path); err != nil {
			b.Fatal(err)
		}
	}
}
