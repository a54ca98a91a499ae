package attach

import (
	"errors"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// The Xen backend: a domain of the local Xen host by name, through
// libxenctrl, vm_event and altp2m (the guest's xen: section). The driver
// needs cgo and libxen, so Open is only built with the xen tag
// (xen_open.go); without it, xen guests pass validation and are refused
// at start.

func init() {
	Register(Backend{Name: "xen", Validate: validateXen, Open: openXen})
}

// validateXen checks the xen: section: the domain name is required.
func validateXen(g collector.GuestConfig) []error {
	if g.Xen.Domain == "" {
		return []error{errors.New("xen.domain is required")}
	}
	return nil
}
