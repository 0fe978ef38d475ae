package specs

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Checks across services: after: names a service that exists, and the
// order has no cycle.

// checkGraph checks that after: names existing services and has no cycle.
func (p *parser) checkGraph(m *Manifest, services *yaml.Node) {
	at := func(name string) *yaml.Node {
		if n := p.afterNodes[name]; n != nil {
			return n
		}
		return services
	}
	names := map[string]bool{}
	for _, s := range m.Services {
		names[s.Name] = true
	}
	for _, s := range m.Services {
		for _, a := range s.After {
			switch {
			case a == s.Name:
				p.errAt(at(s.Name), "services."+s.Name+".after", "a service cannot start after itself")
			case !names[a]:
				p.errAt(at(s.Name), "services."+s.Name+".after", "names %q, which is not a service of this capsule; expected one of %s", a, strings.Join(sortedKeys(names), ", "))
			}
		}
	}
	if cycle := findCycle(m.Services); cycle != nil {
		p.errAt(at(cycle[0]), "services."+cycle[0]+".after", "dependency cycle: %s; expected services ordered without loops", strings.Join(cycle, " -> "))
	}
}

// findCycle returns one cycle of after: edges, as a path that starts and ends
// with the same service, or nil.
func findCycle(services []Service) []string {
	after := map[string][]string{}
	for _, s := range services {
		after[s.Name] = s.After
	}
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(n string) []string {
		state[n] = onPath
		stack = append(stack, n)
		for _, d := range after[n] {
			if _, ok := after[d]; !ok || d == n {
				continue
			}
			switch state[d] {
			case onPath:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case unseen:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, s := range services {
		if state[s.Name] == unseen {
			if c := visit(s.Name); c != nil {
				return c
			}
		}
	}
	return nil
}
