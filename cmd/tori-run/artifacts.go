package main

import (
	"fmt"
	"os"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
)

// progressWriter is stderr when it is a terminal, else nil (no progress).
func (g *globals) progressWriter() *os.File {
	if term.IsTerminal(int(g.stderr.Fd())) {
		return g.stderr
	}
	return nil
}

func newBuildCmd(g *globals) *cobra.Command {
	var (
		o       release.BuildOptions
		zstd    bool
		verbose bool
	)
	c := &cobra.Command{
		Use:   "build --from-zip APP.zip | --from-dir DIR --manifest capsule.yml [--output F]",
		Short: "Build a reproducible, content-addressed capsule archive",
		Long: `Build a capsule archive from an app (a zip or a folder) and its capsule.yml.
The same inputs give the same bytes and digest whatever the files' times,
order, owners or umask (docs/ARTIFACTS.md has the canonical form). The
manifest is validated as 'tori-run validate' does and every requirement must
be pinned. Backup and editor files (*.bak, *~, *.orig, *.swp, .#*) and VCS
folders are left out; --verbose lists what was.

Also callable as: capsbuild --from-zip APP.zip --manifest capsule.yml --output F`,
		Example: `  tori-run build --from-dir examples/metacog --manifest examples/metacog/capsule.yml
  capsbuild --from-zip tori_nodb.zip --manifest capsule.yml --output capsule-metacog.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (o.FromZip == "") == (o.FromDir == "") {
				return usagef("build: give exactly one of --from-zip and --from-dir")
			}
			if o.Manifest == "" {
				return usagef("build: --manifest is required")
			}
			o.ToolVersion = runtime.Version().Version
			o.SourceDateEpoch = os.Getenv("SOURCE_DATE_EPOCH")
			o.Log = g.log
			if zstd {
				o.Compression = release.Zstd
			}
			if p := g.progressWriter(); p != nil {
				o.Progress = p
			}
			start := time.Now()
			res, err := release.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if verbose {
				for _, x := range res.Excluded {
					fmt.Fprintf(g.stdout, "left out %s\n", x)
				}
			}
			sha := runtime.ShowBuildSHA(res.BuildSHA)
			fmt.Fprintf(g.stdout, "built %s\n  capsule %s %s, %d files, %s, build SHA %s, %d left out, in %s\n  digest  %s\n",
				res.Path, res.Name, res.Version, res.Files, units.BytesSize(float64(res.Bytes)), sha, len(res.Excluded),
				time.Since(start).Round(time.Millisecond), res.Digest)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.FromZip, "from-zip", "", "the app as a zip")
	f.StringVar(&o.FromDir, "from-dir", "", "the app as a folder")
	f.StringVar(&o.Manifest, "manifest", "", "the capsule.yml (required)")
	f.StringVar(&o.Output, "output", "", "archive to write (default capsule-NAME-VERSION-DIGEST.tar.gz in --output-dir)")
	f.StringVar(&o.OutputDir, "output-dir", "", "folder for the default-named archive (default: the current folder)")
	f.StringVar(&o.BuildSHA, "build-sha", "", "build SHA to record (default: the app folder's git HEAD, if any)")
	f.StringArrayVar(&o.Excludes, "exclude", nil, "also leave out paths matching this pattern (repeatable)")
	f.BoolVar(&zstd, "zstd", false, "compress with zstd instead of gzip")
	f.BoolVarP(&verbose, "verbose", "v", false, "list the files left out")
	return c
}
