package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gofrs/flock"
	"github.com/parquet-go/parquet-go"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

// Problem is one thing Check found wrong, or one thing Repair dropped.
type Problem struct {
	File   string
	Offset int64 // byte offset in File, -1 when the whole file is meant
	What   string
}

func (p Problem) String() string {
	if p.Offset < 0 {
		return fmt.Sprintf("%s: %s", p.File, p.What)
	}
	return fmt.Sprintf("%s at byte %d: %s", p.File, p.Offset, p.What)
}

// Report is what Check found or what Repair did.
type Report struct {
	Manifest uint64    // generation of the manifest used
	Files    int       // data files listed
	Segments int       // log segments
	Records  int       // intact records found (Repair: kept)
	Problems []Problem // Check: damage found; Repair: what it dropped
	Notes    []string  // harmless findings (a torn tail, unlisted files)
}

// OK reports whether Check found no damage.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Check verifies a state directory that no process holds open: the
// manifests, every listed data file against its SHA-256 name, size and
// row count, and every frame of the log; it changes nothing.
func Check(dir string) (Report, error) {
	unlock, err := lockDir(dir)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	var rep Report
	manDir, dataDir, walDir := filepath.Join(dir, "manifests"), filepath.Join(dir, "data"), filepath.Join(dir, "wal")
	man, err := currentManifest(manDir)
	if err != nil {
		rep.Problems = append(rep.Problems, Problem{manDir, -1, err.Error()})
		return rep, nil
	}
	rep.Manifest, rep.Files = man.Generation, len(man.Files)
	for _, f := range man.Files {
		if err := verifyDataFile(dataDir, f); err != nil {
			rep.Problems = append(rep.Problems, Problem{filepath.Join(dataDir, f.Name), -1, err.Error()})
		} else {
			rep.Records += int(f.Rows)
		}
	}
	segs, err := listSegments(walDir)
	if err != nil {
		return rep, err
	}
	rep.Segments = len(segs)
	next := man.Seq + 1
	for i, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if err != nil {
			return rep, fmt.Errorf("read log segment: %w", err)
		}
		bad := scanSegment(data, func(off int, recs []Record) {
			for _, r := range recs {
				if r.Seq < next {
					continue
				}
				if r.Seq != next {
					rep.Problems = append(rep.Problems, Problem{sg.path, int64(off), fmt.Sprintf("record seq %d, expected %d: records %d..%d are missing", r.Seq, next, next, r.Seq-1)})
				}
				next = r.Seq + 1
				rep.Records++
			}
		})
		for _, b := range bad {
			if i == len(segs)-1 && b[1] == len(data) && classifyBad(data, b[0]) != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s: a torn tail of %d bytes at byte %d (a write never acknowledged), cut at the next open", sg.path, b[1]-b[0], b[0]))
				continue
			}
			rep.Problems = append(rep.Problems, Problem{sg.path, int64(b[0]), fmt.Sprintf("%d damaged bytes (frames that fail their checksum)", b[1]-b[0])})
		}
	}
	return rep, nil
}

// Repair rewrites a damaged state directory that no process holds open,
// keeping every intact record: the data files that match their names as
// they are, the row groups of damaged data files that still decode with
// their page checksums, and every log frame that passes its checksum. The
// kept log records and salvaged rows go into one new data file, a new
// manifest lists it, and the log is emptied. Report.Problems says what was
// dropped. A newest manifest that cannot be read is replaced by the newest
// one that can.
func Repair(dir string, opts Options) (Report, error) {
	opts = opts.withDefaults()
	unlock, err := lockDir(dir)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	var rep Report
	manDir, dataDir, walDir := filepath.Join(dir, "manifests"), filepath.Join(dir, "data"), filepath.Join(dir, "wal")
	gens, err := listManifests(manDir)
	if err != nil {
		return rep, err
	}
	man := manifest{Format: manifestFormat}
	for i := len(gens) - 1; i >= 0; i-- {
		m, err := readManifest(manDir, gens[i])
		if err == nil {
			man = m
			break
		}
		rep.Problems = append(rep.Problems, Problem{filepath.Join(manDir, manifestName(gens[i])), -1, "dropped: " + err.Error()})
	}
	var top uint64
	if len(gens) > 0 {
		top = gens[len(gens)-1]
	}
	rep.Manifest = man.Generation
	next := man
	next.Generation = max(top, man.Generation) + 1
	next.Files = nil
	var salvaged []Record
	for _, f := range man.Files {
		path := filepath.Join(dataDir, f.Name)
		if err := verifyDataFile(dataDir, f); err == nil {
			next.Files = append(next.Files, f)
			rep.Records += int(f.Rows)
			continue
		} else {
			recs, dropped := salvageDataFile(path)
			salvaged = append(salvaged, recs...)
			rep.Records += len(recs)
			what := fmt.Sprintf("%v; kept %d of its %d rows", err, len(recs), f.Rows)
			if len(dropped) > 0 {
				what += ", dropped " + strings.Join(dropped, ", ")
			}
			rep.Problems = append(rep.Problems, Problem{path, -1, what})
		}
	}
	segs, err := listSegments(walDir)
	if err != nil {
		return rep, err
	}
	rep.Segments = len(segs)
	for _, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if err != nil {
			return rep, fmt.Errorf("read log segment: %w", err)
		}
		bad := scanSegment(data, func(_ int, recs []Record) {
			for _, r := range recs {
				if r.Seq > man.Seq {
					r.Value = append([]byte(nil), r.Value...)
					salvaged = append(salvaged, r)
					rep.Records++
				}
			}
		})
		for _, b := range bad {
			rep.Problems = append(rep.Problems, Problem{sg.path, int64(b[0]), fmt.Sprintf("dropped %d bytes that fail their checksum", b[1]-b[0])})
		}
	}
	if len(salvaged) > 0 {
		meta, err := writeDataFile(dataDir, salvaged, nil, opts.syncFile)
		if err != nil {
			return rep, fmt.Errorf("repair: %w", err)
		}
		next.Files = append(next.Files, meta)
		next.Seq = max(next.Seq, meta.MaxSeq)
	}
	if err := writeManifest(manDir, next, opts.syncFile); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	// The manifest lists everything kept: the log can go, and so can the
	// manifests that list damaged files.
	for _, sg := range segs {
		if err := os.Remove(sg.path); err != nil {
			return rep, fmt.Errorf("repair: remove log segment: %w", err)
		}
	}
	for _, g := range gens {
		if err := os.Remove(filepath.Join(manDir, manifestName(g))); err != nil && !os.IsNotExist(err) {
			return rep, fmt.Errorf("repair: remove old manifest: %w", err)
		}
	}
	if _, err := collectGarbage(manDir, dataDir, 1, nil); err != nil {
		return rep, fmt.Errorf("repair: %w", err)
	}
	for _, d := range []string{walDir, manDir, dataDir} {
		if err := atomicfile.SyncDir(d); err != nil {
			return rep, err
		}
	}
	rep.Files = len(next.Files)
	return rep, nil
}

func lockDir(dir string) (func(), error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	l := flock.New(filepath.Join(dir, "LOCK"))
	ok, err := l.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock state directory %s: %w", l.Path(), err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s is held (stop the capsule first)", ErrLocked, l.Path())
	}
	return func() { _ = l.Unlock() }, nil
}

// verifyDataFile checks a listed data file against its manifest entry and
// its SHA-256 name without loading it: size, hash, then the Parquet footer's
// row count.
func verifyDataFile(dir string, meta fileMeta) error {
	path := filepath.Join(dir, meta.Name)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: data file %s listed by the manifest: %w", ErrCorrupt, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Size() != meta.Size {
		return fmt.Errorf("%w: data file %s is %d bytes, its manifest says %d", ErrCorrupt, path, st.Size(), meta.Size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read data file %s: %w", path, err)
	}
	if hex.EncodeToString(h.Sum(nil))+parquetSuffix != meta.Name {
		return fmt.Errorf("%w: data file %s does not match its SHA-256 name (%s): %s", ErrCorrupt, path, hex.EncodeToString(h.Sum(nil)), damageHint)
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipBloomFilters(true))
	if err != nil {
		return fmt.Errorf("%w: data file %s: %w", ErrCorrupt, path, err)
	}
	if pf.NumRows() != meta.Rows {
		return fmt.Errorf("%w: data file %s has %d rows, its manifest says %d", ErrCorrupt, path, pf.NumRows(), meta.Rows)
	}
	return nil
}

// salvageDataFile reads the row groups of a damaged data file that still
// decode (parquet-go checks every page's CRC); it returns their records and
// a description of what it could not read.
func salvageDataFile(path string) (recs []Record, dropped []string) {
	f, err := os.Open(path)
	if err != nil {
		return nil, []string{"the whole file: " + err.Error()}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, []string{"the whole file: " + err.Error()}
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipBloomFilters(true), parquet.SkipPageIndex(true))
	if err != nil {
		return nil, []string{"the whole file (its footer does not decode: " + err.Error() + ")"}
	}
	for i, rg := range pf.RowGroups() {
		got, err := readRowGroup(rg)
		if err != nil {
			dropped = append(dropped, fmt.Sprintf("row group %d (%d rows: %v)", i, rg.NumRows(), err))
			continue
		}
		recs = append(recs, got...)
	}
	return recs, dropped
}

func readRowGroup(rg parquet.RowGroup) (recs []Record, err error) {
	defer func() {
		if p := recover(); p != nil { // parquet-go panics on some damage
			err = fmt.Errorf("decoding panicked: %v", p)
		}
	}()
	r := parquet.NewGenericRowGroupReader[Row](rg)
	defer r.Close()
	buf := make([]Row, 256)
	for {
		n, err := r.Read(buf)
		for i := range buf[:n] {
			rec, err := fromRow(&buf[i])
			if err != nil {
				return nil, err
			}
			rec.Value = append([]byte(nil), rec.Value...)
			recs = append(recs, rec)
		}
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
