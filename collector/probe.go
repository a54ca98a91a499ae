package collector

import (
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
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

// ProbeSpec names the kernel function whose hits yield one kind of event,
// and how to decode them; an OS layer lists at least one per kind it
// supports (more when the kind's events take several paths through the
// kernel).
type ProbeSpec struct {
	Kind   Kind
	Func   string
	Decode func(h *hook.Hit, ev *Event) error
	// Optional marks a function some kernel builds lack (inlined, or
	// configured out): when its symbol is not found, the spec is skipped
	// instead of failing the selection.
	Optional bool
}

// SelectProbes returns the probes of the enabled kinds that specs cover,
// with each function's address resolved by symbol and rooted at root.
// Enabled kinds without a spec (page faults, page-in/out, reinjections:
// those come from the hook engine) are ignored. An optional spec whose
// symbol is missing (symbol's error wraps profile.ErrNotFound) is skipped;
// any other lookup error fails.
func SelectProbes(enabled []Kind, specs []ProbeSpec, symbol func(string) (introspect.Va, error), root introspect.Pa) ([]Probe, error) {
	var out []Probe
	for _, k := range enabled {
		for _, s := range specs {
			if s.Kind != k {
				continue
			}
			addr, err := symbol(s.Func)
			if err != nil && s.Optional && errors.Is(err, profile.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("probe %s for %s: %w", s.Func, k, err)
			}
			out = append(out, Probe{Name: s.Func, Kind: k, Addr: addr, Root: root, Decode: s.Decode})
		}
	}
	return out, nil
}
