//go:build linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostEtc is what a capsule on the host layer sees of the host's /etc: what
// programs need to look up users and hosts, resolve names, verify TLS, load
// shared libraries, tell the time zone and run an interpreter. It is an
// allow-list: everything else, shadow, gshadow, sudoers, ssh host keys,
// security/, PAM and service configuration, is absent, and a file the host
// adds to /etc later is too. Patterns are filepath.Match globs; entries the
// host lacks are skipped. docs/SECURITY.md lists the choices.
var hostEtc = []string{
	// users, groups, names, networks
	"passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf",
	"protocols", "services", "rpc", "networks", "ethertypes",
	// TLS trust
	"ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies",
	// the dynamic loader
	"ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	// time, locale, system identity
	"localtime", "timezone", "locale.alias", "locale.conf", "os-release", "debian_version", "lsb-release", "mtab",
	// what programs and interpreters read
	"alternatives", "mime.types", "mailcap", "magic", "magic.mime", "shells", "terminfo", "inputrc",
	"bash.bashrc", "profile", "profile.d", "fonts", "python3", "python3.*", "perl", "java-*",
}

// An etcEntry is one of the host's /etc entries the allow-list names: a
// file or folder to bind, or a symlink to recreate (a link into /usr or
// /proc works as it is: os-release, localtime, mtab); a link elsewhere
// (resolv.conf into /run) is bound as what it points to.
type etcEntry struct {
	name, link string
}

var etcOnce = sync.OnceValue(func() []etcEntry { return listEtc("/etc") })

func listEtc(dir string) []etcEntry {
	var out []etcEntry
	seen := map[string]bool{}
	for _, pat := range hostEtc {
		matches, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range matches {
			name := filepath.Base(p)
			if seen[name] {
				continue
			}
			seen[name] = true
			fi, err := os.Lstat(p)
			if err != nil {
				continue
			}
			e := etcEntry{name: name}
			if fi.Mode()&os.ModeSymlink != 0 {
				target, err := os.Readlink(p)
				if err != nil {
					continue
				}
				abs := target // as the capsule sees it, from its /etc
				if !filepath.IsAbs(abs) {
					abs = filepath.Join("/etc", target)
				}
				abs = filepath.Clean(abs)
				if under(abs, "/usr") || under(abs, "/proc") || under(abs, "/lib") {
					e.link = target
				} else if _, err := os.Stat(p); err != nil {
					continue // dangling
				}
			}
			out = append(out, e)
		}
	}
	return out
}

// under says whether p is dir or inside it (both clean and absolute).
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// prepareEtc makes the capsule's /etc: an empty folder on the read-only
// root, with the allow-list's symlinks; etcMounts binds the rest.
func prepareEtc(rootfs string) error {
	etc := filepath.Join(rootfs, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("preparing the capsule's /etc: %w", err)
	}
	for _, e := range etcOnce() {
		if e.link == "" {
			continue
		}
		if err := os.Symlink(e.link, filepath.Join(etc, e.name)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("preparing the capsule's /etc: %w", err)
		}
	}
	return nil
}

func etcMounts() []rspec.Mount {
	var out []rspec.Mount
	for _, e := range etcOnce() {
		if e.link != "" {
			continue
		}
		p := "/etc/" + e.name
		out = append(out, rspec.Mount{Destination: p, Type: "bind", Source: p, Options: []string{"rbind", roRecursive(), "nosuid", "nodev"}})
	}
	return out
}

// roRecursive is "rro" (every submount read-only too, with mount_setattr)
// where the kernel has it (5.12), else "ro".
var roRecursive = sync.OnceValue(func() string {
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		if v, err := parseKernel(unix.ByteSliceToString(u.Release[:])); err == nil && !v.less(kernelVersion{5, 12}) {
			return "rro"
		}
	}
	return "ro"
})
