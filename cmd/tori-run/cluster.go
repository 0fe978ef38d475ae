//go:build linux

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime/image"
	"github.com/tori-run/tori-run/runtime/incontainer"
)

func newExportImageCmd(g *globals) *cobra.Command {
	var out, tag, base string
	c := &cobra.Command{
		Use:   "export-image NAME|DIGEST -o FILE",
		Short: "Export an installed capsule as an OCI image archive",
		Long: `Write an installed release as an OCI image layout archive (oci-layout,
index.json, blobs/) that containerd, podman, Docker and Kubernetes run: the
release's app at /app, this (static) tori-run at /.tori/tori-run as the
entrypoint in container mode, and the capsule's layers: its rootfs layers,
or for layers: [host] a minimal base made from this host (the programs the
services name, their libraries, Python's standard library), or --base.

The same release gives the same bytes every time. See docs/CLUSTER.md.`,
		Example: `  tori-run export-image tori-metacognitive -o metacog.oci.tar
  ctr image import metacog.oci.tar
  skopeo copy oci-archive:metacog.oci.tar docker://registry.example/metacog:2.1.0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("export-image: -o FILE is required")
			}
			res, err := image.Export(args[0], out, image.Options{Root: g.root, Base: base, Tag: tag, Log: g.log})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s\t%s\t%s\n", out, res.Ref, res.Digest)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "the archive to write")
	c.Flags().StringVar(&tag, "tag", "", "reference name in index.json (default localhost/tori/NAME:VERSION)")
	c.Flags().StringVar(&base, "base", "", "an OCI image layout folder to put under the capsule instead of the minimal host base")
	return c
}

// runInContainer is run --in-container.
func (g *globals) runInContainer(cmd *cobra.Command, args []string) error {
	ref := ""
	if len(args) == 1 {
		ref = args[0]
	}
	res, err := incontainer.Run(cmd.Context(), ref, incontainer.Options{
		Root:        g.root,
		StateRoot:   envOr("TORI_STATE_ROOT", ""),
		StateSocket: envOr("TORI_STATE_SOCKET", ""),
		StatusFile:  envOr("TORI_STATUS_FILE", ""),
		Log:         g.log,
	}, g.stdout)
	if err != nil {
		return err
	}
	fmt.Fprint(g.stderr, res.Summary())
	if !res.OK() {
		return exitError{exitFailure}
	}
	return nil
}

func newContainerReadyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "container-ready",
		Short: "Exit 0 when the capsule of this container (container mode) is ready: an exec readiness probe",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := incontainer.Ready(envOr("TORI_STATUS_FILE", "")); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, "ready")
			return nil
		},
	}
}

func newExportManifestsCmd(g *globals) *cobra.Command {
	var dir, img, size string
	c := &cobra.Command{
		Use:   "export-manifests NAME|DIGEST",
		Short: "Write a Kubernetes Deployment and a Nomad job for an exported image",
		Long: `Write <dir>/kubernetes.yaml (a Deployment with a PersistentVolumeClaim for the
state, an exec readiness probe, memory and cpu limits from the manifest's
resources) and <dir>/nomad.hcl (a job for the docker driver with a host
volume for the state) for the image export-image makes of the release.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k8s, nomad, err := image.Manifests(args[0], image.ManifestOptions{Root: g.root, Image: img, StateSize: size})
			if err != nil {
				return err
			}
			if dir == "-" {
				fmt.Fprintf(g.stdout, "%s---\n%s", k8s, nomad)
				return nil
			}
			return image.WriteManifests(dir, k8s, nomad)
		},
	}
	c.Flags().StringVarP(&dir, "output", "o", ".", "folder to write kubernetes.yaml and nomad.hcl into; - prints both")
	c.Flags().StringVar(&img, "image", "", "the image reference (default localhost/tori/NAME:VERSION, as export-image tags it)")
	c.Flags().StringVar(&size, "state-size", "1Gi", "size of the state volume claim")
	return c
}
