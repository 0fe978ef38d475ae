// Package cluster tests exported capsule images on real container engines:
// a containerd started by the test with its own root, state and socket runs
// the image with ctr, tori-run as the container's PID 1 (container mode).
// Not part of the QEMU guest's packages: the guest has no containerd.
package cluster
