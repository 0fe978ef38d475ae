//go:build linux

// Package initbin carries the small capsule init (cmd/tori-init) inside
// tori-run and puts it where a capsule can bind it.
//
// tori-run stays one file for its users: `make build` builds cmd/tori-init
// first (static, CGO_ENABLED=0, stripped) into runtime/initbin/tori-init
// with its SHA-256 beside it, then builds tori-run with the build tag
// toriinit, which embeds both (embed_linux.go). A build without the tag
// (`go build ./...`, `go test`, `go vet`, toritest in another module) embeds
// nothing, Embedded returns nil and tori-run binds itself as the init, as
// before (runtime logs that at debug).
//
// At a capsule's start Install writes the embedded bytes once per digest to
// a root-owned, content-addressed file under the run folder
// (/run/tori/init/<sha256>, mode 0555, tmpfs), which runtime binds
// read-only at /.tori/init. A memfd cannot be bind-mounted (it lives on the
// kernel's internal mount), and executing the host binary itself would pay
// all of tori-run's package inits in every capsule.
package initbin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// embedded and embeddedDigest are set by embed_linux.go (build tag
// toriinit): the bytes of cmd/tori-init and their SHA-256 in hex, computed
// by the Makefile so that no start hashes the binary again.
var embedded []byte
var embeddedDigest string

// Embedded returns the small init this tori-run carries and its SHA-256
// (hex), or nil and "" when it was built without one.
func Embedded() ([]byte, string) {
	if len(embedded) == 0 {
		return nil, ""
	}
	return embedded, strings.TrimSpace(embeddedDigest)
}

// Install makes sure dir/<digest> holds bin, executable, and returns its
// path. An existing file of that name is trusted when it is a regular file
// of bin's size, mode 0555, owned by us: dir is made 0700 and ours, so only
// we (root, or the rootless user) can have put it there. Otherwise bin is
// checked against digest, written to a temporary file and renamed into
// place, so that a capsule never binds a half-written init.
func Install(dir string, bin []byte, digest string) (string, error) {
	if len(digest) != sha256.Size*2 {
		return "", fmt.Errorf("the embedded init's digest %q: %d hex digits of a SHA-256 expected", digest, sha256.Size*2)
	}
	path := filepath.Join(dir, digest)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == int64(len(bin)) && st.Mode&0o7777 == 0o555 && int(st.Uid) == os.Geteuid() {
			return path, nil
		}
		return "", fmt.Errorf("%s: not the init this tori-run carries (mode %#o, uid %d, %d bytes; want a regular file, mode 0555, uid %d, %d bytes): remove it", path, st.Mode, st.Uid, st.Size, os.Geteuid(), len(bin))
	} else if !errors.Is(err, unix.ENOENT) {
		return "", &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	sum := sha256.Sum256(bin)
	if got := hex.EncodeToString(sum[:]); got != digest {
		return "", fmt.Errorf("the embedded init's SHA-256 is %s, its recorded digest %s: rebuild tori-run (make build)", got, digest)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("%s: the init cache must be a folder of uid %d that no one else may write (mode %#o, uid %d, %v)", dir, os.Geteuid(), st.Mode&0o7777, st.Uid, err)
	}
	tmp, err := os.CreateTemp(dir, ".tori-init-*")
	if err != nil {
		return "", err
	}
	_, werr := tmp.Write(bin)
	cerr := tmp.Chmod(0o555)
	// The run folder is a tmpfs: no fsync; a crash takes the cache with it.
	if err := errors.Join(werr, cerr, tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("writing the capsule init to %s: %w", tmp.Name(), err)
	}
	// Two tori-runs may install at once: the bytes are the same, the last
	// rename wins, and a capsule binds whichever inode it opened.
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return "", err
	}
	return path, nil
}
