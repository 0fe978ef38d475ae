package specs

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		inf  bool
		err  bool
	}{
		{"16G", 16 << 30, false, false}, {"512M", 512 << 20, false, false}, {"1K", 1024, false, false},
		{"1T", 1 << 40, false, false}, {"4096", 4096, false, false}, {"1.5G", 3 << 29, false, false},
		{"10B", 10, false, false}, {"infinity", 0, true, false},
		{"16Q", 0, false, true}, {"16g", 0, false, true}, {"16GB", 0, false, true}, {"-1G", 0, false, true},
		{"", 0, false, true}, {"G", 0, false, true}, {"99999999E", 0, false, true}, {"Infinity", 0, false, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || (err == nil && (got.Bytes != tc.want || got.Infinity != tc.inf)) {
			t.Errorf("ParseSize(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestParsePercentWeightLimit(t *testing.T) {
	for in, want := range map[string]float64{"80%": 80, "12.5%": 12.5, "200%": 200} {
		if got, err := ParsePercent(in); err != nil || float64(got) != want {
			t.Errorf("ParsePercent(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"80", "0%", "-5%", "%", "80 %", "abc%", "500000%"} {
		if _, err := ParsePercent(in); err == nil {
			t.Errorf("ParsePercent(%q) accepted", in)
		}
	}
	for _, in := range []string{"1", "100", "10000"} {
		if _, err := ParseWeight(in); err != nil {
			t.Errorf("ParseWeight(%q): %v", in, err)
		}
	}
	for _, in := range []string{"0", "10001", "-1", "1.5", "idle", ""} {
		if _, err := ParseWeight(in); err == nil {
			t.Errorf("ParseWeight(%q) accepted", in)
		}
	}
	if l, err := ParseLimit("infinity"); err != nil || !l.Infinity {
		t.Errorf("ParseLimit(infinity) = %v, %v", l, err)
	}
	for _, in := range []string{"0", "-3", "50%", "many"} {
		if _, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) accepted", in)
		}
	}
}

func TestParseCPUSet(t *testing.T) {
	for in, want := range map[string]string{"0-1": "0-1", "0-1,3": "0-1,3", "3,0,1": "0-1,3", "0 2 4-6": "0,2,4-6", "5": "5", "1-1": "1"} {
		got, err := ParseCPUSet(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseCPUSet(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a", "3-1", "1-", "-1", "0-99999", ",,"} {
		if _, err := ParseCPUSet(in); err == nil {
			t.Errorf("ParseCPUSet(%q) accepted", in)
		}
	}
}

func TestParseSignalDuration(t *testing.T) {
	for in, want := range map[string]int{"SIGTERM": 15, "TERM": 15, "SIGINT": 2, "SIGKILL": 9, "HUP": 1} {
		if s, err := ParseSignal(in); err != nil || int(s.Num) != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, s, err)
		}
	}
	for _, in := range []string{"SIGFOO", "sigterm", "15", ""} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) accepted", in)
		}
	}
	if d, err := ParseDuration("1m30s"); err != nil || d != 90*time.Second {
		t.Errorf("ParseDuration = %v, %v", d, err)
	}
	for _, in := range []string{"10", "-1s", "fast", ""} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestSettingsFromEnvironment(t *testing.T) {
	if n, err := ParseIntSetting("MAX_TOKENS_PER_MIN", "200", 1, 1000); err != nil || n != 200 {
		t.Errorf("got %d, %v", n, err)
	}
	for _, v := range []string{"", "lots", "0", "2e3", "99999999999999999999", " 200"} {
		_, err := ParseIntSetting("MAX_TOKENS_PER_MIN", v, 1, 1000)
		if err == nil || !strings.Contains(err.Error(), "MAX_TOKENS_PER_MIN=") || !strings.Contains(err.Error(), "expected an integer") {
			t.Errorf("%q: error %v must name the variable and say what was expected", v, err)
		}
	}
	if _, err := ParseDurationSetting("TORI_STOP_TIMEOUT", "soon"); err == nil || !strings.Contains(err.Error(), "TORI_STOP_TIMEOUT") {
		t.Errorf("duration setting error: %v", err)
	}
	if _, err := ParseSizeSetting("TORI_LOG_MAX_SIZE", "infinity"); err == nil || !strings.Contains(err.Error(), "TORI_LOG_MAX_SIZE") {
		t.Errorf("size setting error: %v", err)
	}
}

func TestSlice(t *testing.T) {
	r, err := LoadSlice("testdata/slices/seed.slice")
	if err != nil {
		t.Fatal(err)
	}
	if *r.CPUQuota != 80 || r.MemoryMax.Bytes != 16<<30 || *r.IOWeight != 100 || r.TasksMax != nil {
		t.Errorf("seed slice = %+v", r)
	}
	_, err = LoadSlice("testdata/slices/bad.slice")
	want := []string{
		`testdata/slices/bad.slice:4: CPUQuota: "eighty" is not a percentage`,
		`testdata/slices/bad.slice:5: MemorySwapMax: unknown or unsupported directive`,
		`testdata/slices/bad.slice:6: MemoryMax: "16Q" is not a size`,
		`testdata/slices/bad.slice:9: "garbage line" is not an assignment`,
		`testdata/slices/bad.slice:10: Service: unknown section [Service]`,
	}
	if err == nil {
		t.Fatal("bad slice accepted")
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %s\nwant prefix %s", i, got[i], want[i])
		}
	}
	// A slice overrides the manifest, directive by directive; an empty
	// assignment resets.
	over, err := ParseSlice(strings.NewReader("[Slice]\nMemoryMax=1G\nTasksMax=10\nTasksMax=\n"), "x.slice")
	if err != nil {
		t.Fatal(err)
	}
	q, w := Percent(50), uint64(7)
	base := Resources{CPUQuota: &q, CPUWeight: &w, MemoryMax: &Size{Bytes: 5}}
	m := base.Override(over)
	if *m.CPUQuota != 50 || *m.CPUWeight != 7 || m.MemoryMax.Bytes != 1<<30 || m.TasksMax != nil {
		t.Errorf("override = %+v", m)
	}
	if _, err := ParseSlice(strings.NewReader("# nothing\n"), "empty.slice"); err == nil || !strings.Contains(err.Error(), "no [Slice] section") {
		t.Errorf("empty slice: %v", err)
	}
}

func TestRequirements(t *testing.T) {
	fsys := fstest.MapFS{
		"requirements_nodb.txt": {Data: []byte(strings.Join([]string{
			"# pinned for capsules",
			"",
			"pyarrow~=15.0  # columnar",
			"pandas==2.2.1 ; python_version >= \"3.9\"",
			"requests[socks]==2.31.0 \\",
			"    --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f",
			"--index-url https://pypi.org/simple",
			"-r more/extra.txt",
		}, "\n"))},
		"more/extra.txt": {Data: []byte("numpy===1.26.4\n")},
		"bad.txt": {Data: []byte(strings.Join([]string{
			"numpy>=1.20",
			"pandas",
			"scipy==1.*",
			"attrs>=22,<24",
			"-e git+https://example.com/x.git#egg=x",
			"foo @ https://example.com/foo.whl",
			"bar~=2",
			"-r missing.txt",
			"-r ../outside.txt",
			"--weird-option",
		}, "\n"))},
	}
	reqs, err := CheckRequirements(fsys, "requirements_nodb.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, r.Name+r.Operator+r.Version)
	}
	if strings.Join(got, " ") != "pyarrow~=15.0 pandas==2.2.1 requests==2.31.0 numpy===1.26.4" {
		t.Errorf("requirements = %v", got)
	}
	_, err = CheckRequirements(fsys, "bad.txt")
	if err == nil {
		t.Fatal("unpinned requirements accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 10 {
		t.Fatalf("want one error per bad line (10), got %d:\n%v", len(lines), err)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, "bad.txt:") {
			t.Errorf("line %d: %s does not name the file and line", i+1, l)
		}
	}
	if _, err := CheckRequirements(fsys, "nope.txt"); err == nil || !strings.Contains(err.Error(), "not in the app") {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "name: x\n", "services: [a]\n", "{", "a: &a [*a]\n",
		"name: x\nversion: \"1.0.0\"\nentrypoint: e\nservices:\n  a: {after: [b]}\n  b: {after: [a]}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(strings.NewReader(string(data)), "fuzz.yml")
		if (m == nil) == (err == nil) {
			t.Fatalf("exactly one of manifest and error must be set: %v %v", m, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

func FuzzParseSlice(f *testing.F) {
	f.Add([]byte("[Slice]\nCPUQuota=80%\nMemoryMax=16G\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseSlice(strings.NewReader(string(data)), "fuzz.slice")
	})
}

func TestCheckApp(t *testing.T) {
	m, err := Load("testdata/good/seed-capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	good := fstest.MapFS{
		"requirements_nodb.txt":                   {Data: []byte("pyarrow~=15.0\n")},
		"python/core/start_true_metacognition.py": {Data: []byte("#!/usr/bin/env python3\n"), Mode: 0o755},
	}
	if err := CheckApp(m, good); err != nil {
		t.Errorf("good app: %v", err)
	}
	// A .py entrypoint runs with the capsule's Python: a zip made on
	// Windows carries no modes, and that is fine.
	windows := fstest.MapFS{
		"requirements_nodb.txt":                   {Data: []byte("pyarrow~=15.0\n")},
		"python/core/start_true_metacognition.py": {Data: []byte("print(1)\n"), Mode: 0o644},
	}
	if err := CheckApp(m, windows); err != nil {
		t.Errorf("a .py entrypoint without exec bit: %v", err)
	}
	bad := fstest.MapFS{
		"requirements_nodb.txt":                   {Data: []byte("pyarrow>=15\n")},
		"python/core/start_true_metacognition.py": {Mode: fs.ModeDir | 0o755},
	}
	err = CheckApp(m, bad)
	if err == nil || !strings.Contains(err.Error(), "requirements_nodb.txt:1:") || !strings.Contains(err.Error(), "is a folder") {
		t.Errorf("bad app: %v", err)
	}
	// Other programs keep the exec-bit rule.
	m.Services[0].Command = []string{"bin/start.sh"}
	err = CheckApp(m, fstest.MapFS{"requirements_nodb.txt": {Data: []byte("a==1\n")}, "bin/start.sh": {Data: []byte("echo\n"), Mode: 0o644}})
	if err == nil || !strings.Contains(err.Error(), "is not executable") {
		t.Errorf("a shell script without exec bit: %v", err)
	}
	m.Services[0].Command = []string{"main.py"}
	if err := CheckApp(m, fstest.MapFS{"requirements_nodb.txt": {Data: []byte("a==1\n")}}); err == nil || !strings.Contains(err.Error(), "main.py is not in the app") {
		t.Errorf("a bare .py name is the app's: %v", err)
	}
	if err := CheckApp(m, fstest.MapFS{}); err == nil || !strings.Contains(err.Error(), "not in the app") {
		t.Errorf("empty app: %v", err)
	}
}

func TestSizeString(t *testing.T) {
	for in, want := range map[string]string{"16G": "16G", "1.5G": "1536M", "4096": "4K", "1000": "1000", "0": "0", "infinity": "infinity"} {
		s, err := ParseSize(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseSize(%q).String() = %q, %v; want %q", in, s.String(), err, want)
		}
	}
}
