// Package image exports an installed capsule release as an OCI image layout
// archive that containerd, podman, Docker and Kubernetes run unchanged: the
// release's app at /app, a static tori-run at /.tori/tori-run as the
// entrypoint (container mode), and the capsule's layers underneath (its
// rootfs layers, a minimal base made from the host for layers: [host], or an
// OCI layout the user gives). The same release exported twice gives the same
// bytes: fixed times, sorted entries, owner 0, deterministic gzip.
//
// The OCI structures (manifest, config, index, blobs) are
// go-containerregistry's; this package only decides what goes in each layer.
// It imports specs and release, nothing that runs a capsule. See
// docs/CLUSTER.md.
package image
