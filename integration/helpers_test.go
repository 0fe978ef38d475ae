package integration

import (
	"fmt"

	"github.com/tori-run/tori-run/cgroups"
)

type runtimeStats = cgroups.Stats

func fmtSscanf(s, format string, args ...any) (int, error) { return fmt.Sscanf(s, format, args...) }
