package collector

import (
	"context"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// GuestConfig describes one guest to watch and how to reach it. The koanf
// tags are the keys of the configuration file (internal/config).
type GuestConfig struct {
	// Name is the domain label of every metric and span of the guest.
	Name string `koanf:"name" yaml:"name"`
	// Driver names the guest's backend (collector/attach), which selects
	// its Attacher and owns its section below: "qemu" (the default) or
	// "xen".
	Driver string `koanf:"driver" yaml:"driver"`
	// OS is "linux", "windows" or "auto".
	OS      string        `koanf:"os" yaml:"os"`
	QEMU    QEMUConfig    `koanf:"qemu" yaml:"qemu"`
	Xen     XenConfig     `koanf:"xen" yaml:"xen,omitempty"`
	Profile ProfileConfig `koanf:"profile" yaml:"profile,omitempty"`
}

// QEMUConfig locates a running QEMU guest: the section of the qemu
// backend, which validates it (collector/attach).
type QEMUConfig struct {
	// GDBSocket is the gdbstub: a unix socket path or host:port.
	GDBSocket string `koanf:"gdb_socket" yaml:"gdb_socket,omitempty"`
	// QMPSocket is the QMP unix socket path (pause, resume, status).
	QMPSocket string `koanf:"qmp_socket" yaml:"qmp_socket,omitempty"`
	// RAMPath is the file of the guest's shared memory-backend-file; empty
	// makes the driver read memory through the gdbstub (slow).
	RAMPath string `koanf:"ram_path" yaml:"ram_path,omitempty"`
	// RAMSize is the size of guest RAM in bytes (0: size of RAMPath).
	RAMSize uint64 `koanf:"ram_size" yaml:"ram_size,omitempty"`
	// PluginSHM is the shared file of the vmi-hooks TCG plugin QEMU was
	// started with (its shm= argument). When the file exists, hooks run
	// through the plugin, which holds only the hitting vCPU, and the
	// gdbstub is not used; it needs RAMPath. Otherwise the gdbstub's
	// breakpoints, which stop the whole guest per hit, are the fallback.
	PluginSHM string `koanf:"plugin_shm" yaml:"plugin_shm,omitempty"`
}

// XenConfig locates a Xen domain: the section of the xen backend, which
// validates it (collector/attach).
type XenConfig struct {
	// Domain is the domain's name (xl list); the guest's name if empty.
	Domain string `koanf:"domain" yaml:"domain,omitempty"`
	// LockDir holds the exporter's claim on each domain it watches, by
	// which the next exporter tells a dead one's orphaned vm_event ring
	// (torn down at attach) from a live introspector's; empty means
	// /run/vmi-exporter. In a container it must outlive the container (a
	// hostPath), or a crashed exporter's ring is not recognised.
	LockDir string `koanf:"lock_dir" yaml:"lock_dir,omitempty"`
}

// ProfileConfig overrides how the OS layer finds kernel symbols and types.
type ProfileConfig struct {
	// KernelImage is the guest kernel's image (a Linux vmlinuz/bzImage or
	// vmlinux): symbols from its kallsyms, types from its BTF. Without it
	// the attacher finds the kernel banner in guest memory and takes the
	// profile cached under that banner.
	KernelImage string `koanf:"kernel_image" yaml:"kernel_image,omitempty"`
	SystemMap   string `koanf:"system_map" yaml:"system_map,omitempty"` // System.map file
	ISF         string `koanf:"isf" yaml:"isf,omitempty"`               // Volatility 3 ISF (JSON, optionally .xz)
	CacheDir    string `koanf:"cache_dir" yaml:"cache_dir,omitempty"`   // where built profiles are cached
}

// Attacher connects to a guest. One Attacher serves every guest of its
// driver; Attach is called again after a session ends with an error.
type Attacher interface {
	// Attach connects to the guest, identifies its OS and kernel, and
	// returns a session whose engine has no hooks yet. It must leave the
	// guest running (or paused only while it works) when it returns.
	Attach(ctx context.Context, g GuestConfig) (Session, error)
}

// Session is one attachment to a guest.
//
// If a Session also implements driver.Pauser, the collector pauses the
// guest while it installs hooks and resumes it before running the engine.
type Session interface {
	// Guest is the identity stamped on every event of the session; its
	// Domain is the configured name (GuestConfig.Name).
	Guest() *Guest
	// OS is the guest's OS layer: it provides the probes.
	OS() GuestOS
	// Engine runs the hooks the collector installs.
	Engine() hook.Engine
	// Close removes every hook (Engine().Close()) and detaches, leaving
	// the guest running as it was found. It is safe to call twice.
	Close() error
}

// Verifier is implemented by a Session that can tell, while its engine
// runs, whether the guest still runs the kernel it attached to. Verify
// returns an error once it does not (a reboot moves a KASLR kernel, so the
// hooks sit on the wrong code), or one wrapping driver.ErrUnsupported when
// the session cannot check without stopping the guest. It is called from
// another goroutine than the engine's.
type Verifier interface {
	Verify() error
}

// Rule inspects an event before it is exported and returns the names of
// the rules it matched (issue 6 implements the rules engine). Rules run in
// the event loop: they must be fast and must not block.
type Rule interface {
	Match(ev *Event) []string
}

// RuleFunc adapts a function to Rule.
type RuleFunc func(ev *Event) []string

// Match calls f.
func (f RuleFunc) Match(ev *Event) []string { return f(ev) }

// Enricher adds to an event in the event loop, before rules and metrics
// (the OTLP exporter assigns the trace ID there, so metrics can carry it
// as an exemplar). It must be fast and safe for concurrent use.
type Enricher interface {
	Enrich(ev *Event)
}

// Sink receives events through a bounded queue, from one goroutine.
// Events are shared between sinks and must not be modified.
type Sink interface {
	// Name is the value of the exporter label.
	Name() string
	// Export handles one event.
	Export(ev *Event)
	// Close flushes what the sink buffered and releases it.
	Close(ctx context.Context) error
}

// Probe error reasons: the reason label of vmi_probe_errors_total.
const (
	ReasonSkip       = "skip"       // Decode returned ErrSkip
	ReasonDecode     = "decode"     // Decode failed on guest data
	ReasonUnreadable = "unreadable" // a page was missing and could not be paged in
	ReasonHandler    = "handler"    // the engine reported a handler failure
	ReasonUnknown    = "unknown_probe"
)

// Metrics is what the collector updates synchronously in the event loop.
// Implementations must be safe for concurrent use by every supervisor.
type Metrics interface {
	// Event counts a decoded event; latency is ev.Latency.
	Event(ev *Event)
	// ProbeError counts a hit that produced no event.
	ProbeError(domain, probe, reason string)
	// Notice counts an engine notice that is not an event, by its name
	// (hook.NoticeKind's String).
	Notice(domain, notice string)
	// Attach records an attach attempt and its result.
	Attach(domain string, err error)
	// Up marks a guest up (with its identity) or down (g may be nil then).
	Up(domain string, g *Guest, up bool)
	// Dropped counts an event a full exporter queue refused.
	Dropped(domain, exporter string)
	// Queue registers a function reporting an exporter queue's length.
	Queue(exporter string, length func() int)
}

// Backoff configures the delay between attach attempts of one guest.
type Backoff struct {
	Initial time.Duration `koanf:"initial" yaml:"initial"`
	Max     time.Duration `koanf:"max" yaml:"max"`
	// Jitter is the randomization factor in [0,1): each delay is drawn
	// from [d*(1-Jitter), d*(1+Jitter)].
	Jitter float64 `koanf:"jitter" yaml:"jitter"`
}
