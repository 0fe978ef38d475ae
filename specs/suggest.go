package specs

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// "Did you mean": the nearest known key to an unknown one.

// suggest returns the known key closest to key when it is a likely typo.
func suggest(key string, fields map[string]func(k, v *yaml.Node)) string {
	best, bestD := "", 3
	for k := range fields {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestD || (d == bestD && k < best && best != "") {
			best, bestD = k, d
		}
	}
	if bestD > 2 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
