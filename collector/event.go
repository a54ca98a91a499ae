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
	// Path is the file of file events (for file.rename, the new path).
	Path string `json:"path,omitempty"`
	// OldPath is the path a file.rename renamed from.
	OldPath string `json:"old_path,omitempty"`
	// Created tells, for file.create, whether the open made a new file
	// (true) or opened an existing one with O_CREAT (false); nil when
	// the probe cannot tell.
	Created *bool `json:"created,omitempty"`
	// Syscall is the system call family of a file.write (write, writev,
	// sendfile, splice, copy_file_range) or file.delete (unlink, rmdir).
	Syscall string `json:"syscall,omitempty"`
	// Bytes is the byte count a file.write asked for: probes hook function
	// entries, so a short or failed write is counted as requested.
	Bytes uint64 `json:"bytes,omitempty"`
	// Args is the argument vector of a process.exec, bounded in count and
	// bytes; ArgsTruncated reports that a bound cut it.
	Args          []string `json:"args,omitempty"`
	ArgsTruncated bool     `json:"args_truncated,omitempty"`
	// ExitCode is the exit status of a process.exit that exited (nil when
	// unknown or killed by a signal); ExitSignal the signal that killed it.
	ExitCode   *int32 `json:"exit_code,omitempty"`
	ExitSignal int32  `json:"exit_signal,omitempty"`
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
