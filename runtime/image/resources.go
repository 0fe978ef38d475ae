package image

import (
	"strconv"

	"github.com/tori-run/tori-run/specs"
)

// ResourceValues gives each directive that r sets in systemd's syntax, by
// name: what the image's labels carry and the cluster manifests translate.
func ResourceValues(r specs.Resources) map[string]string {
	out := map[string]string{}
	if r.CPUQuota != nil {
		out["CPUQuota"] = strconv.FormatFloat(float64(*r.CPUQuota), 'f', -1, 64) + "%"
	}
	if r.CPUWeight != nil {
		out["CPUWeight"] = strconv.FormatUint(*r.CPUWeight, 10)
	}
	if r.MemoryMax != nil {
		out["MemoryMax"] = r.MemoryMax.String()
	}
	if r.MemoryHigh != nil {
		out["MemoryHigh"] = r.MemoryHigh.String()
	}
	if r.IOWeight != nil {
		out["IOWeight"] = strconv.FormatUint(*r.IOWeight, 10)
	}
	if r.TasksMax != nil {
		out["TasksMax"] = r.TasksMax.String()
	}
	if r.AllowedCPUs != nil {
		out["AllowedCPUs"] = r.AllowedCPUs.String()
	}
	return out
}

// Labels are the image config's labels: the OCI annotation keys for what
// they cover, and run.tori.* for the rest. Resources are information for
// the engine's configuration: in a container the limits are the engine's.
func Labels(m *specs.Manifest, digest, buildSHA string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":   m.Name,
		"org.opencontainers.image.version": m.Version,
		LabelCapsule:                       m.Name,
		LabelVersion:                       m.Version,
		LabelRelease:                       "sha256:" + digest,
	}
	if buildSHA != "" {
		l["org.opencontainers.image.revision"] = buildSHA
		l[LabelBuildSHA] = buildSHA
	}
	for k, v := range ResourceValues(m.Resources) {
		l["run.tori.resources."+k] = v
	}
	for _, s := range m.Services {
		for k, v := range ResourceValues(s.Resources) {
			l["run.tori.service."+s.Name+".resources."+k] = v
		}
	}
	return l
}

// The labels tori-run sets on every image it exports.
const (
	LabelCapsule  = "run.tori.capsule"
	LabelVersion  = "run.tori.version"
	LabelRelease  = "run.tori.release"
	LabelBuildSHA = "run.tori.build-sha"
)
