package specs

import (
	"fmt"
	"path"
	"strings"

	"github.com/moby/sys/capability"
	"go.yaml.in/yaml/v3"
)

// seccomp reads `seccomp: unconfined | FILE`, FILE being a path inside the
// app (a profile in moby's JSON format, read when the capsule starts).
func (p *parser) seccomp(n *yaml.Node) string {
	s, ok := p.str(n, "seccomp")
	if !ok {
		return ""
	}
	if s == SeccompUnconfined {
		return s
	}
	if path.IsAbs(s) || strings.HasPrefix(path.Clean(s), "..") {
		p.errAt(n, "seccomp", "%q is outside the app; expected unconfined or the path of a seccomp profile (moby's JSON format) inside the app, e.g. seccomp.json", s)
		return ""
	}
	return path.Clean(s)
}

// capabilities reads `capabilities: { add: [...], drop: [...] }`.
func (p *parser) capabilities(n *yaml.Node) Capabilities {
	var c Capabilities
	p.mapping(n, "capabilities", map[string]func(k, v *yaml.Node){
		"add":  func(k, v *yaml.Node) { c.Add = p.capList(v, "capabilities.add", false) },
		"drop": func(k, v *yaml.Node) { c.Drop = p.capList(v, "capabilities.drop", true) },
	})
	for _, a := range c.Add {
		for _, d := range c.Drop {
			if a == d {
				p.errAt(n, "capabilities", "%s is both added and dropped; expected it in one list", a)
			}
		}
	}
	return c
}

func (p *parser) capList(n *yaml.Node, field string, allowAll bool) []string {
	var out []string
	items := p.sequence(n, field)
	for i, item := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.str(item, f)
		if !ok {
			continue
		}
		name, msg := CapabilityName(s)
		if name == "ALL" && !allowAll {
			msg = "ALL cannot be added: a capsule with every capability is not confined; name the capabilities it needs"
		}
		if msg != "" {
			p.errAt(item, f, "%s", msg)
			continue
		}
		dup := false
		for _, prev := range out {
			dup = dup || prev == name
		}
		if dup {
			p.errAt(item, f, "%s is listed twice", name)
			continue
		}
		out = append(out, name)
	}
	return out
}

// CapabilityName returns a capability's kernel name, CAP_X, from "CAP_X"
// or "X" (any case), or "ALL"; else a message saying what was expected.
func CapabilityName(s string) (string, string) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if u == "ALL" {
		return u, ""
	}
	u = "CAP_" + strings.TrimPrefix(u, "CAP_")
	for _, c := range capability.ListKnown() {
		if "CAP_"+strings.ToUpper(c.String()) == u {
			return u, ""
		}
	}
	return "", fmt.Sprintf("unknown capability %q; expected", s) + " a kernel capability name such as CAP_NET_BIND_SERVICE or NET_BIND_SERVICE (see capabilities(7))"
}

// KnownCapabilities are the kernel capability names tori-run knows, CAP_X.
func KnownCapabilities() []string {
	var out []string
	for _, c := range capability.ListKnown() {
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
}
