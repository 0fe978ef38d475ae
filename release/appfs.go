package release

import (
	"io"
	"io/fs"
)

// AppFS opens the app of o (FromDir or FromZip) as Build would ship it:
// the same scan, exclusions, limits, zip top-folder rule and canonical
// modes. Validate checks a manifest against it, so validate finds exactly
// what build refuses. Close the returned Closer when done.
func AppFS(o BuildOptions) (fs.FS, io.Closer, error) {
	src, t, _, err := scan(o, o.Limits.withDefaults())
	if err != nil {
		return nil, nil, err
	}
	return treeFS{t: t, src: src}, src, nil
}
