package collector

import (
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Guest identifies the guest an event comes from. One Guest value is shared
// by all events of a guest; it must not change after the first event.
type Guest struct {
	Domain   string `json:"domain"`              // configured name (QEMU) or Xen domain name
	DomainID string `json:"domain_id,omitempty"` // Xen domid, QEMU pid or socket
	OS       string `json:"os"`                  // "linux" or "windows"
	Kernel   string `json:"kernel,omitempty"`    // kernel build: banner or PDB name+GUID
}

// Process is the guest process an event concerns.
type Process struct {
	PID       uint64 `json:"pid"`
	PPID      uint64 `json:"ppid"`
	Name      string `json:"name,omitempty"`       // comm / ImageFileName
	Image     string `json:"image,omitempty"`      // executable path, when known
	ImageBase uint64 `json:"image_base,omitempty"` // Windows: SectionBaseAddress
	PEB       uint64 `json:"peb,omitempty"`        // Windows: process environment block
}

// Event is one thing that happened in a guest.
type Event struct {
	Time  time.Time `json:"time"`
	Kind  Kind      `json:"kind"`
	Guest *Guest    `json:"guest"`
	VCPU  int       `json:"vcpu"`
	// Probe is the hook that produced the event ("" for engine notices).
	Probe   string  `json:"probe,omitempty"`
	Process Process `json:"process"`
	// Path is the file of file events.
	Path string `json:"path,omitempty"`
	// Address is the guest virtual address of page and fault events.
	Address uint64 `json:"address,omitempty"`
	// Latency is the time from the vCPU stop to the decoded event.
	Latency time.Duration `json:"latency_ns"`
	// Rules are the names of the rules the event matched.
	Rules []string `json:"rules,omitempty"`
	// Truncated names the fields cut to Limits.MaxStringLen (FieldPath,
	// ...): the guest sent more than the exporter keeps.
	Truncated []string `json:"truncated,omitempty"`
	// TraceID is the trace of the event's process, when a trace exporter
	// is enabled (set by its Enricher; metrics use it as an exemplar).
	TraceID trace.TraceID `json:"trace_id,omitzero"`
}
