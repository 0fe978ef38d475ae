// Command bench measures release.Build and release.Store.Install on a
// generated app; bench.sh runs it beside tar and sha256sum.
//
//	bench gen DIR [FILES BYTES]          write the app (default 10,000 files, ~100 MB)
//	bench build APP MANIFEST OUTDIR [zstd] build; prints "build SECONDS MB/s ARCHIVE"
//	bench install ARCHIVE ROOT           install; prints "install SECONDS MB/s"
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/release"
)

const manifest = `name: bench
version: "1.0.0"
entrypoint: bin/start.sh
services: [web]
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: bench gen DIR | build APP MANIFEST OUTDIR | install ARCHIVE ROOT")
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.DebugLevel)
	switch {
	case args[0] == "gen" && (len(args) == 2 || len(args) == 4):
		files, bytes := 10_000, int64(100_000_000)
		if len(args) == 4 {
			if _, err := fmt.Sscan(args[2], &files); err != nil {
				return fmt.Errorf("gen: FILES %q: %w", args[2], err)
			}
			if _, err := fmt.Sscan(args[3], &bytes); err != nil {
				return fmt.Errorf("gen: BYTES %q: %w", args[3], err)
			}
		}
		return gen(args[1], files, bytes)
	case args[0] == "build" && (len(args) == 4 || len(args) == 5):
		comp := release.Gzip
		if len(args) == 5 {
			comp = release.Compression(args[4])
		}
		start := time.Now()
		res, err := release.Build(context.Background(), release.BuildOptions{
			FromDir: args[1], Manifest: args[2], OutputDir: args[3], Compression: comp,
			Log: log.With().Str("step", "build").Logger(),
		})
		if err != nil {
			return err
		}
		report("build", time.Since(start), res.Bytes, res.Path)
		return nil
	case args[0] == "install" && len(args) == 3:
		s, err := release.Open(args[2], release.WithLogger(log.With().Str("step", "install").Logger()))
		if err != nil {
			return err
		}
		start := time.Now()
		rel, _, err := s.Install(context.Background(), args[1])
		if err != nil {
			return err
		}
		report("install", time.Since(start), rel.Size, rel.Path)
		return nil
	}
	return fmt.Errorf("bad arguments %q", args)
}

func report(step string, d time.Duration, bytes int64, path string) {
	fmt.Printf("%s %.3f %.1f %s\n", step, d.Seconds(), float64(bytes)/1e6/d.Seconds(), path)
}

// gen writes an app of n files totalling about size bytes: every third
// file random bytes, the others text, in 100 folders.
func gen(dir string, n int, size int64) error {
	rng := rand.New(rand.NewPCG(42, 42))
	words := strings.Fields(`def class return import self state release capsule digest service health
		ready tori observer metacog parquet token novelty threshold the of and to in for with from value key`)
	avg := int(size / int64(n))
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("pkg%02d/mod%02d/file%05d.py", i%10, i%100/10, i))
		length := avg/2 + rng.IntN(avg)
		data := make([]byte, 0, length+16)
		if i%3 == 0 {
			for len(data) < length {
				data = append(data, byte(rng.Uint32()))
			}
		} else {
			for len(data) < length {
				data = append(data, words[rng.IntN(len(words))]...)
				data = append(data, " \n"[rng.IntN(2)])
			}
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/start.sh"), []byte("#!/bin/sh\nexec python3 -m app\n"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(filepath.Dir(dir), "capsule.yml"), []byte(manifest), 0o644)
}
