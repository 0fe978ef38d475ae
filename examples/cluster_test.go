package examples

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2/hclparse"
	"go.yaml.in/yaml/v3"
)

// TestKubernetesExamplesParse: every YAML document of examples/kubernetes
// parses and is a kind the example means (a Deployment and its claim).
func TestKubernetesExamplesParse(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples/kubernetes/*.yaml")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		kinds := map[string]bool{}
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Spec       struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Image          string         `yaml:"image"`
								ReadinessProbe map[string]any `yaml:"readinessProbe"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kinds[doc.Kind] = true
			if doc.Kind == "Deployment" {
				c := doc.Spec.Template.Spec.Containers
				if len(c) != 1 || c[0].Image == "" || c[0].ReadinessProbe["exec"] == nil {
					t.Errorf("%s: the Deployment's container has no image or exec readiness probe: %+v", f, c)
				}
			}
		}
		if !kinds["Deployment"] || !kinds["PersistentVolumeClaim"] {
			t.Errorf("%s: kinds %v, want a Deployment and a PersistentVolumeClaim", f, kinds)
		}
	}
}

// TestNomadExamplesParse: examples/nomad parses as HCL with a job block.
func TestNomadExamplesParse(t *testing.T) {
	files, _ := filepath.Glob("nomad/*.hcl")
	if len(files) == 0 {
		t.Fatal("no examples/nomad/*.hcl")
	}
	p := hclparse.NewParser()
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		content, _, diags := file.Body.PartialContent(jobSchema)
		if diags.HasErrors() || len(content.Blocks) != 1 {
			t.Errorf("%s: want one job block: %v", f, diags)
		}
	}
}
