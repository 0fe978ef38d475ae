package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/specs"
)

// Where things are in an exported image.
const (
	AppDir            = "/app"                 // the release's app
	ToriDir           = "/.tori"               // tori-run's own files
	Binary            = "/.tori/tori-run"      // the static tori-run, the entrypoint
	ManifestPath      = "/.tori/capsule.yml"   // the release's capsule.yml
	ReleasePath       = "/.tori/release.json"  // ReleaseInfo
	StateRoot         = "/var/lib/tori"        // TORI_STATE_ROOT: mount a volume here
	StateSocket       = "/run/tori/state.sock" // TORI_STATE_SOCKET
	RefNameKey        = "org.opencontainers.image.ref.name"
	ContainerdNameKey = "io.containerd.image.name"
)

// ReleaseInfo is /.tori/release.json: which release the image holds.
type ReleaseInfo struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Digest   string `json:"digest"` // 64 hex digits
	BuildSHA string `json:"build_sha,omitempty"`
}

// Options tune Export.
type Options struct {
	Root string // tori-run's root: where the releases are installed
	// Binary is the tori-run put in the image; "" is this process's own
	// executable. It must be static (make build makes it so).
	Binary string
	// Base is an OCI image layout folder whose image goes under the
	// capsule instead of the minimal host base (layers: [host] only).
	Base string
	// Tag is the reference name in index.json; default
	// localhost/tori/<name>:<version>.
	Tag string
	// Host is the host's root for the minimal base ("" is /; tests).
	Host string
	Log  zerolog.Logger
}

// Result says what Export wrote.
type Result struct {
	Ref     string // the reference name in index.json
	Digest  string // the image manifest's digest, sha256:...
	Size    int64  // of the archive
	Layers  int
	Release ReleaseInfo
}

// Export writes the release ref (NAME or DIGEST) as an OCI image layout
// archive (a tar of oci-layout, index.json and blobs/) to out. The file is
// written whole or not at all: a temporary file beside it, synced, renamed.
func Export(ref, out string, o Options) (*Result, error) {
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, err
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, err
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	static, err := IsStatic(bin)
	if err != nil {
		return nil, fmt.Errorf("tori-run binary %s: %w", bin, err)
	}
	if !static {
		return nil, fmt.Errorf("tori-run binary %s is dynamically linked: an image needs a static tori-run, which runs on any base (build it with make build)", bin)
	}
	info := ReleaseInfo{Name: m.Name, Version: m.Version, Digest: rel.Digest, BuildSHA: rel.BuildSHA}
	tag := o.Tag
	if tag == "" {
		tag = "localhost/tori/" + m.Name + ":" + tagSafe(m.Version)
	}
	if _, err := name.ParseReference(tag, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("--tag %q is not an image reference such as registry.example/%s:%s: %w", tag, m.Name, tagSafe(m.Version), err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".export-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	base, err := baseImage(o.Base)
	if err != nil {
		return nil, err
	}
	var layers []*namedLayer
	switch {
	case len(m.Layers) == 1 && m.Layers[0] == specs.LayerHost:
		if o.Base == "" {
			host := o.Host
			if host == "" {
				host = "/"
			}
			l, err := hostBaseLayer(m, filepath.Join(rel.Path, "app"), host)
			if err != nil {
				return nil, err
			}
			layers = append(layers, &namedLayer{"host base (minimal: the programs the services name and their libraries)", l})
		}
	default:
		if o.Base != "" {
			return nil, fmt.Errorf("%s: layers %v: --base is for capsules on layers: [host]; a capsule with rootfs layers brings its own", m.Source, m.Layers)
		}
		// The manifest lists layers top first; an image lists them bottom first.
		for i := len(m.Layers) - 1; i >= 0; i-- {
			d := m.Layers[i]
			lr, err := store.Resolve("sha256:" + d)
			if err != nil {
				return nil, fmt.Errorf("%s: layer %s is not an installed release (install the rootfs layer's archive first): %w", m.Source, d, err)
			}
			l := newLayer()
			if err := l.tree(filepath.Join(lr.Path, "app"), "/", nil); err != nil {
				return nil, fmt.Errorf("rootfs layer %s: %w", d, err)
			}
			layers = append(layers, &namedLayer{"rootfs layer sha256:" + d, l})
		}
	}
	app := newLayer()
	if err := app.tree(filepath.Join(rel.Path, "app"), AppDir, nil); err != nil {
		return nil, fmt.Errorf("release %s: %w", rel.Digest, err)
	}
	layers = append(layers, &namedLayer{"app: release sha256:" + rel.Digest, app})
	tl, err := toriLayer(bin, filepath.Join(rel.Path, "capsule.yml"), info)
	if err != nil {
		return nil, err
	}
	layers = append(layers, &namedLayer{"tori-run", tl})

	img := base
	for i, nl := range layers {
		f := filepath.Join(tmp, fmt.Sprintf("layer-%d.tar", i))
		if err := writeFile(f, nl.l.write); err != nil {
			return nil, fmt.Errorf("layer %q: %w", nl.name, err)
		}
		layer, err := tarball.LayerFromFile(f, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "tori-run export-image: " + nl.name}})
		if err != nil {
			return nil, err
		}
	}
	img, err = configure(img, m, info)
	if err != nil {
		return nil, err
	}
	labels := Labels(m, rel.Digest, rel.BuildSHA)
	img = mutate.Annotations(img, labels).(v1.Image)

	lay, err := layout.Write(filepath.Join(tmp, "layout"), empty.Index)
	if err != nil {
		return nil, err
	}
	if err := lay.AppendImage(img, layout.WithAnnotations(map[string]string{RefNameKey: tag, ContainerdNameKey: tag}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH})); err != nil {
		return nil, fmt.Errorf("writing the image layout: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	n, err := archive(filepath.Join(tmp, "layout"), out)
	if err != nil {
		return nil, err
	}
	o.Log.Info().Str("capsule", m.Name).Str("release", rel.Digest).Str("build_sha", rel.BuildSHA).
		Str("image", d.String()).Str("ref", tag).Int64("bytes", n).Msg("image exported")
	return &Result{Ref: tag, Digest: d.String(), Size: n, Layers: len(layers), Release: info}, nil
}

type namedLayer struct {
	name string
	l    *layer
}

// tagSafe makes a version usable as a tag: [A-Za-z0-9_.-], at most 128.
func tagSafe(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !tagChar(c) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "latest"
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

func tagChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// toriLayer holds tori-run, the manifest, the release record, and the
// folders container mode uses.
func toriLayer(bin, manifest string, info ReleaseInfo) (*layer, error) {
	l := newLayer()
	l.dir(ToriDir, 0o755)
	l.file(Binary, 0o755, bin)
	l.file(ManifestPath, 0o644, manifest)
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	l.bytes(ReleasePath, 0o644, append(b, '\n'))
	l.dir("run/tori", 0o755)
	l.dir(StateRoot, 0o755)
	l.dir("tmp", 0o1777)
	return l, nil
}

// baseImage is the image of an OCI layout folder (the one manifest for
// this platform), or an empty OCI image.
func baseImage(dir string) (v1.Image, error) {
	if dir == "" {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("--base %s: not an OCI image layout (expected oci-layout and index.json): %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("--base %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("--base %s: index.json: %w", dir, err)
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage() && (d.Platform == nil || d.Platform.OS == "linux" && d.Platform.Architecture == goruntime.GOARCH):
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("--base %s: image %s: %w", dir, d.Digest, err)
			}
			return img, nil
		case d.MediaType.IsIndex():
			sub, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("--base %s: index %s: %w", dir, d.Digest, err)
			}
			sm, err := sub.IndexManifest()
			if err != nil {
				return nil, err
			}
			for _, sd := range sm.Manifests {
				if sd.Platform != nil && sd.Platform.OS == "linux" && sd.Platform.Architecture == goruntime.GOARCH {
					return sub.Image(sd.Digest)
				}
			}
		}
	}
	return nil, fmt.Errorf("--base %s: no image for linux/%s in index.json", dir, goruntime.GOARCH)
}

// configure sets the image config: the entrypoint (container mode), the
// environment, labels, the state volume, fixed times.
func configure(img v1.Image, m *specs.Manifest, info ReleaseInfo) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	env := map[string]string{"PATH": capsulePATH}
	for _, e := range cf.Config.Env { // the base's, then ours
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	env["PATH"] = capsulePATH
	// TORI_STATE_ROOT is left to the engine: unset, container mode puts
	// the store on whichever of /var/lib/tori and /opt/tori/state is a
	// mounted volume.
	env["TORI_STATE_SOCKET"] = StateSocket
	cf.Config.Env = cf.Config.Env[:0]
	for k, v := range env {
		cf.Config.Env = append(cf.Config.Env, k+"="+v)
	}
	sort.Strings(cf.Config.Env)
	cf.Config.Entrypoint = []string{Binary, "run", "--in-container"}
	cf.Config.Cmd = nil
	cf.Config.WorkingDir = AppDir
	cf.Config.StopSignal = "SIGTERM"
	cf.Config.Volumes = map[string]struct{}{StateRoot: {}}
	if m.User != "" {
		// tori-run starts as root to serve the state proxy; services run
		// as the manifest's user.
		cf.Config.User = "0:0"
	}
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	for k, v := range Labels(m, info.Digest, info.BuildSHA) {
		cf.Config.Labels[k] = v
	}
	return mutate.ConfigFile(img, cf)
}

func writeFile(p string, fill func(io.Writer) error) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// archive tars the layout folder dir into out, entries sorted, times fixed,
// atomically (temporary file, fsync, rename, fsync of the folder).
func archive(dir, out string) (int64, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	sort.Strings(names)
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	tw := tar.NewWriter(f)
	for _, p := range names {
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return 0, err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
			if err := tw.WriteHeader(h); err != nil {
				return 0, err
			}
			continue
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, fi.Size()
		if err := tw.WriteHeader(h); err != nil {
			return 0, err
		}
		src, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	n, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, err
	}
	ok = true
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return 0, errors.Join(fmt.Errorf("fsync %s", filepath.Dir(out)), err)
		}
	}
	return n, nil
}
