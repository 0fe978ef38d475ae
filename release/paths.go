package release

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

const (
	maxPathLen   = 4096 // PATH_MAX
	maxNameLen   = 255  // NAME_MAX
	maxLinkHops  = 40   // the kernel's MAXSYMLINKS
	maxTargetLen = maxPathLen
)

// checkRelPath checks that p is a clean, relative, slash-separated path that
// stays inside its tree and that the canonical file index can carry (no
// control characters, valid UTF-8). It returns what is wrong, or "".
func checkRelPath(p string) string {
	switch {
	case p == "" || p == ".":
		return "empty path"
	case strings.HasPrefix(p, "/"):
		return "absolute path; expected a path relative to the app"
	case len(p) > maxPathLen:
		return fmt.Sprintf("path longer than %d bytes", maxPathLen)
	case !utf8.ValidString(p):
		return "path is not valid UTF-8"
	case strings.ContainsRune(p, '\\'):
		return `backslash in path (a Windows path?); expected "/" separators`
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("control character %q in path", r)
		}
	}
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "..":
			return `".." in path: it would leave the app`
		case c == "" || c == ".":
			return "path is not clean (empty or \".\" component)"
		case len(c) > maxNameLen:
			return fmt.Sprintf("path component longer than %d bytes", maxNameLen)
		}
	}
	return ""
}

// checkTarget checks a symlink target's form: relative, and carried by the
// index. Whether it stays inside the tree is for resolve.
func checkTarget(t string) string {
	switch {
	case t == "":
		return "symlink with an empty target"
	case strings.HasPrefix(t, "/"):
		return fmt.Sprintf("symlink to absolute path %q; only relative symlinks that stay inside the app are kept", t)
	case len(t) > maxTargetLen:
		return "symlink target too long"
	case !utf8.ValidString(t):
		return "symlink target is not valid UTF-8"
	}
	for _, r := range t {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("control character %q in symlink target", r)
		}
	}
	return ""
}

// nodeKind is what a path is in a tree, for resolve.
type nodeKind uint8

const (
	kindNone nodeKind = iota
	kindFile
	kindDir
	kindSymlink
)

// lookupFunc tells what the clean relative path p is in a tree, and its
// target when it is a symlink.
type lookupFunc func(p string) (nodeKind, string)

// resolve follows p (relative to the tree's root) through the tree's
// symlinks, as the kernel would, and returns the path it ends at. It fails
// when the walk leaves the tree at any point, even if a later ".." would come
// back. Components that do not exist are taken literally, which is
// conservative: the kernel would fail there. followLast says whether a
// symlink in the last component is followed.
func resolve(p string, lookup lookupFunc, followLast bool) (string, error) {
	var stack []string
	pending := splitPath(p)
	for hops := 0; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return "", fmt.Errorf("leaves the app")
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		if len(pending) == 0 && !followLast {
			break
		}
		kind, target := lookup(strings.Join(stack, "/"))
		if kind != kindSymlink {
			continue
		}
		if hops++; hops > maxLinkHops {
			return "", fmt.Errorf("more than %d symlinks in a row (a loop?)", maxLinkHops)
		}
		if strings.HasPrefix(target, "/") {
			return "", fmt.Errorf("goes through symlink %s to absolute path %q", strings.Join(stack, "/"), target)
		}
		stack = stack[:len(stack)-1]
		pending = append(splitPath(target), pending...)
	}
	return strings.Join(stack, "/"), nil
}

// checkLink checks that the symlink at link (a clean relative path) with
// target resolves inside the tree.
func checkLink(link, target string, lookup lookupFunc) error {
	if msg := checkTarget(target); msg != "" {
		return fmt.Errorf("%s", msg)
	}
	// Not path.Join: cleaning "d/x/../.." lexically would hide that d may
	// be a symlink.
	from := target
	if dir := path.Dir(link); dir != "." {
		from = dir + "/" + target
	}
	if _, err := resolve(from, lookup, true); err != nil {
		return fmt.Errorf("symlink to %q %v; only symlinks that stay inside the app are kept", target, err)
	}
	return nil
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
