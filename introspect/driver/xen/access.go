package xen

import (
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// xenmem_access_t values (xen/memory.h) up to rwx. Their bits happen to be
// R=1, W=2, X=4 like introspect.Access, but the mapping is spelled out so a
// change on either side shows up in the tests.
const (
	xenmemAccessN = iota
	xenmemAccessR
	xenmemAccessW
	xenmemAccessRW
	xenmemAccessX
	xenmemAccessRX
	xenmemAccessWX
	xenmemAccessRWX
	xenmemAccessRX2RW
	xenmemAccessN2RWX
	xenmemAccessDefault
)

var toXenmem = [8]uint32{
	introspect.AccessNone:                   xenmemAccessN,
	introspect.AccessR:                      xenmemAccessR,
	introspect.AccessW:                      xenmemAccessW,
	introspect.AccessRW:                     xenmemAccessRW,
	introspect.AccessX:                      xenmemAccessX,
	introspect.AccessRX:                     xenmemAccessRX,
	introspect.AccessW | introspect.AccessX: xenmemAccessWX,
	introspect.AccessRWX:                    xenmemAccessRWX,
}

// XenmemAccess returns the xenmem_access_t for a set of access rights.
func XenmemAccess(a introspect.Access) (uint32, error) {
	if a&^introspect.AccessRWX != 0 {
		return 0, fmt.Errorf("access %#x has bits outside rwx", uint8(a))
	}
	return toXenmem[a], nil
}

// AccessFromXenmem returns the access rights of a xenmem_access_t. The
// special values (rx2rw, n2rwx, default) have no equivalent and are errors.
func AccessFromXenmem(x uint32) (introspect.Access, error) {
	for a, v := range toXenmem {
		if v == x {
			return introspect.Access(a), nil
		}
	}
	return 0, fmt.Errorf("xenmem_access_t %d has no rwx equivalent", x)
}
