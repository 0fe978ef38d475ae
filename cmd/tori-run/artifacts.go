package main

import "github.com/spf13/cobra"

func newBuildCmd(g *globals) *cobra.Command {
	c := notYet("build --from-zip APP.zip | --from-dir DIR --manifest capsule.yml [--output F]", "Build a reproducible, content-addressed capsule archive", 3, cobra.NoArgs)
	c.Flags().String("from-zip", "", "")
	c.Flags().String("from-dir", "", "")
	c.Flags().String("manifest", "", "")
	c.Flags().String("output", "", "")
	return c
}

func newInstallCmd(g *globals) *cobra.Command {
	return notYet("install CAPSULE.tar.gz", "Verify and install a capsule under <root>/releases/<sha256>/", 3, cobra.ExactArgs(1))
}
func newListCmd(g *globals) *cobra.Command {
	return notYet("list", "List installed releases", 3, cobra.NoArgs, "json")
}
func newVerifyCmd(g *globals) *cobra.Command {
	return notYet("verify NAME|DIGEST", "Re-hash an installed release against its record", 3, cobra.ExactArgs(1))
}
func newGCCmd(g *globals) *cobra.Command {
	return notYet("gc [--dry-run] [--keep N]", "Remove releases nothing references", 3, cobra.NoArgs, "dry-run")
}
