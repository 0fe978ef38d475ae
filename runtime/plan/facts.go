package plan

import (
	"fmt"
	"path"
	"runtime"
	"strings"
)

// CgroupMode is how the host's cgroups are mounted.
type CgroupMode string

// The cgroup modes.
const (
	CgroupV1     CgroupMode = "v1"     // v1 hierarchies only
	CgroupHybrid CgroupMode = "hybrid" // v1 controllers, cgroup2 mounted beside them
	CgroupV2     CgroupMode = "v2"     // unified: one cgroup2 hierarchy
	// CgroupNone: the capsule gets no cgroup (a run without root and
	// without a delegated subtree): no cgroup namespace, no cgroup path.
	CgroupNone CgroupMode = "none"
)

// Facts are what the plan needs to know of the host, probed there by the
// runtime (runtime/facts_linux.go) or, off Linux and with --assume-host,
// assumed (Assumed). Nothing in the plan looks at the host itself.
type Facts struct {
	// Cgroup is the host's cgroup mode. On v2 the capsule gets a cgroup
	// namespace, and the init starts services with clone3.
	Cgroup CgroupMode `json:"cgroup"`
	// Kernel is the kernel's release (uname -r): seccomp rules gated on a
	// minimum kernel, and recursive read-only binds ("rro", 5.12 on).
	Kernel string `json:"kernel"`
	// LastCap is the kernel's last capability's number
	// (/proc/sys/kernel/cap_last_cap): a capsule may add no later one.
	LastCap int `json:"last_cap"`
	// Arch is the GOARCH the capsule runs on ("": this build's).
	Arch string `json:"arch,omitempty"`
	// HostDirs are the host's system folders (of HostSystemDirs) the host
	// layer binds: folders, or symlinks made again in the capsule's root
	// (merged /usr: /bin -> usr/bin). A folder the host lacks is absent.
	HostDirs []HostEntry `json:"host_dirs"`
	// Etc are the entries of the host's /etc the allow-list (EtcAllowList)
	// matches, bound or made again as symlinks in the capsule's /etc.
	Etc []HostEntry `json:"etc"`
	// Binary is tori-run's own binary on the host, bound at /.tori/tori-run
	// ("" with Init: not bound).
	Binary string `json:"binary"`
	// Init is a small capsule init on the host, bound at /.tori/init and
	// run as the capsule's PID 1 ("": Binary is the init).
	Init string `json:"init,omitempty"`
	// Assumed names the facts that were assumed, not probed: they are
	// printed with the spec so that no one mistakes them for a host's.
	Assumed []string `json:"assumed,omitempty"`
}

// HostEntry is a file or folder of the host: Link, when it is a symlink
// made again as it is (its target), else empty: bound from the host.
type HostEntry struct {
	Name string `json:"name"`
	Link string `json:"link,omitempty"`
}

func (f Facts) arch() string {
	if f.Arch != "" {
		return f.Arch
	}
	return runtime.GOARCH
}

// HostSystemDirs are bound read-only into a capsule on the host layer; the
// host's /etc is not among them: only EtcAllowList of it is.
var HostSystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// EtcAllowList is what a capsule on the host layer sees of the host's
// /etc: what programs need to look up users and hosts, resolve names,
// verify TLS, load shared libraries, tell the time zone and run an
// interpreter. Everything else, shadow, gshadow, sudoers, ssh host keys,
// security/, PAM and service configuration, is absent, and a file the host
// adds to /etc later is too. Patterns are path.Match globs; entries the host
// lacks are skipped. docs/SECURITY.md lists the choices.
var EtcAllowList = []string{
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

// EtcEntry says whether and how the host's /etc/NAME enters a capsule:
// link is the symlink's target (or "" for a file or folder), target
// whether a symlink's target exists. A symlink into /usr, /proc or /lib
// works as it is and is made again; one elsewhere (resolv.conf into /run)
// is bound as what it points to, unless it dangles.
func EtcEntry(name, link string, targetExists bool) (HostEntry, bool) {
	if link == "" {
		return HostEntry{Name: name}, true
	}
	abs := link // as the capsule sees it, from its /etc
	if !path.IsAbs(abs) {
		abs = path.Join("/etc", link)
	}
	abs = path.Clean(abs)
	if Under(abs, "/usr") || Under(abs, "/proc") || Under(abs, "/lib") {
		return HostEntry{Name: name, Link: link}, true
	}
	return HostEntry{Name: name}, targetExists
}

// EtcMatches says whether the allow-list names the /etc entry name.
func EtcMatches(name string) bool {
	for _, pat := range EtcAllowList {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// Under says whether p is dir or inside it (both clean and absolute).
func Under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// KernelVersion is a kernel's MAJOR.MINOR.
type KernelVersion struct{ Major, Minor int }

// ParseKernel reads MAJOR.MINOR from a kernel release ("6.1.0-18-amd64").
func ParseKernel(release string) (KernelVersion, error) {
	var v KernelVersion
	if _, err := fmt.Sscanf(release, "%d.%d", &v.Major, &v.Minor); err != nil {
		return v, fmt.Errorf("kernel release %q: expected MAJOR.MINOR...: %w", release, err)
	}
	return v, nil
}

// Less says whether v is older than w.
func (v KernelVersion) Less(w KernelVersion) bool {
	return v.Major < w.Major || (v.Major == w.Major && v.Minor < w.Minor)
}

// AssumedFacts are the facts `tori-run spec` states off Linux (and with
// --assume-host on Linux): a current Debian 12 host with cgroup v2, merged
// /usr and the usual /etc, tori-run installed as /usr/local/bin/tori-run.
// No host is probed; the spec printed names them (Assumed).
func AssumedFacts() Facts {
	return Facts{
		Cgroup:  CgroupV2,
		Kernel:  "6.1.0",
		LastCap: 40, // CAP_CHECKPOINT_RESTORE, Linux 5.9 on
		Arch:    "amd64",
		HostDirs: []HostEntry{{Name: "/usr"}, {Name: "/bin", Link: "usr/bin"}, {Name: "/sbin", Link: "usr/sbin"},
			{Name: "/lib", Link: "usr/lib"}, {Name: "/lib64", Link: "usr/lib64"}},
		Etc: []HostEntry{{Name: "passwd"}, {Name: "group"}, {Name: "hosts"}, {Name: "resolv.conf"}, {Name: "nsswitch.conf"},
			{Name: "host.conf"}, {Name: "gai.conf"}, {Name: "protocols"}, {Name: "services"}, {Name: "networks"},
			{Name: "ethertypes"}, {Name: "ssl"}, {Name: "ca-certificates"}, {Name: "ca-certificates.conf"},
			{Name: "ld.so.cache"}, {Name: "ld.so.conf"}, {Name: "ld.so.conf.d"},
			{Name: "localtime", Link: "/usr/share/zoneinfo/Etc/UTC"}, {Name: "timezone"},
			{Name: "os-release", Link: "../usr/lib/os-release"}, {Name: "debian_version"}, {Name: "mtab", Link: "../proc/self/mounts"},
			{Name: "alternatives"}, {Name: "mime.types"}, {Name: "shells"}, {Name: "terminfo"}, {Name: "inputrc"},
			{Name: "bash.bashrc"}, {Name: "profile"}, {Name: "profile.d"}, {Name: "python3"}, {Name: "python3.11"}, {Name: "perl"}},
		Binary:  "/usr/local/bin/tori-run",
		Assumed: []string{"cgroup", "kernel", "last_cap", "arch", "host_dirs", "etc", "binary"},
	}
}

// Stated names each assumed fact with its value, for the line that says
// what a spec was compiled from.
func (f Facts) Stated() []string {
	var out []string
	for _, a := range f.Assumed {
		v := ""
		switch a {
		case "cgroup":
			v = string(f.Cgroup)
		case "kernel":
			v = f.Kernel
		case "last_cap":
			v = fmt.Sprint(f.LastCap)
		case "arch":
			v = f.arch()
		case "host_dirs":
			var ds []string
			for _, d := range f.HostDirs {
				if d.Link != "" {
					ds = append(ds, d.Name+" -> "+d.Link)
				} else {
					ds = append(ds, d.Name)
				}
			}
			v = strings.Join(ds, ", ")
		case "etc":
			v = fmt.Sprintf("%d entries of a Debian 12 /etc", len(f.Etc))
		case "binary":
			v = f.Binary
		}
		out = append(out, a+" "+v)
	}
	return out
}
