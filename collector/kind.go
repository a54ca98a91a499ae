package collector

import (
	"fmt"
	"slices"

	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Kind is the type of an Event.
type Kind uint8

// Event kinds. Each has a row in kinds, from which the exporters, the
// rules and the configuration derive what they know of it.
const (
	KindFileCreate Kind = iota + 1
	KindFileWrite
	KindProcessStart
	KindProcessExit
	KindPageFaultInjected
	KindPageIn
	KindPageOut
	KindBreakpointReinjected
	KindFileRename
	KindFileDelete
	KindProcessExec
)

// Source is what produces the events of a kind.
type Source uint8

// Sources of events.
const (
	// SourceProbe: a hooked kernel function, decoded by the guest's OS
	// layer (its ProbeSpecs for the kind). The configuration's probes
	// list enables it.
	SourceProbe Source = iota + 1
	// SourceEngine: a notice of the hook engine (KindInfo.Notice),
	// always on.
	SourceEngine
)

// SpanRole is the part the events of a kind play in their process's trace.
type SpanRole uint8

// Span roles.
const (
	// SpanNone: not traced (the events concern no process).
	SpanNone SpanRole = iota
	// SpanProcessStart starts the process span.
	SpanProcessStart
	// SpanProcessEnd ends the process span.
	SpanProcessEnd
	// SpanEvent is a child span of the process span, named KindInfo.Name.
	SpanEvent
)

// Metric is the Prometheus counter of the events of a kind, labelled by
// domain.
type Metric struct {
	Name, Help string
}

// KindInfo describes an event kind.
type KindInfo struct {
	// Name is the dotted name: the JSON "kind" field, the name of the
	// kind in the configuration and in rules, and the span name of
	// SpanEvent kinds.
	Name string
	// Metric counts the kind's events.
	Metric Metric
	// Span is the part the kind's events play in a process trace.
	Span SpanRole
	// Source produces the kind's events.
	Source Source
	// Notice is the engine notice that is an event of this kind
	// (SourceEngine only).
	Notice hook.NoticeKind
	// RuleTarget kinds are the ones suspicious-file rules may match.
	RuleTarget bool
	// Counts, when set, selects the events Metric counts (all of them
	// when nil); the others are still exported as spans and JSON lines.
	Counts func(*Event) bool
}

// kinds is the table of event kinds, indexed by Kind. Adding a kind is a
// constant above, a row here and, for a SourceProbe kind, a ProbeSpec in
// each OS layer that supports it; the tests of the exporters and the
// dashboards fail until the kind has a metric, a span and a panel.
var kinds = [...]KindInfo{
	KindFileCreate: {
		Name:   "file.create",
		Metric: Metric{"vmi_file_creates_total", "New files created in the guest (opens with O_CREAT of an existing file are file.create events with created=false, not counted)."},
		Span:   SpanEvent, Source: SourceProbe, RuleTarget: true,
		// Dashboards read the counter as "files appeared": count only
		// opens that made the file (or could not tell).
		Counts: func(ev *Event) bool { return ev.Created == nil || *ev.Created },
	},
	KindFileWrite: {
		Name:   "file.write",
		Metric: Metric{"vmi_file_writes_total", "Writes to files in the guest."},
		Span:   SpanEvent, Source: SourceProbe, RuleTarget: true,
	},
	KindProcessStart: {
		Name:   "process.start",
		Metric: Metric{"vmi_process_starts_total", "Processes started in the guest."},
		Span:   SpanProcessStart, Source: SourceProbe,
	},
	KindProcessExit: {
		Name:   "process.exit",
		Metric: Metric{"vmi_process_exits_total", "Processes exited in the guest."},
		Span:   SpanProcessEnd, Source: SourceProbe,
	},
	KindPageFaultInjected: {
		Name:   "pagefault.injected",
		Metric: Metric{"vmi_pagefaults_injected_total", "Page faults injected so the guest pages in memory a probe needs."},
		Source: SourceEngine, Notice: hook.NoticePageFaultInjected,
	},
	KindPageIn: {
		Name:   "page.in",
		Metric: Metric{"vmi_page_ins_total", "Hooked pages paged in (hooks armed again)."},
		Source: SourceEngine, Notice: hook.NoticePageIn,
	},
	KindPageOut: {
		Name:   "page.out",
		Metric: Metric{"vmi_page_outs_total", "Hooked pages paged out (hooks pending)."},
		Source: SourceEngine, Notice: hook.NoticePageOut,
	},
	KindBreakpointReinjected: {
		Name:   "breakpoint.reinjected",
		Metric: Metric{"vmi_breakpoint_reinjections_total", "Guest breakpoints on hooked pages delivered back to the guest."},
		Source: SourceEngine, Notice: hook.NoticeReinjected,
	},
	KindFileRename: {
		Name:   "file.rename",
		Metric: Metric{"vmi_file_renames_total", "Files renamed in the guest."},
		Span:   SpanEvent, Source: SourceProbe, RuleTarget: true,
	},
	KindFileDelete: {
		Name:   "file.delete",
		Metric: Metric{"vmi_file_deletes_total", "Files and directories deleted in the guest (unlink, rmdir)."},
		Span:   SpanEvent, Source: SourceProbe, RuleTarget: true,
	},
	KindProcessExec: {
		Name:   "process.exec",
		Metric: Metric{"vmi_process_execs_total", "Programs executed in the guest (successful execve)."},
		// A child span of the process span, which takes the new
		// program's name and path from it.
		Span: SpanEvent, Source: SourceProbe,
	},
}

// Counted reports whether ev is one of the events k's Metric counts.
func (k Kind) Counted(ev *Event) bool {
	if int(k) < len(kinds) && kinds[k].Counts != nil {
		return kinds[k].Counts(ev)
	}
	return true
}

// Info returns the table row of k (the zero KindInfo for an unknown kind).
func (k Kind) Info() KindInfo {
	if int(k) < len(kinds) {
		return kinds[k]
	}
	return KindInfo{}
}

// Kinds lists every event kind, in order.
func Kinds() []Kind {
	ks := make([]Kind, 0, len(kinds)-1)
	for k := range kinds[1:] {
		ks = append(ks, Kind(k+1))
	}
	return ks
}

// ProbeKinds are the kinds that come from probes (the others come from
// engine notices); these are the names the configuration accepts.
func ProbeKinds() []Kind {
	return slices.DeleteFunc(Kinds(), func(k Kind) bool { return k.Info().Source != SourceProbe })
}

// RuleKinds are the kinds rules may match.
func RuleKinds() []Kind {
	return slices.DeleteFunc(Kinds(), func(k Kind) bool { return !k.Info().RuleTarget })
}

// KindNames returns the names of ks, in order.
func KindNames(ks []Kind) []string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.String()
	}
	return names
}

// KindOfNotice returns the kind of the events an engine notice is, if it is
// one. It runs for every notice (hidden reads can be frequent), so it
// scans the table without allocating.
func KindOfNotice(n hook.NoticeKind) (Kind, bool) {
	for k := range kinds {
		if i := &kinds[k]; i.Source == SourceEngine && i.Notice == n {
			return Kind(k), true
		}
	}
	return 0, false
}

// String returns the dotted name of the kind, as in JSON events and span names.
func (k Kind) String() string {
	if int(k) < len(kinds) && kinds[k].Name != "" {
		return kinds[k].Name
	}
	return "unknown"
}

// MarshalText encodes the kind by name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// ParseKind returns the kind named s (as Kind.String prints it).
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown event kind %q", s)
}
