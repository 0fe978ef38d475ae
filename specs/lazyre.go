package specs

import (
	"regexp"
	"sync"
)

// lazyRegexp is a regular expression compiled at its first use, not at
// package init: every tori-run process (the host, and libcontainer's
// re-exec of the binary at each capsule start) would otherwise compile all
// of the package's expressions before main, ~0.9 ms of GODEBUG=inittrace=1
// here (docs/PERFORMANCE.md), whether it parses a manifest or not.
type lazyRegexp struct {
	src  string
	once sync.Once
	re   *regexp.Regexp
}

func lazyRE(src string) *lazyRegexp { return &lazyRegexp{src: src} }

func (l *lazyRegexp) get() *regexp.Regexp {
	l.once.Do(func() { l.re = regexp.MustCompile(l.src) })
	return l.re
}

func (l *lazyRegexp) MatchString(s string) bool { return l.get().MatchString(s) }

func (l *lazyRegexp) FindStringSubmatch(s string) []string { return l.get().FindStringSubmatch(s) }
