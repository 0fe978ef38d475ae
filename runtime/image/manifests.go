package image

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/specs"
)

// Cluster manifests for an exported image: a Kubernetes Deployment (with
// the PersistentVolumeClaim of its state) and a Nomad job (docker driver).
// The manifest's resources become the engine's limits where the engine has
// them (memory, CPU quota); the rest are annotations. See docs/CLUSTER.md.

// ManifestOptions tune the generated manifests.
type ManifestOptions struct {
	Root  string // where the release is installed
	Image string // the image reference; default as Export names it
	// StateSize is the PersistentVolumeClaim's request (default 1Gi).
	StateSize string
}

// Manifests returns the Kubernetes YAML and the Nomad HCL of release ref.
func Manifests(ref string, o ManifestOptions) (k8s, nomad []byte, err error) {
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, nil, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, nil, err
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, nil, err
	}
	if o.Image == "" {
		o.Image = "localhost/tori/" + m.Name + ":" + tagSafe(m.Version)
	}
	if o.StateSize == "" {
		o.StateSize = "1Gi"
	}
	info := ReleaseInfo{Name: m.Name, Version: m.Version, Digest: rel.Digest, BuildSHA: rel.BuildSHA}
	k8s, err = Kubernetes(m, info, o)
	if err != nil {
		return nil, nil, err
	}
	return k8s, Nomad(m, info, o), nil
}

// grace is the time the engine should give a stop: every service's stop
// timeout in turn (they stop one after the other in the worst case) and 10
// s for the rest, as container mode bounds it.
func grace(m *specs.Manifest) time.Duration {
	d := 10 * time.Second
	for _, s := range m.Services {
		d += s.StopTimeout
	}
	return d
}

// k8sQuantities maps resources onto Kubernetes limits: MemoryMax ->
// limits.memory, MemoryHigh -> requests.memory, CPUQuota -> limits.cpu.
func k8sQuantities(r specs.Resources) (limits, requests map[string]string) {
	limits, requests = map[string]string{}, map[string]string{}
	if r.MemoryMax != nil && !r.MemoryMax.Infinity {
		limits["memory"] = bytesQuantity(r.MemoryMax.Bytes)
	}
	if r.MemoryHigh != nil && !r.MemoryHigh.Infinity {
		requests["memory"] = bytesQuantity(r.MemoryHigh.Bytes)
	}
	if r.CPUQuota != nil {
		limits["cpu"] = strconv.FormatInt(int64(math.Ceil(float64(*r.CPUQuota)*10)), 10) + "m"
	}
	return limits, requests
}

func bytesQuantity(b uint64) string {
	for _, u := range []struct {
		n    uint64
		name string
	}{{1 << 30, "Gi"}, {1 << 20, "Mi"}, {1 << 10, "Ki"}} {
		if b%u.n == 0 {
			return strconv.FormatUint(b/u.n, 10) + u.name
		}
	}
	return strconv.FormatUint(b, 10)
}

// Kubernetes returns a Deployment and the PersistentVolumeClaim of its
// state, as one YAML stream.
func Kubernetes(m *specs.Manifest, info ReleaseInfo, o ManifestOptions) ([]byte, error) {
	labels := map[string]string{"app.kubernetes.io/name": m.Name, "app.kubernetes.io/version": m.Version,
		"app.kubernetes.io/managed-by": "tori-run"}
	annotations := map[string]string{LabelRelease: "sha256:" + info.Digest}
	if info.BuildSHA != "" {
		annotations[LabelBuildSHA] = info.BuildSHA
	}
	for k, v := range Labels(m, info.Digest, info.BuildSHA) {
		if strings.HasPrefix(k, "run.tori.resources.") || strings.HasPrefix(k, "run.tori.service.") {
			annotations[k] = v
		}
	}
	limits, requests := k8sQuantities(m.Resources)
	resources := map[string]any{}
	if len(limits) > 0 {
		resources["limits"] = limits
	}
	if len(requests) > 0 {
		resources["requests"] = requests
	}
	mounts := []map[string]any{
		{"name": "state", "mountPath": StateRoot},
		{"name": "run", "mountPath": "/run/tori"},
	}
	volumes := []map[string]any{
		{"name": "state", "persistentVolumeClaim": map[string]any{"claimName": m.Name + "-state"}},
		{"name": "run", "emptyDir": map[string]any{"medium": "Memory"}},
	}
	if m.ReadOnly {
		mounts = append(mounts, map[string]any{"name": "tmp", "mountPath": "/tmp"}, map[string]any{"name": "root", "mountPath": "/opt/tori"})
		volumes = append(volumes, map[string]any{"name": "tmp", "emptyDir": map[string]any{}}, map[string]any{"name": "root", "emptyDir": map[string]any{}})
	}
	for i, v := range m.Volumes {
		name := fmt.Sprintf("volume-%d", i)
		mounts = append(mounts, map[string]any{"name": name, "mountPath": v.Capsule, "readOnly": v.ReadOnly})
		volumes = append(volumes, map[string]any{"name": name, "hostPath": map[string]any{"path": v.Host, "type": "DirectoryOrCreate"}})
	}
	container := map[string]any{
		"name":            m.Name,
		"image":           o.Image,
		"imagePullPolicy": "IfNotPresent",
		"readinessProbe": map[string]any{
			"exec":          map[string]any{"command": []string{Binary, "container-ready"}},
			"periodSeconds": 5, "failureThreshold": 3,
		},
		"volumeMounts": mounts,
		"securityContext": map[string]any{
			"allowPrivilegeEscalation": false,
			"readOnlyRootFilesystem":   m.ReadOnly,
		},
	}
	if len(resources) > 0 {
		container["resources"] = resources
	}
	deploy := map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata":   map[string]any{"name": m.Name, "labels": labels, "annotations": annotations},
		"spec": map[string]any{
			"replicas": 1,
			// The state store has one writer (its LOCK): never two pods at once.
			"strategy": map[string]any{"type": "Recreate"},
			"selector": map[string]any{"matchLabels": map[string]string{"app.kubernetes.io/name": m.Name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels, "annotations": annotations},
				"spec": map[string]any{
					"terminationGracePeriodSeconds": int(grace(m).Seconds()),
					"containers":                    []any{container},
					"volumes":                       volumes,
				},
			},
		},
	}
	pvc := map[string]any{
		"apiVersion": "v1",
		"kind":       "PersistentVolumeClaim",
		"metadata":   map[string]any{"name": m.Name + "-state", "labels": labels},
		"spec": map[string]any{
			"accessModes": []string{"ReadWriteOnce"},
			"resources":   map[string]any{"requests": map[string]string{"storage": o.StateSize}},
		},
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Generated by tori-run export-manifests from %s %s (release sha256:%s).\n", m.Name, m.Version, info.Digest)
	b.WriteString("# Limits are the engine's: memory and cpu come from the manifest's resources; the rest are annotations.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(deploy); err != nil {
		return nil, err
	}
	if err := enc.Encode(pvc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// hclString quotes s as an HCL string (no interpolation).
func hclString(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

// Nomad returns a job for the docker driver: the state on a host volume
// named "<name>-state" (the client's host_volume), the grace period as
// kill_timeout, memory and CPU from the manifest.
func Nomad(m *specs.Manifest, info ReleaseInfo, o ManifestOptions) []byte {
	var b strings.Builder
	q := hclString
	fmt.Fprintf(&b, "# Generated by tori-run export-manifests from %s %s (release sha256:%s).\n", m.Name, m.Version, info.Digest)
	b.WriteString("# The state volume is a client host_volume: host_volume \"" + m.Name + "-state\" { path = \"/srv/tori/" + m.Name + "\" }.\n")
	fmt.Fprintf(&b, "job %s {\n  type = \"service\"\n\n", q(m.Name))
	meta := map[string]string{LabelRelease: "sha256:" + info.Digest, LabelVersion: m.Version}
	if info.BuildSHA != "" {
		meta[LabelBuildSHA] = info.BuildSHA
	}
	for k, v := range ResourceValues(m.Resources) {
		meta["run.tori.resources."+k] = v
	}
	writeMap(&b, "  meta", meta)
	fmt.Fprintf(&b, "\n  group %s {\n    count = 1\n\n", q(m.Name))
	fmt.Fprintf(&b, "    volume \"state\" {\n      type      = \"host\"\n      source    = %s\n      read_only = false\n    }\n\n", q(m.Name+"-state"))
	fmt.Fprintf(&b, "    task %s {\n      driver       = \"docker\"\n      kill_signal  = \"SIGTERM\"\n      kill_timeout = %s\n\n", q(m.Name), q(grace(m).String()))
	fmt.Fprintf(&b, "      config {\n        image = %s\n", q(o.Image))
	if len(m.Volumes) > 0 {
		var vols []string
		for _, v := range m.Volumes {
			mode := "rw"
			if v.ReadOnly {
				mode = "ro"
			}
			vols = append(vols, q(v.Host+":"+v.Capsule+":"+mode))
		}
		fmt.Fprintf(&b, "        volumes = [%s]\n", strings.Join(vols, ", "))
	}
	if m.ReadOnly {
		b.WriteString("        readonly_rootfs = true\n")
	}
	if m.Resources.CPUQuota != nil {
		b.WriteString("        cpu_hard_limit = true\n")
	}
	b.WriteString("      }\n\n")
	fmt.Fprintf(&b, "      volume_mount {\n        volume      = \"state\"\n        destination = %s\n      }\n\n", q(StateRoot))
	b.WriteString("      resources {\n")
	cpu := 100
	if m.Resources.CPUQuota != nil {
		// Nomad counts CPU in MHz; 100% of one CPU is taken as 1000 MHz here.
		cpu = int(math.Ceil(float64(*m.Resources.CPUQuota) * 10))
	}
	fmt.Fprintf(&b, "        cpu = %d\n", cpu)
	mem := uint64(256)
	if m.Resources.MemoryHigh != nil && !m.Resources.MemoryHigh.Infinity {
		mem = (m.Resources.MemoryHigh.Bytes + (1<<20 - 1)) >> 20
	} else if m.Resources.MemoryMax != nil && !m.Resources.MemoryMax.Infinity {
		mem = (m.Resources.MemoryMax.Bytes + (1<<20 - 1)) >> 20
	}
	fmt.Fprintf(&b, "        memory = %d\n", mem)
	if m.Resources.MemoryMax != nil && !m.Resources.MemoryMax.Infinity {
		fmt.Fprintf(&b, "        memory_max = %d\n", (m.Resources.MemoryMax.Bytes+(1<<20-1))>>20)
	}
	b.WriteString("      }\n\n")
	// Readiness: the capsule's own probes, summed up by container mode.
	// Script checks need Consul as the service provider.
	fmt.Fprintf(&b, "      service {\n        name     = %s\n        provider = \"consul\"\n\n", q(m.Name))
	fmt.Fprintf(&b, "        check {\n          name     = \"ready\"\n          type     = \"script\"\n          command  = %s\n          args     = [\"container-ready\"]\n          interval = \"5s\"\n          timeout  = \"2s\"\n        }\n      }\n", q(Binary))
	b.WriteString("    }\n  }\n}\n")
	return []byte(b.String())
}

func writeMap(b *strings.Builder, name string, m map[string]string) {
	fmt.Fprintf(b, "%s = {\n", name)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(b, "    %s = %s\n", hclString(k), hclString(m[k]))
	}
	b.WriteString("  }\n")
}

// WriteManifests writes kubernetes.yaml and nomad.hcl into dir, each
// whole or not at all.
func WriteManifests(dir string, k8s, nomad []byte) error {
	for _, f := range []struct {
		name string
		b    []byte
	}{{"kubernetes.yaml", k8s}, {"nomad.hcl", nomad}} {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
