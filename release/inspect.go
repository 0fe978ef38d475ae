package release

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
)

// ReadManifest returns the capsule.yml and the metadata of an archive,
// reading it through without unpacking anything. It checks neither the
// digest nor the files (Install does): it is for looking, e.g. validate.
func ReadManifest(archive string) ([]byte, *Metadata, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	zr, _, err := decompressor(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", archive, err)
	}
	defer zr.Close()
	lim := DefaultLimits()
	tr := tar.NewReader(zr)
	var manifest []byte
	var meta *Metadata
	for manifest == nil || meta == nil {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: not a capsule archive: %w", archive, err)
		}
		switch h.Name {
		case manifestName:
			if manifest, err = io.ReadAll(io.LimitReader(tr, 1<<20)); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", archive, err)
			}
		case metadataName:
			if meta, _, err = parseMetadata(io.LimitReader(tr, lim.maxMetadataSize()), archive, lim); err != nil {
				return nil, nil, err
			}
		}
	}
	if manifest == nil || meta == nil {
		return nil, nil, fmt.Errorf("%s: %w: no %s or %s", archive, ErrInvalidArchive, manifestName, metadataName)
	}
	return manifest, meta, nil
}
