package examples

import "github.com/hashicorp/hcl/v2"

var jobSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "job", LabelNames: []string{"name"}}}}
