package plan

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/specs"
)

// These tests need no root and no Linux: the plan is a pure function of
// the manifest, the facts and the input.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func manifest(t *testing.T, body string) *specs.Manifest {
	t.Helper()
	m, err := specs.Parse(strings.NewReader("name: x\nversion: \"1.0.0\"\n"+body), "capsule.yml")
	if err != nil {
		t.Fatalf("manifest:\n%s\n%v", body, err)
	}
	return m
}

func compile(t *testing.T, m *specs.Manifest, f Facts, edit ...func(*Input)) *Plan {
	t.Helper()
	in := Input{Manifest: m, ID: m.Name + "-0123abcd", Release: "r1", BuildSHA: "abc", Layout: layout.New("/opt/tori", "/run/tori", "")}
	for _, e := range edit {
		e(&in)
	}
	p, err := Compile(in, f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mount(s *rspec.Spec, dest string) *rspec.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dest {
			return &s.Mounts[i]
		}
	}
	return nil
}

func hasNS(s *rspec.Spec, ns rspec.LinuxNamespaceType) bool {
	return slices.ContainsFunc(s.Linux.Namespaces, func(n rspec.LinuxNamespace) bool { return n.Type == ns })
}

func allows(sc *rspec.LinuxSeccomp, name string) bool {
	for _, r := range sc.Syscalls {
		if slices.Contains(r.Names, name) && r.Action == rspec.ActAllow && len(r.Args) == 0 {
			return true
		}
	}
	return false
}

// TestGoldenMetacog: the reference capsule's config.json, from the assumed
// facts, is exactly testdata/metacog-config.json (go test -update rewrites
// it; the diff then shows what a change does to every capsule's spec).
// scripts/cross.sh checks that the Windows build prints the same.
func TestGoldenMetacog(t *testing.T) {
	m, err := specs.Load("../../examples/metacog/capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	m.Source = "capsule.yml" // the golden file does not depend on where the test runs
	p := compile(t, m, AssumedFacts(), func(in *Input) { in.ID = m.Name + "-<id>" })
	got, err := json.MarshalIndent(p.Spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "metacog-config.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("the spec of examples/metacog differs from %s (go test -update rewrites it; review the diff):\n%s", golden, firstDiff(string(want), string(got)))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n  golden: " + x + "\n  got:    " + y
		}
	}
	return ""
}

// TestSpecByFacts: what each fact changes in the spec, and nothing else.
func TestSpecByFacts(t *testing.T) {
	m := manifest(t, "entrypoint: /bin/true\nservices: [a]\nvolumes: [\"/srv/x:/x:ro\"]\n")
	v2 := AssumedFacts()
	v1 := AssumedFacts()
	v1.Cgroup = CgroupHybrid
	old := AssumedFacts()
	old.Kernel = "5.10.0-28-amd64"
	none := AssumedFacts()
	none.Cgroup = CgroupNone
	for _, tc := range []struct {
		name     string
		f        Facts
		cgroupNS bool
		clone3   bool
		ro       string
		cgroup   string
	}{
		{"cgroup v2: a cgroup namespace, clone3 allowed for the init", v2, true, true, "rro", "tori/x-0123abcd"},
		{"hybrid: no cgroup namespace, clone3 refused", v1, false, false, "rro", "tori/x-0123abcd"},
		{"kernel 5.10: ro binds, no rro", old, true, true, "ro", "tori/x-0123abcd"},
		{"no cgroups: no namespace, no path", none, false, false, "rro", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := compile(t, m, tc.f)
			s := p.Spec
			if hasNS(s, rspec.CgroupNamespace) != tc.cgroupNS {
				t.Errorf("cgroup namespace %v, want %v", !tc.cgroupNS, tc.cgroupNS)
			}
			if allows(s.Linux.Seccomp, "clone3") != tc.clone3 {
				t.Errorf("clone3 allowed %v, want %v", !tc.clone3, tc.clone3)
			}
			if got := mount(s, "/x").Options; !slices.Contains(got, tc.ro) {
				t.Errorf("read-only volume options %v, want %s", got, tc.ro)
			}
			if got := mount(s, "/usr").Options; !slices.Contains(got, tc.ro) {
				t.Errorf("/usr options %v, want %s", got, tc.ro)
			}
			if p.Cgroup != tc.cgroup || s.Linux.CgroupsPath != tc.cgroup {
				t.Errorf("cgroup %q (spec %q), want %q", p.Cgroup, s.Linux.CgroupsPath, tc.cgroup)
			}
		})
	}
}

// TestSpecByManifest: what each manifest field makes of the spec.
func TestSpecByManifest(t *testing.T) {
	f := AssumedFacts()
	for _, tc := range []struct {
		name, body string
		check      func(t *testing.T, p *Plan)
	}{
		{"defaults", "entrypoint: /bin/true\nservices: [a]\n", func(t *testing.T, p *Plan) {
			s := p.Spec
			if !reflect.DeepEqual(s.Process.Capabilities.Bounding, DefaultCaps) || !s.Process.NoNewPrivileges || !s.Root.Readonly {
				t.Errorf("process %+v", s.Process)
			}
			if !reflect.DeepEqual(s.Process.Args, []string{CapsuleBinary, InitArg}) {
				t.Errorf("args %v", s.Process.Args)
			}
			if hasNS(s, rspec.NetworkNamespace) || p.NetworkNone || !p.HostLayer {
				t.Error("a network namespace without network: none, or not the host layer")
			}
			if a := mount(s, CapsuleApp); a.Source != "/opt/tori/instances/x-0123abcd/app" || slices.Contains(a.Options, "ro") {
				t.Errorf("/app %+v", a)
			}
			if b := mount(s, CapsuleBinary); b.Source != f.Binary {
				t.Errorf("binary %+v", b)
			}
			if st := mount(s, "/run/tori"); st.Source != "/opt/tori/instances/x-0123abcd/state" || !slices.Contains(st.Options, "ro") {
				t.Errorf("/run/tori %+v", st)
			}
			// merged /usr: /bin is a link made in the root, not a bind.
			if mount(s, "/bin") != nil || !slices.Contains(p.RootLinks, HostEntry{Name: "/bin", Link: "usr/bin"}) {
				t.Errorf("/bin: mount %v, links %v", mount(s, "/bin"), p.RootLinks)
			}
			if mount(s, "/etc/passwd") == nil || mount(s, "/etc/shadow") != nil || mount(s, "/etc/localtime") != nil {
				t.Error("/etc: passwd bound, shadow absent, localtime a link")
			}
			if !slices.Contains(p.EtcLinks, HostEntry{Name: "localtime", Link: "/usr/share/zoneinfo/Etc/UTC"}) {
				t.Errorf("etc links %v", p.EtcLinks)
			}
		}},
		{"network none", "entrypoint: /bin/true\nservices: [a]\nnetwork: none\n", func(t *testing.T, p *Plan) {
			if !hasNS(p.Spec, rspec.NetworkNamespace) || !p.NetworkNone {
				t.Error("no network namespace")
			}
		}},
		{"read_only", "entrypoint: /bin/true\nservices: [a]\nread_only: true\n", func(t *testing.T, p *Plan) {
			if !slices.Contains(mount(p.Spec, CapsuleApp).Options, "ro") {
				t.Error("/app is writable")
			}
		}},
		{"capabilities", "entrypoint: /bin/true\nservices: [a]\ncapabilities: { drop: [CAP_KILL], add: [CAP_NET_ADMIN, CAP_CHOWN] }\n", func(t *testing.T, p *Plan) {
			if slices.Contains(p.Capabilities, "CAP_KILL") || !slices.Contains(p.Capabilities, "CAP_NET_ADMIN") ||
				len(p.Capabilities) != len(DefaultCaps) {
				t.Errorf("caps %v", p.Capabilities)
			}
		}},
		{"drop ALL, unconfined", "entrypoint: /bin/true\nservices: [a]\ncapabilities: { drop: [ALL] }\nseccomp: unconfined\n", func(t *testing.T, p *Plan) {
			if len(p.Capabilities) != 0 || p.Spec.Linux.Seccomp != nil {
				t.Errorf("caps %v, seccomp %v", p.Capabilities, p.Spec.Linux.Seccomp != nil)
			}
		}},
		{"ptrace only with CAP_SYS_PTRACE", "entrypoint: /bin/true\nservices: [a]\ncapabilities: { add: [CAP_SYS_PTRACE] }\n", func(t *testing.T, p *Plan) {
			if !allows(p.Spec.Linux.Seccomp, "ptrace") {
				t.Error("ptrace refused with CAP_SYS_PTRACE")
			}
		}},
		{"rootfs layers", "entrypoint: /bin/true\nservices: [a]\nlayers: [" + strings.Repeat("a", 64) + "]\n", func(t *testing.T, p *Plan) {
			if p.HostLayer || mount(p.Spec, "/usr") != nil || mount(p.Spec, "/etc/passwd") != nil || p.RootLinks != nil || p.EtcLinks != nil {
				t.Error("rootfs layers got the host's folders")
			}
		}},
		{"sockets", "entrypoint: /bin/true\nservices: [web, admin]\nsockets:\n  http: {listen: \"tcp://127.0.0.1:8080\", service: web}\n  ctl: {listen: \"unix:///run/ctl.sock\"}\n", func(t *testing.T, p *Plan) {
			if c := mount(p.Spec, "/run/ctl.sock"); c == nil || c.Source != "/run/tori/sockets/x/ctl.sock" {
				t.Errorf("ctl mount %+v", c)
			}
			if got := p.Service("web").Sockets; !reflect.DeepEqual(got, []string{"http", "ctl"}) {
				t.Errorf("web gets %v", got)
			}
			if got := p.Service("admin").Sockets; !reflect.DeepEqual(got, []string{"ctl"}) {
				t.Errorf("admin gets %v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, compile(t, manifest(t, tc.body), f)) })
	}
}

// TestDefaultFilterStricter: tori-run's default filter against moby's own:
// ptrace is refused, only the native architecture is admitted.
func TestDefaultFilterStricter(t *testing.T) {
	f := AssumedFacts()
	m := manifest(t, "entrypoint: /bin/true\nservices: [a]\n")
	sc, err := Seccomp(m, nil, DefaultCaps, true, f)
	if err != nil {
		t.Fatal(err)
	}
	if allows(sc, "ptrace") || allows(sc, "process_vm_readv") {
		t.Error("ptrace allowed without CAP_SYS_PTRACE")
	}
	if !reflect.DeepEqual(sc.Architectures, []rspec.Arch{rspec.ArchX86_64}) {
		t.Errorf("architectures %v, want only x86_64", sc.Architectures)
	}
	if sc.DefaultAction != rspec.ActErrno || !allows(sc, "read") {
		t.Errorf("default %s, read allowed %v", sc.DefaultAction, allows(sc, "read"))
	}
	// Moby's profile as it is keeps ptrace on this kernel.
	p, _ := DefaultProfile()
	moby, err := convertProfile(p, DefaultCaps, f)
	if err != nil || !allows(moby, "ptrace") {
		t.Errorf("moby's profile: ptrace %v, %v", allows(moby, "ptrace"), err)
	}
	// ... from kernel 4.8 on only: its rule is gated on the kernel fact.
	old := f
	old.Kernel = "4.4.0"
	p, _ = DefaultProfile()
	if moby, err = convertProfile(p, DefaultCaps, old); err != nil || allows(moby, "ptrace") {
		t.Errorf("moby's profile on 4.4: ptrace %v, %v", allows(moby, "ptrace"), err)
	}
}

func TestCompileErrors(t *testing.T) {
	f := AssumedFacts()
	for _, tc := range []struct {
		name, body string
		profile    string
		facts      func(*Facts)
		want       string
	}{
		{"unknown capability (a manifest not from the parser)", "", "", nil, "capsule.yml: capabilities.add: unknown capability CAP_FLY"},
		{"capability newer than the kernel", "capabilities: { add: [CAP_BPF] }\n", "", func(f *Facts) { f.LastCap = 37 }, "this kernel has no CAP_BPF (its last capability is CAP_AUDIT_READ)"},
		{"profile not JSON", "seccomp: p.json\n", "{", nil, "capsule.yml: seccomp: the profile p.json: decoding it"},
		{"empty profile", "seccomp: p.json\n", "{}", nil, "the profile p.json has no defaultAction and no syscalls"},
		{"bad kernel fact", "", "", func(f *Facts) { f.Kernel = "unknown" }, `kernel release "unknown"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ff := f
			if tc.facts != nil {
				tc.facts(&ff)
			}
			m := manifest(t, "entrypoint: /bin/true\nservices: [a]\n"+tc.body)
			if tc.body == "" && tc.facts == nil {
				m.Capabilities.Add = []string{"CAP_FLY"}
			}
			_, err := Compile(Input{Manifest: m, ID: "x-1", SeccompProfile: []byte(tc.profile)}, ff)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestServices: per service what is started and how it is supervised.
func TestServices(t *testing.T) {
	m := manifest(t, `env: { A: top }
resources: { MemoryMax: 1G }
services:
  db:
    command: ./db.py --fast
    restart: always
    stop_signal: SIGINT
    stop_timeout: 3s
    ready: { notify: true }
    health: { http: "http://127.0.0.1:8080/h", on_failure: ignore }
    resources: { MemoryMax: 256M }
  web:
    command: /bin/web
    after: [db]
    env: { A: web }
    ready: { tcp: "127.0.0.1:8080" }
    health: { exec: "/bin/check --deep" }
`)
	slice := specs.Resources{MemoryHigh: &specs.Size{Bytes: 512 << 20}}
	p := compile(t, m, AssumedFacts(), func(in *Input) {
		in.Python, in.UID, in.GID, in.Slice = "/usr/bin/python3.11", 1000, 1001, &slice
		in.Layout.StateRoot, in.StateLimits = "/var/lib/tori", StateLimits{Quota: 1 << 20, MaxTokensCeiling: 900}
	})
	if want := (State{Dir: "/var/lib/tori/x", Buffer: 1000, RatePerMin: m.Settings.MaxTokensPerMin, Limits: StateLimits{Quota: 1 << 20, MaxTokensCeiling: 900}}); p.State != want {
		t.Errorf("state %+v, want %+v", p.State, want)
	}
	db, web := p.Service("db"), p.Service("web")
	if p.Service("nope") != nil || db == nil || web == nil {
		t.Fatal("services by name")
	}
	if !reflect.DeepEqual(db.Argv, []string{"/usr/bin/python3.11", "db.py", "--fast"}) || !reflect.DeepEqual(web.Argv, []string{"/bin/web"}) {
		t.Errorf("argv %q %q", db.Argv, web.Argv)
	}
	if db.UID != 1000 || db.GID != 1001 || db.Dir != CapsuleApp || db.Cgroup != "svc-db" {
		t.Errorf("db %+v", db)
	}
	if !slices.Contains(web.Env, "A=web") || !slices.Contains(db.Env, "A=top") || !slices.Contains(db.Env, "TORI_SERVICE=db") ||
		!slices.Contains(db.Env, "TORI_RELEASE=r1") || !slices.Contains(db.Env, "TORI_BUILD_SHA=abc") || !slices.IsSorted(db.Env) {
		t.Errorf("env %q", db.Env)
	}
	if db.Resources.MemoryMax == nil || db.Resources.MemoryMax.Bytes != 256<<20 {
		t.Errorf("db resources %+v", db.Resources)
	}
	if p.Resources.MemoryMax.Bytes != 1<<30 || p.Resources.MemoryHigh == nil || p.Resources.MemoryHigh.Bytes != 512<<20 {
		t.Errorf("capsule resources, the slice over the manifest: %+v", p.Resources)
	}
	v := db.Supervision
	if v.Restart != "always" || v.StopSignal != syscall.SIGINT || v.StopTimeout != 3*time.Second ||
		v.Ready.Kind != "notify" || v.Health.Kind != "http" || v.Health.URL != "http://127.0.0.1:8080/h" || v.Health.OnFailure != "ignore" {
		t.Errorf("db supervision %+v ready %+v health %+v", v, v.Ready, v.Health)
	}
	w := web.Supervision
	if !reflect.DeepEqual(w.After, []string{"db"}) || w.Ready.Kind != "tcp" || w.Ready.Addr != "127.0.0.1:8080" ||
		w.Health.Kind != "exec" || !reflect.DeepEqual(w.Health.Exec, []string{"/bin/check", "--deep"}) {
		t.Errorf("web supervision %+v", w)
	}
}

// TestNoBuildSHA: a release without one says so, never "".
func TestNoBuildSHA(t *testing.T) {
	m := manifest(t, "entrypoint: /bin/true\nservices: [a]\n")
	env := ServiceEnv(m, &m.Services[0], "r", "")
	if !slices.Contains(env, "TORI_BUILD_SHA=none") {
		t.Errorf("env %q", env)
	}
}

// TestEtcEntry: links into /usr, /proc and /lib are made again; others
// are bound as their target unless they dangle.
func TestEtcEntry(t *testing.T) {
	for _, tc := range []struct {
		link   string
		exists bool
		want   HostEntry
		ok     bool
	}{
		{"", true, HostEntry{Name: "n"}, true},
		{"../usr/lib/os-release", true, HostEntry{Name: "n", Link: "../usr/lib/os-release"}, true},
		{"/proc/self/mounts", true, HostEntry{Name: "n", Link: "/proc/self/mounts"}, true},
		{"/run/systemd/resolve/stub-resolv.conf", true, HostEntry{Name: "n"}, true},
		{"/run/gone", false, HostEntry{}, false},
	} {
		got, ok := EtcEntry("n", tc.link, tc.exists)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("%q: %+v %v, want %+v %v", tc.link, got, ok, tc.want, tc.ok)
		}
	}
	for name, want := range map[string]bool{"passwd": true, "python3.11": true, "shadow": false, "sudoers": false, "ssh": false} {
		if EtcMatches(name) != want {
			t.Errorf("EtcMatches(%s) = %v", name, !want)
		}
	}
}

// TestSmallInit: with a small init on the host it is PID 1, bound at
// /.tori/init, and tori-run is bound only when given too.
func TestSmallInit(t *testing.T) {
	m := manifest(t, "entrypoint: /bin/true\nservices: [a]\n")
	f := AssumedFacts()
	f.Init, f.Binary = "/run/tori/init/abc", ""
	s := compile(t, m, f).Spec
	if !reflect.DeepEqual(s.Process.Args, []string{CapsuleInit, InitArg}) || mount(s, CapsuleInit) == nil || mount(s, CapsuleInit).Source != f.Init {
		t.Errorf("args %v, init mount %+v", s.Process.Args, mount(s, CapsuleInit))
	}
	if mount(s, CapsuleBinary) != nil {
		t.Error("tori-run bound without being given")
	}
	f.Binary = "/usr/local/bin/tori-run"
	if s := compile(t, m, f).Spec; mount(s, CapsuleBinary) == nil || s.Process.Args[0] != CapsuleInit {
		t.Error("tori-run given besides the init: not bound, or PID 1")
	}
}
