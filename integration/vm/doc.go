// Command vm runs Go test binaries as root inside a cgroup-v2-only Linux guest under QEMU: the test host
// for what the development machines (hybrid cgroups) cannot show. make test-vm runs it:
//
//	go run ./integration/vm -pkgs ./cgroups/,./overlay/,./runtime/,./integration/vm/ [-run REGEXP] [-timeout 20m]
//
// It takes Debian's stock kernel (apt-get download, cached), builds a static tori-run and a static test
// binary per package, packs them with a static busybox into an initramfs, boots it with QEMU (TCG) and
// streams the guest's go test -v output, prefixed by package. It exits 1 if a test binary fails, if the
// guest does not finish within -timeout (QEMU is then killed), or if any exit status is missing.
//
// Tests that must run only in the guest check TORI_VM_GUEST=1 (set by the guest's /init) and skip
// elsewhere; tests that need the CLI find it through TORI_RUN_BINARY. See README.md for the design, the
// guest's layout and timings.
package main
