package attach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// Backend is one way of reaching guests: the value of their driver: key,
// how to check their section of the configuration, and how to open a
// driver from it.
type Backend struct {
	// Name is the guests' driver: value that selects the backend.
	Name string
	// Validate reports what is wrong with a guest's section of this
	// backend (qemu.gdb_socket unset, ...), as errors without the guest's
	// name. It checks the configuration, not the hypervisor. Nil accepts
	// every section.
	Validate func(g collector.GuestConfig) []error
	// Open connects to the guest and returns its driver, with the guest
	// paused or running (the common path pauses a driver.Pauser itself),
	// and the guest's id under its hypervisor
	// (collector.Guest.DomainID). Nil when this binary was built without
	// the backend (Xen without the xen tag): its guests pass validation
	// and are refused at start for lack of an attacher.
	Open func(ctx context.Context, g collector.GuestConfig, log *slog.Logger) (driver.Driver, string, error)
}

// DefaultBackend is the backend of a guest whose configuration names none.
const DefaultBackend = "qemu"

// backends are written by Register, from init functions only, and read
// after: no lock is needed.
var backends = map[string]Backend{}

// Register adds a backend. A backend file calls it from its init, and
// nothing else may: the registry is read without a lock. It panics if the
// name is empty or taken, as two backends of one name are a programming
// error.
func Register(b Backend) {
	if b.Name == "" {
		panic("attach: Register of a backend without a name")
	}
	if _, dup := backends[b.Name]; dup {
		panic("attach: backend " + b.Name + " registered twice")
	}
	backends[b.Name] = b
}

// Lookup returns the backend of a driver: name.
func Lookup(name string) (Backend, bool) {
	b, ok := backends[name]
	return b, ok
}

// Names returns the names of the registered backends, sorted, including
// those this binary was built without.
func Names() []string {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Attachers returns an Attacher for each backend built into this binary,
// by name: the collector's Options.Attachers.
func Attachers(log *slog.Logger) map[string]collector.Attacher {
	m := map[string]collector.Attacher{}
	for _, n := range Names() {
		if b, _ := Lookup(n); b.Open != nil {
			m[n] = &Attacher{Backend: b, Log: log}
		}
	}
	return m
}

// Attacher attaches to the guests of one backend: it opens the backend's
// driver, then builds the session on it with Open.
type Attacher struct {
	Backend Backend
	// Log receives attach progress; nil discards.
	Log *slog.Logger
}

// Attach implements collector.Attacher.
func (a *Attacher) Attach(ctx context.Context, g collector.GuestConfig) (collector.Session, error) {
	if a.Backend.Open == nil {
		return nil, fmt.Errorf("attach %s: driver %q is not built into this binary", g.Name, a.Backend.Name)
	}
	log := a.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("domain", g.Name)
	d, id, err := a.Backend.Open(ctx, g, log)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", g.Name, err)
	}
	s, err := Open(ctx, d, g, id, log)
	if err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return s, nil
}

// ValidateGuest checks the backend part of a guest's configuration: that
// its driver names a registered backend, and that backend's section. The
// errors do not name the guest.
func ValidateGuest(g collector.GuestConfig) []error {
	b, ok := Lookup(g.Driver)
	if !ok {
		names := Names()
		list := "not one of " + strings.Join(names, ", ")
		if len(names) == 2 {
			list = "neither " + names[0] + " nor " + names[1]
		}
		return []error{fmt.Errorf("driver %q is %s", g.Driver, list)}
	}
	if b.Validate == nil {
		return nil
	}
	return b.Validate(g)
}
