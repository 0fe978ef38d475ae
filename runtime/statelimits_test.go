//go:build linux

package runtime

import (
	"testing"
	"time"

	"github.com/tori-run/tori-run/specs"
)

func TestStateLimits(t *testing.T) {
	var o Options
	if got := o.stateLimits(); got != (StateLimits{Quota: DefaultStateQuota}) {
		t.Errorf("no configuration: %+v, want the 1 GiB default quota only", got)
	}
	o.Host = &HostConfig{Config: &specs.HostConfig{State: specs.HostState{
		Quota:           &specs.Size{Bytes: 512 << 20},
		EventRetention:  specs.EventRetention{Count: 10, Age: time.Hour},
		MaxTokensPerMin: 100,
	}}}
	want := StateLimits{Quota: 512 << 20, EventRetentionCount: 10, EventRetentionAge: time.Hour, MaxTokensCeiling: 100}
	if got := o.stateLimits(); got != want {
		t.Errorf("host.yml state: %+v, want %+v", got, want)
	}
	o.StateQuota, o.EventRetentionCount, o.MaxTokensCeiling = -1, 5, 50
	want = StateLimits{Quota: 0, EventRetentionCount: 5, EventRetentionAge: time.Hour, MaxTokensCeiling: 50}
	if got := o.stateLimits(); got != want {
		t.Errorf("flags over host.yml: %+v, want %+v", got, want)
	}
}
