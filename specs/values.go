package specs

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The value parsers below return a message (not an error) so that the caller
// can attach file, line and field. Each message says what was expected.

// Size is a byte count in systemd's syntax: a number with an optional
// 1024-based suffix K, M, G, T, P or E (or B for bytes), or "infinity".
type Size struct {
	Bytes    uint64
	Infinity bool
}

// String gives the size in systemd's syntax, with the largest suffix that
// divides it exactly (16G, 1536M).
func (s Size) String() string {
	if s.Infinity {
		return "infinity"
	}
	n, unit := s.Bytes, ""
	for _, u := range []string{"K", "M", "G", "T", "P", "E"} {
		if n == 0 || n%1024 != 0 {
			break
		}
		n, unit = n/1024, u
	}
	return strconv.FormatUint(n, 10) + unit
}

var sizeRe = lazyRE(`^([0-9]+(?:\.[0-9]+)?)([BKMGTPE]?)$`)

const sizeExpect = "expected bytes with an optional 1024-based suffix K, M, G, T, P or E (e.g. 512M, 16G) or infinity"

// ParseSize parses a systemd size such as 16G, 1.5G, 4096 or infinity.
func ParseSize(s string) (Size, error) {
	if s == "infinity" {
		return Size{Infinity: true}, nil
	}
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return Size{}, fmt.Errorf("%q is not a size; %s", s, sizeExpect)
	}
	mult := float64(1)
	if m[2] != "" && m[2] != "B" {
		mult = math.Pow(1024, float64(strings.Index("KMGTPE", m[2])+1))
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil || f*mult >= math.MaxUint64/2 {
		return Size{}, fmt.Errorf("%q is too large; %s", s, sizeExpect)
	}
	return Size{Bytes: uint64(f * mult)}, nil
}

// Percent is a CPU quota in percent of one CPU: 80% is 0.8 CPUs, 200% two.
type Percent float64

var percentRe = lazyRE(`^([0-9]+(?:\.[0-9]+)?)%$`)

// ParsePercent parses a positive percentage such as 80% or 12.5%.
func ParsePercent(s string) (Percent, error) {
	m := percentRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a percentage; expected a number followed by %% (e.g. 80%%, 150%% for 1.5 CPUs)", s)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil || f <= 0 || f > 100*4096 {
		return 0, fmt.Errorf("%q is out of range; expected more than 0%% and at most %d%% (100%% per CPU)", s, 100*4096)
	}
	return Percent(f), nil
}

// ParseWeight parses a CPUWeight or IOWeight: an integer from 1 to 10000.
func ParseWeight(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 1 || n > 10000 {
		return 0, fmt.Errorf("%q is not a weight; expected an integer from 1 to 10000 (default 100)", s)
	}
	return n, nil
}

// Limit is a count with an optional "infinity", as TasksMax takes.
type Limit struct {
	N        uint64
	Infinity bool
}

func (l Limit) String() string {
	if l.Infinity {
		return "infinity"
	}
	return strconv.FormatUint(l.N, 10)
}

// ParseLimit parses a positive integer or "infinity".
func ParseLimit(s string) (Limit, error) {
	if s == "infinity" {
		return Limit{Infinity: true}, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 1 || n > math.MaxInt32 {
		return Limit{}, fmt.Errorf("%q is not a task limit; expected a positive integer or infinity", s)
	}
	return Limit{N: n}, nil
}

// CPUSet is a set of CPU numbers, kept in the canonical list form the kernel
// writes to cpuset.cpus (e.g. "0-1,3").
type CPUSet struct {
	CPUs []int
}

func (c CPUSet) String() string {
	var parts []string
	for i := 0; i < len(c.CPUs); {
		j := i
		for j+1 < len(c.CPUs) && c.CPUs[j+1] == c.CPUs[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(c.CPUs[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", c.CPUs[i], c.CPUs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

const maxCPU = 8191

// ParseCPUSet parses systemd's AllowedCPUs syntax: CPU numbers and ranges
// separated by commas or spaces, e.g. "0-1,3".
func ParseCPUSet(s string) (CPUSet, error) {
	bad := func(why string) (CPUSet, error) {
		return CPUSet{}, fmt.Errorf("%q is not a CPU list (%s); expected CPU numbers and ranges like 0-1,3", s, why)
	}
	seen := map[int]bool{}
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	if len(fields) == 0 {
		return bad("empty")
	}
	for _, f := range fields {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > maxCPU {
			return bad(fmt.Sprintf("%q is not a CPU number", lo))
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < 0 || b > maxCPU {
				return bad(fmt.Sprintf("%q is not a CPU number", hi))
			}
			if b < a {
				return bad(fmt.Sprintf("range %s runs backwards", f))
			}
		}
		for i := a; i <= b; i++ {
			seen[i] = true
		}
	}
	out := CPUSet{}
	for c := range seen {
		out.CPUs = append(out.CPUs, c)
	}
	sort.Ints(out.CPUs)
	return out, nil
}

// Signal is a signal named in a manifest, e.g. SIGTERM.
type Signal struct {
	Name string
	Num  syscall.Signal
}

func (s Signal) String() string { return s.Name }

// ParseSignal accepts a signal name with or without its SIG prefix
// (SIGTERM, TERM, SIGRTMIN+3 is not supported).
func ParseSignal(s string) (Signal, error) {
	name := s
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	n := signalNum(name)
	if n == 0 {
		return Signal{}, fmt.Errorf("%q is not a signal; expected a name like SIGTERM, SIGINT, SIGQUIT or SIGHUP", s)
	}
	return Signal{Name: name, Num: n}, nil
}

// ParseDuration parses a non-negative Go duration such as 100ms, 10s or 1m30s.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration; expected a non-negative number with a unit: ms, s, m or h (e.g. 100ms, 10s, 1m30s)", s)
	}
	return d, nil
}
