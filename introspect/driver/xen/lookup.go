package xen

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrNoDomain is returned (wrapped) when no domain has the given name.
var ErrNoDomain = errors.New("no such Xen domain")

// maxDomains bounds the XenStore directory walk and maxNameLen a domain
// name read from XenStore (Xen's own limit is 64).
const (
	maxDomains = 4096
	maxNameLen = 256
)

// domainEntry is one /local/domain/<id> of XenStore and its name.
type domainEntry struct {
	id   string
	name string
}

// matchDomain picks the domain id whose name is name. Entries whose id is
// not a domain number are skipped; two domains of one name are an error,
// since attaching to the wrong guest is worse than not attaching.
func matchDomain(entries []domainEntry, name string) (uint32, error) {
	found := -1
	var id uint32
	for i, e := range entries {
		if e.name != name {
			continue
		}
		v, err := strconv.ParseUint(e.id, 10, 16) // domid_t is 16 bits
		if err != nil {
			continue
		}
		if found >= 0 {
			return 0, fmt.Errorf("Xen domain name %q is used by domains %d and %d", name, id, v)
		}
		found, id = i, uint32(v)
	}
	if found < 0 {
		return 0, fmt.Errorf("%w: %q", ErrNoDomain, name)
	}
	return id, nil
}
