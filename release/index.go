package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// SchemaV1 is the schema of tori/metadata.json written by this package.
const SchemaV1 = "tori-run.capsule/v1"

// Fixed names inside an archive and a release.
const (
	manifestName = "capsule.yml"
	toriDir      = "tori"
	metadataName = "tori/metadata.json"
	installName  = "tori/installed.json"
	appDir       = "app"
)

// Metadata is tori/metadata.json: what a capsule is and the index of its
// files. The index covers capsule.yml and every entry under app/; the
// ContentDigest is the SHA-256 of the index in its canonical text form (see
// the package documentation).
type Metadata struct {
	Schema        string      `json:"schema"`
	Name          string      `json:"name"`
	Version       string      `json:"version"`
	BuildSHA      string      `json:"build_sha,omitempty"`
	ToolVersion   string      `json:"tori_run_version,omitempty"`
	Created       string      `json:"created,omitempty"` // RFC 3339 UTC; only from SOURCE_DATE_EPOCH
	ContentDigest string      `json:"content_digest"`
	Files         []FileEntry `json:"files"`
}

// FileEntry is one entry of the file index, in archive order.
type FileEntry struct {
	Path   string `json:"path"` // relative to the release: capsule.yml, app, app/...
	Type   string `json:"type"` // file, dir or symlink
	Mode   string `json:"mode"` // octal: 0644, 0755 (0777 for symlinks)
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // files
	Target string `json:"target,omitempty"` // symlinks
}

// mtime is the time every archive entry carries: the epoch, or Created.
func (m *Metadata) mtime() (time.Time, error) {
	if m.Created == "" {
		return time.Unix(0, 0), nil
	}
	t, err := time.Parse(time.RFC3339, m.Created)
	if err != nil {
		return time.Time{}, fmt.Errorf("created %q: expected an RFC 3339 time", m.Created)
	}
	return t, nil
}

// indexEntry is a FileEntry checked and decoded.
type indexEntry struct {
	path   string
	kind   nodeKind
	mode   int64
	size   int64
	sum    [32]byte
	target string
}

func (e indexEntry) fileEntry() FileEntry {
	f := FileEntry{Path: e.path, Type: kindName(e.kind), Mode: fmt.Sprintf("%04o", e.mode), Target: e.target}
	if e.kind == kindFile {
		f.Size = e.size
		f.SHA256 = hex.EncodeToString(e.sum[:])
	}
	return f
}

// contentDigest is "sha256:" and the SHA-256 of the index's canonical
// text: one line per entry, "path TAB type TAB mode TAB size TAB sha256 TAB
// target LF", with empty fields where they do not apply. Paths and targets
// never hold control characters, so the form is unambiguous.
func contentDigest(idx []indexEntry) string {
	h := sha256.New()
	var line []byte
	for _, e := range idx {
		f := e.fileEntry()
		line = append(line[:0], f.Path...)
		line = append(line, '\t')
		line = append(line, f.Type...)
		line = append(line, '\t')
		line = append(line, f.Mode...)
		line = append(line, '\t')
		line = strconv.AppendInt(line, f.Size, 10)
		line = append(line, '\t')
		line = append(line, f.SHA256...)
		line = append(line, '\t')
		line = append(line, f.Target...)
		line = append(line, '\n')
		h.Write(line)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// encodeMetadata writes m as indented JSON with one file entry a line, so
// that the file reads and diffs well. The output is a function of m alone.
func encodeMetadata(m *Metadata) ([]byte, error) {
	head := *m
	head.Files = nil
	var b bytes.Buffer
	// The outer Files shadows Metadata.Files and is always omitted: the
	// header fields are marshalled alone, the files appended below.
	hb, err := marshal(struct {
		Metadata
		Files struct{} `json:"files,omitzero"`
	}{Metadata: head}, "  ")
	if err != nil {
		return nil, err
	}
	b.Write(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(hb), []byte("}"))))
	b.WriteString(",\n  \"files\": [")
	for i, f := range m.Files {
		if i > 0 {
			b.WriteByte(',')
		}
		fb, err := marshal(f, "")
		if err != nil {
			return nil, err
		}
		b.WriteString("\n    ")
		b.Write(bytes.TrimSpace(fb))
	}
	b.WriteString("\n  ]\n}\n")
	return b.Bytes(), nil
}

func marshal(v any, indent string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// parseMetadata reads and checks tori/metadata.json: its schema, the form
// of every index entry, the Limits, that symlinks stay inside the app, and
// the content digest. It returns the decoded index.
func parseMetadata(r io.Reader, input string, lim Limits) (*Metadata, []indexEntry, error) {
	bad := func(format string, args ...any) error {
		return entryErr(input, metadataName, ErrInvalidArchive, format, args...)
	}
	var m Metadata
	dec := json.NewDecoder(r)
	if err := dec.Decode(&m); err != nil {
		return nil, nil, bad("not valid JSON: %v", err)
	}
	if m.Schema != SchemaV1 {
		return nil, nil, bad("schema %q; this tori-run reads %q", m.Schema, SchemaV1)
	}
	if _, err := m.mtime(); err != nil {
		return nil, nil, bad("%v", err)
	}
	idx, err := decodeIndex(m.Files, input, lim)
	if err != nil {
		return nil, nil, err
	}
	if got := contentDigest(idx); got != m.ContentDigest {
		return nil, nil, entryErr(input, metadataName, ErrDigestMismatch, "content_digest is %q but the index hashes to %q", m.ContentDigest, got)
	}
	return &m, idx, nil
}

// decodeIndex checks the file index: capsule.yml, then app, then app's
// entries sorted bytewise with each parent folder before its entries.
func decodeIndex(files []FileEntry, input string, lim Limits) ([]indexEntry, error) {
	if len(files) < 2 || files[0].Path != manifestName || files[1].Path != appDir {
		return nil, entryErr(input, metadataName, ErrInvalidArchive, "the file index must start with %s and %s", manifestName, appDir)
	}
	idx := make([]indexEntry, 0, len(files))
	kinds := map[string]indexEntry{}
	t := tally{lim: lim}
	for i, f := range files {
		e, err := decodeEntry(f)
		if err == nil {
			err = checkPlace(e, i, idx, kinds)
		}
		if err == nil && i >= 2 {
			err = t.add(input, f.Path, e.size)
		}
		if err != nil {
			if _, ok := errors.AsType[*EntryError](err); ok {
				return nil, err
			}
			return nil, entryErr(input, metadataName, ErrInvalidArchive, "files[%d] (%q): %v", i, f.Path, err)
		}
		idx = append(idx, e)
		kinds[e.path] = e
	}
	lookup := func(p string) (nodeKind, string) {
		e, ok := kinds[appDir+"/"+p]
		if !ok {
			return kindNone, ""
		}
		return e.kind, e.target
	}
	for _, e := range idx {
		if e.kind != kindSymlink {
			continue
		}
		if err := checkLink(strings.TrimPrefix(e.path, appDir+"/"), e.target, lookup); err != nil {
			return nil, entryErr(input, e.path, ErrUnsafeEntry, "%v", err)
		}
	}
	return idx, nil
}

func decodeEntry(f FileEntry) (indexEntry, error) {
	e := indexEntry{path: f.Path, size: f.Size, target: f.Target}
	var err error
	if e.kind, err = parseKind(f.Type); err != nil {
		return e, err
	}
	if msg := checkRelPath(f.Path); msg != "" {
		return e, fmt.Errorf("%s", msg)
	}
	mode, err := strconv.ParseInt(f.Mode, 8, 32)
	if err != nil {
		return e, fmt.Errorf("mode %q: expected octal", f.Mode)
	}
	e.mode = mode
	want := map[nodeKind][]int64{kindFile: {0o644, 0o755}, kindDir: {0o755}, kindSymlink: {0o777}}[e.kind]
	if mode != want[0] && (len(want) < 2 || mode != want[1]) {
		return e, fmt.Errorf("mode %s is not canonical for a %s", f.Mode, f.Type)
	}
	switch e.kind {
	case kindFile:
		if f.Size < 0 || f.Target != "" {
			return e, fmt.Errorf("a file needs a size ≥ 0 and no target")
		}
		b, err := hex.DecodeString(f.SHA256)
		if err != nil || len(b) != sha256.Size {
			return e, fmt.Errorf("sha256 %q: expected 64 hex digits", f.SHA256)
		}
		copy(e.sum[:], b)
	case kindDir:
		if f.Size != 0 || f.SHA256 != "" || f.Target != "" {
			return e, fmt.Errorf("a folder has no size, sha256 or target")
		}
	case kindSymlink:
		if f.Size != 0 || f.SHA256 != "" {
			return e, fmt.Errorf("a symlink has no size or sha256")
		}
		if msg := checkTarget(f.Target); msg != "" {
			return e, fmt.Errorf("%s", msg)
		}
	}
	return e, nil
}

// checkPlace checks where entry i sits in the index.
func checkPlace(e indexEntry, i int, prev []indexEntry, seen map[string]indexEntry) error {
	switch i {
	case 0:
		if e.kind != kindFile || e.mode != 0o644 {
			return fmt.Errorf("%s must be a file with mode 0644", manifestName)
		}
		return nil
	case 1:
		if e.kind != kindDir {
			return fmt.Errorf("%s must be a folder", appDir)
		}
		return nil
	}
	if !hasParentPrefix(e.path, appDir) {
		return fmt.Errorf("outside %s/", appDir)
	}
	if e.path <= prev[i-1].path {
		return fmt.Errorf("not sorted: after %q", prev[i-1].path)
	}
	parent := e.path[:strings.LastIndexByte(e.path, '/')]
	if p, ok := seen[parent]; !ok || p.kind != kindDir {
		return fmt.Errorf("its folder %q is not a folder listed before it", parent)
	}
	return nil
}
