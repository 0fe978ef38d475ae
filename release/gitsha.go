package release

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var shaRe = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// gitHead returns the commit checked out in the git work tree holding dir
// (dir or one of its parents), or "" when there is none or HEAD is unborn.
// It reads .git itself rather than running git, which may be missing or
// refuse a tree owned by another user.
func gitHead(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := abs; ; d = filepath.Dir(d) {
		gitDir, ok, err := findGitDir(d)
		if err != nil {
			return "", err
		}
		if ok {
			return readHead(gitDir)
		}
		if filepath.Dir(d) == d {
			return "", nil
		}
	}
}

// findGitDir returns the git dir of the work tree at d: d/.git, or where a
// .git file ("gitdir: X", in worktrees and submodules) points.
func findGitDir(d string) (string, bool, error) {
	p := filepath.Join(d, ".git")
	info, err := os.Stat(p)
	switch {
	case os.IsNotExist(err):
		return "", false, nil
	case err != nil:
		return "", false, err
	case info.IsDir():
		return p, true, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false, err
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if !ok {
		return "", false, fmt.Errorf("%s: expected \"gitdir: PATH\"", p)
	}
	if !filepath.IsAbs(rest) {
		rest = filepath.Join(d, rest)
	}
	return rest, true, nil
}

func readHead(gitDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return "", err
	}
	head := strings.TrimSpace(string(b))
	ref, symbolic := strings.CutPrefix(head, "ref: ")
	if !symbolic {
		return checkSHA(head, filepath.Join(gitDir, "HEAD"))
	}
	if !strings.HasPrefix(ref, "refs/") || strings.Contains(ref, "..") {
		return "", fmt.Errorf("%s: unexpected ref %q", filepath.Join(gitDir, "HEAD"), ref)
	}
	common := gitDir
	if c, err := os.ReadFile(filepath.Join(gitDir, "commondir")); err == nil {
		common = strings.TrimSpace(string(c))
		if !filepath.IsAbs(common) {
			common = filepath.Join(gitDir, common)
		}
	}
	for _, d := range []string{gitDir, common} {
		if b, err := os.ReadFile(filepath.Join(d, filepath.FromSlash(ref))); err == nil {
			return checkSHA(strings.TrimSpace(string(b)), filepath.Join(d, ref))
		}
	}
	return packedRef(filepath.Join(common, "packed-refs"), ref)
}

func packedRef(file, ref string) (string, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return "", nil // an unborn branch: no commit yet
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sha, name, ok := strings.Cut(sc.Text(), " ")
		if ok && name == ref {
			return checkSHA(sha, file)
		}
	}
	return "", sc.Err()
}

func checkSHA(s, from string) (string, error) {
	if !shaRe.MatchString(s) {
		return "", fmt.Errorf("%s: %q is not a commit hash", from, s)
	}
	return s, nil
}
