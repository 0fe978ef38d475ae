//go:build linux

package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostcheck"
)

// hostFlags are the operator's allowances: --allow-volume PATH[:ro]
// (repeatable) and --config FILE (the host configuration, default
// TORI_HOST_CONFIG or /etc/tori-run/host.yml).
type hostFlags struct {
	allow  []string
	config string
}

func addHostFlags(c *cobra.Command, h *hostFlags) {
	c.Flags().StringArrayVar(&h.allow, "allow-volume", nil, "a host path capsules may bind (and below it); PATH:ro allows only read-only binds; repeatable")
	c.Flags().StringVar(&h.config, "config", envOr("TORI_HOST_CONFIG", ""), "the host configuration (volumes capsules may bind, state bounds) (env TORI_HOST_CONFIG; default /etc/tori-run/host.yml if it exists)")
}

func (h *hostFlags) load() (*runtime.HostConfig, error) {
	hc, err := runtime.LoadHost(h.config, h.allow)
	var ue *runtime.UsageError
	if errors.As(err, &ue) {
		return nil, usageError{err}
	}
	return hc, err
}

// validateRuntime gives validate tori-run's folders and, with --host, what
// the operator allows, so that volumes are checked as run would.
func (g *globals) validateRuntime(o *hostcheck.ValidateOptions, hf *hostFlags) error {
	o.Runtime = g.runtimeOptions("", "")
	if o.Host {
		var err error
		if o.Runtime.Host, err = hf.load(); err != nil {
			return err
		}
	}
	return nil
}
