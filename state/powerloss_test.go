package state

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The power-loss test is the crash test with an fsync fault injector in the
// store's seam (Options.syncFile): the child records, at every fdatasync,
// the content of the file as the disk then holds it (an image, keyed by the
// file's inode and birth time so renames keep it). After the SIGKILL the
// parent rolls every file back to its last image, and empties a file that
// was never synced: every write the child did not fsync is lost, as in a
// power cut. Recovery must still show every acknowledged write.

const crashLossyEnv = "TORI_STATE_CRASH_LOSSY" // the image directory

func fileKey(path string) (string, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d-%d.%d", st.Ino, st.Btime.Sec, st.Btime.Nsec), nil
}

// lossySync fdatasyncs f, then saves its content as the image of what a
// power cut would leave.
func lossySync(images string) syncFunc {
	return func(f *os.File) error {
		if err := fdatasync(f); err != nil {
			return err
		}
		data, err := os.ReadFile(f.Name())
		if err != nil {
			return err
		}
		key, err := fileKey(f.Name())
		if err != nil {
			return err
		}
		tmp := filepath.Join(images, fmt.Sprintf(".%s-%d", key, rand.Uint64()))
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(images, key))
	}
}

// dropUnsynced rolls every file of dir back to its last image.
func dropUnsynced(t *testing.T, dir, images string) (rolled, emptied int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
			return err
		}
		key, err := fileKey(p)
		if err != nil {
			return err
		}
		img, err := os.ReadFile(filepath.Join(images, key))
		if os.IsNotExist(err) {
			emptied++
			return os.Truncate(p, 0)
		}
		if err != nil {
			return err
		}
		if cur, _ := os.ReadFile(p); len(cur) != len(img) {
			rolled++
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(img)
		if err2 := f.Close(); err == nil {
			err = err2
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rolled, emptied
}

func TestPowerLossRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("power-loss rounds (skipped under -short)")
	}
	dir := t.TempDir()
	m := crashModel{kv: map[string]string{}, events: map[string]bool{}}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 4))
	acked, rolled, emptied := 0, 0, 0
	const rounds = 12
	for round := range rounds {
		images := t.TempDir()
		t.Setenv(crashLossyEnv, images)
		// What the parent's recovery left was fsynced: it survives the cut.
		if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() == "LOCK" {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return lossySync(images)(f)
		}); err != nil {
			t.Fatal(err)
		}
		killAfter := time.Duration(20+rng.IntN(150)) * time.Millisecond
		pending, n := runCrashChild(t, dir, round, killAfter, &m)
		acked += n
		r, e := dropUnsynced(t, dir, images)
		rolled, emptied = rolled+r, emptied+e
		checkCrashRecovery(t, dir, round, &m, pending)
		if t.Failed() {
			t.Fatalf("seed %d round %d (killed after %v) failed; state dir %s", seed, round, killAfter, dir)
		}
	}
	t.Logf("seed %d: %d acknowledged writes over %d power cuts (%d files rolled back, %d never-synced files emptied), all recovered", seed, acked, rounds, rolled, emptied)
	if rolled+emptied == 0 {
		t.Errorf("no power cut dropped anything: the injector does not work")
	}
}
