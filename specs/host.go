package specs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultHostConfig is where the operator's host configuration lives.
const DefaultHostConfig = "/etc/tori-run/host.yml"

// HostConfig is the operator's word on what capsules on this host may have
// (Nomad's client host_volume is the model): a capsule.yml comes with an
// artifact, this file belongs to whoever runs the host.
type HostConfig struct {
	// Source is the file it was read from.
	Source string `json:"-"`
	// Volumes are the host paths capsules may bind (the path and below).
	Volumes []HostVolume `json:"volumes,omitempty"`
	State   HostState    `json:"state"`
}

// HostVolume is one host path capsules may bind.
type HostVolume struct {
	Path string `json:"path"`
	// ReadOnly allows only :ro binds of it.
	ReadOnly bool `json:"read_only"`
	// Line is where the entry is in Source, for messages.
	Line int `json:"-"`
}

// HostState bounds each capsule's state store.
type HostState struct {
	// Quota is a capsule's state in bytes; nil: no quota.
	Quota *Size `json:"quota,omitempty"`
	// EventRetention bounds the event log: the newest Count events, none
	// older than Age; zero fields are unbounded.
	EventRetention EventRetention `json:"event_retention"`
	// MaxTokensPerMin is the ceiling of a capsule's MAX_TOKENS_PER_MIN; 0:
	// none.
	MaxTokensPerMin int `json:"max_tokens_per_min,omitempty"`
}

// EventRetention bounds a capsule's event log.
type EventRetention struct {
	Count int           `json:"count,omitempty"`
	Age   time.Duration `json:"age,omitempty"`
}

// LoadHost reads the host configuration at file. A missing file is
// fs.ErrNotExist (callers treat the default path's absence as "nothing
// allowed").
func LoadHost(file string) (*HostConfig, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseHost(f, file)
}

// ParseHost reads a host configuration from r, as strictly as a manifest:
// every problem with file, line and field.
func ParseHost(r io.Reader, name string) (*HostConfig, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &parser{file: name}
	if len(data) > MaxManifestSize {
		p.errAt(nil, "", "larger than %d bytes; a host configuration is a small YAML file", MaxManifestSize)
		return nil, p.errs.orNil()
	}
	c := &HostConfig{Source: name}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil // an empty file allows nothing, like no file
		}
		e := &FieldError{File: name, Msg: "not valid YAML: " + err.Error()}
		if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = "not valid YAML: " + m[2]
		}
		return nil, Errors{e}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p.mapping(root, "", map[string]func(k, v *yaml.Node){
		"volumes": func(k, v *yaml.Node) { c.Volumes = p.hostVolumes(v) },
		"state":   func(k, v *yaml.Node) { c.State = p.hostState(v) },
	})
	if err := p.errs.orNil(); err != nil {
		return nil, err
	}
	return c, nil
}

func (p *parser) hostVolumes(n *yaml.Node) []HostVolume {
	var out []HostVolume
	for i, item := range p.sequence(n, "volumes") {
		f := fmt.Sprintf("volumes[%d]", i)
		v := HostVolume{Line: item.Line}
		var pathNode *yaml.Node
		p.mapping(item, f, map[string]func(k, v *yaml.Node){
			"path": func(k, pv *yaml.Node) {
				pathNode = pv
				if s, ok := p.str(pv, f+".path"); ok {
					if !path.IsAbs(s) {
						p.errAt(pv, f+".path", "%q is not absolute; expected a host folder such as /srv/data", s)
					}
					v.Path = path.Clean(s)
				}
			},
			"read_only": func(k, rv *yaml.Node) { v.ReadOnly, _ = p.boolean(rv, f+".read_only") },
		})
		if item.Kind == yaml.MappingNode && pathNode == nil {
			p.errAt(item, f+".path", "missing; expected the host folder capsules may bind, e.g. path: /srv/data")
		}
		for _, prev := range out {
			if prev.Path == v.Path && v.Path != "" {
				p.errAt(item, f+".path", "%s is already listed at line %d", v.Path, prev.Line)
			}
		}
		out = append(out, v)
	}
	return out
}

func (p *parser) hostState(n *yaml.Node) HostState {
	var s HostState
	p.mapping(n, "state", map[string]func(k, v *yaml.Node){
		"quota": func(k, v *yaml.Node) {
			if str, ok := p.scalar(v, "state.quota"); ok {
				q, err := ParseSize(str)
				if err != nil {
					p.errAt(v, "state.quota", "%v", err)
					return
				}
				s.Quota = &q
			}
		},
		"event_retention": func(k, v *yaml.Node) {
			p.mapping(v, "state.event_retention", map[string]func(k, v *yaml.Node){
				"count": func(k, v *yaml.Node) {
					s.EventRetention.Count, _ = p.integer(v, "state.event_retention.count", 1, 1<<40)
				},
				"age": func(k, v *yaml.Node) { p.duration(v, "state.event_retention.age", &s.EventRetention.Age) },
			})
		},
		"max_tokens_per_min": func(k, v *yaml.Node) {
			s.MaxTokensPerMin, _ = p.integer(v, "state.max_tokens_per_min", 1, 1_000_000)
		},
	})
	return s
}
