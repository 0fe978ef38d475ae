//go:build linux

package hostcheck

import (
	"errors"
	"fmt"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/specs"
)

// checkVolumesOnHost reports each volume as run would find it here.
func (r *Report) checkVolumesOnHost(m *specs.Manifest, o ValidateOptions) {
	ro := o.Runtime
	if ro.StateRoot == "" {
		ro.StateRoot = o.StateDir
	}
	for i, v := range m.Volumes {
		f := Finding{Check: "volume", File: m.Source, Line: v.Line, Field: fmt.Sprintf("volumes[%d]", i)}
		real, err := runtime.CheckVolume(m, v, ro)
		var ve *runtime.VolumeError
		switch {
		case errors.As(err, &ve):
			f.Status, f.Message = StatusFail, ve.Msg
		case err != nil:
			f.Status, f.Message = StatusFail, err.Error()
		default:
			f.Status = StatusPass
			f.Message = fmt.Sprintf("%s:%s: %s is allowed on this host", v.Host, v.Capsule, real)
		}
		r.add(f)
	}
}
