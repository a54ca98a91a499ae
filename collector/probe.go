package collector

import (
	"errors"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// ErrSkip is returned (wrapped) by a probe's Decode for a hit that is
// correctly decoded but yields no event (a write to a pipe rather than a
// file, a thread rather than a process). The collector counts it by probe.
var ErrSkip = errors.New("hit yields no event")

// Probe is one hooked kernel function and how to decode its hits.
type Probe struct {
	// Name is the hook tag and the value of the "probe" metric label: the
	// kernel function's name (e.g. "do_sys_openat2", "NtCreateFile").
	Name string
	// Kind is the kind of event the probe emits.
	Kind Kind
	// Addr is the function's address in the running guest (after KASLR).
	Addr introspect.Va
	// Root is the kernel translation root Addr is resolved under.
	Root introspect.Pa
	// Decode fills ev (already carrying Time, Kind, Guest, VCPU, Probe)
	// from the guest state at the hit. Errors that wrap a paging
	// translation error for a missing page let the engine inject a page
	// fault and retry; ErrSkip drops the hit; other errors are counted.
	Decode func(h *hook.Hit, ev *Event) error
}

// GuestOS is what the collector needs from a guest's OS layer once it is
// attached: identity and the probes to install.
type GuestOS interface {
	// OS returns "linux" or "windows".
	OS() string
	// Kernel returns the kernel build (banner, or PDB name and GUID).
	Kernel() string
	// Probes returns the probes for the enabled event kinds.
	Probes(enabled []Kind) ([]Probe, error)
}
