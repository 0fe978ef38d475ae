package image

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"go.yaml.in/yaml/v3"
)

// TestManifestsCarryTheCapsule: the generated Deployment parses, runs the
// image with an exec readiness probe, mounts the state volume at
// TORI_STATE_ROOT, and has the manifest's memory and CPU as limits and a
// grace period that covers the stop; the Nomad job parses as HCL.
func TestManifestsCarryTheCapsule(t *testing.T) {
	root := install(t, pyManifest, map[string]string{"writer.py": "print('hi')\n"})
	k8s, nomad, err := Manifests("writer", ManifestOptions{Root: root, Image: "registry.example/writer:1"})
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Strategy struct{ Type string } `yaml:"strategy"`
			Template struct {
				Spec struct {
					Grace      int `yaml:"terminationGracePeriodSeconds"`
					Containers []struct {
						Image     string `yaml:"image"`
						Resources struct {
							Limits map[string]string `yaml:"limits"`
						} `yaml:"resources"`
						ReadinessProbe struct {
							Exec struct{ Command []string } `yaml:"exec"`
						} `yaml:"readinessProbe"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.NewDecoder(strings.NewReader(string(k8s))).Decode(&d); err != nil {
		t.Fatalf("kubernetes.yaml: %v\n%s", err, k8s)
	}
	c := d.Spec.Template.Spec.Containers
	if d.Kind != "Deployment" || len(c) != 1 || c[0].Image != "registry.example/writer:1" {
		t.Fatalf("deployment: %+v", d)
	}
	if c[0].Resources.Limits["memory"] != "256Mi" || c[0].Resources.Limits["cpu"] != "500m" {
		t.Errorf("limits %v, want memory 256Mi and cpu 500m from MemoryMax and CPUQuota", c[0].Resources.Limits)
	}
	if strings.Join(c[0].ReadinessProbe.Exec.Command, " ") != Binary+" container-ready" {
		t.Errorf("readiness probe %v", c[0].ReadinessProbe.Exec.Command)
	}
	if d.Spec.Template.Spec.Grace < 30 || d.Spec.Strategy.Type != "Recreate" {
		t.Errorf("grace %d (want >= 30: two 10 s stop timeouts and 10 s), strategy %q (want Recreate: one writer of the state)",
			d.Spec.Template.Spec.Grace, d.Spec.Strategy.Type)
	}
	found := false
	for _, m := range c[0].VolumeMounts {
		found = found || (m.Name == "state" && m.MountPath == StateRoot)
	}
	if !found {
		t.Errorf("no state volume at %s: %+v", StateRoot, c[0].VolumeMounts)
	}
	if _, diags := hclparse.NewParser().ParseHCL(nomad, "nomad.hcl"); diags.HasErrors() {
		t.Errorf("nomad.hcl: %v\n%s", diags, nomad)
	}
	if !strings.Contains(string(nomad), "memory_max = 256") || !strings.Contains(string(nomad), `image = "registry.example/writer:1"`) {
		t.Errorf("nomad.hcl lacks the image or memory_max:\n%s", nomad)
	}
}
