// Package promexp exports the collector's events as Prometheus metrics on a
// private registry, served with the Prometheus exporter toolkit (TLS and
// basic auth from a web configuration file, landing page) in the
// OpenMetrics format so that exemplars carry trace IDs.
package promexp

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// OtherProcess is the process label of process names beyond the cap.
const OtherProcess = "other"

// maxLabelLen bounds label values that come from the guest (kernel
// banner, process names): the guest controls them.
const maxLabelLen = 256

// Options configure the metrics.
type Options struct {
	// ProcessLabelCap > 0 enables vmi_process_events_total, labelled by
	// process name, with at most this many distinct names per guest;
	// later names of that guest are counted as process="other". Off (0)
	// by default, because process names are chosen by the guest; the cap
	// is per guest so that one guest cannot use up another's.
	ProcessLabelCap int
	// Version is reported by vmi_exporter_build_info.
	Version string
}

// Metrics implements collector.Metrics with client_golang.
type Metrics struct {
	reg *prometheus.Registry

	up, info, buildInfo                 *prometheus.GaugeVec
	downReason                          *prometheus.GaugeVec
	attempts                            *prometheus.CounterVec
	hits, probeErrors, dropped, notices *prometheus.CounterVec
	truncated                           *prometheus.CounterVec
	sessions                            *sessionCounters
	kinds                               []*prometheus.CounterVec // by collector.Kind
	latency                             *prometheus.HistogramVec
	suspicious                          *prometheus.CounterVec
	procEvents                          *prometheus.CounterVec
	procCap                             int

	mu        sync.RWMutex
	handles   map[handleKey]*handles
	infoLabel map[string][3]string // domain → its info series
	// procNames are the admitted process names, by domain.
	procNames map[string]map[string]struct{}
	exporters []string // names passed to Queue, for zero-valued drop series
}

type handleKey struct {
	domain, probe string
	kind          collector.Kind
}

// handles are the series one (domain, probe, kind) updates, resolved once.
type handles struct {
	hits, kind prometheus.Counter
	latency    prometheus.Observer
}

// LatencyBuckets suit event handling from 10µs to 1s.
var LatencyBuckets = prometheus.ExponentialBucketsRange(10e-6, 1, 16)

// New registers every metric on a new private registry.
func New(o Options) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		handles:   map[handleKey]*handles{},
		infoLabel: map[string][3]string{},
		procNames: map[string]map[string]struct{}{},
		procCap:   o.ProcessLabelCap,
	}
	f := factory{m.reg}
	m.up = f.gauge("vmi_guest_up", "Whether the guest is attached and its hooks run (1) or not (0).", "domain")
	m.downReason = f.gauge("vmi_guest_down_reason", "Why the guest is not attached: 1 for the current reason (not_found, refused, permission, timeout, attach_error, session_ended), 0 for the others and while it is up.", "domain", "reason")
	m.info = f.gauge("vmi_guest_info", "Identity of the attached guest: OS and kernel build.", "domain", "os", "kernel")
	m.buildInfo = f.gauge("vmi_exporter_build_info", "Version of vmi-exporter.", "version")
	m.buildInfo.WithLabelValues(o.Version).Set(1)
	m.attempts = f.counter("vmi_guest_attach_attempts_total", "Attach attempts by result (success or failure).", "domain", "result")
	m.hits = f.counter("vmi_breakpoint_hits_total", "Breakpoint hits by probe, whether or not they yielded an event (see vmi_probe_errors_total).", "domain", "probe")
	// A counter per event kind, named by the kind table.
	ks := collector.Kinds()
	m.kinds = make([]*prometheus.CounterVec, int(slices.Max(ks))+1)
	for _, k := range ks {
		mt := k.Info().Metric
		m.kinds[k] = f.counter(mt.Name, mt.Help, "domain")
	}
	m.probeErrors = f.counter("vmi_probe_errors_total", "Hits that produced no event, by reason (skip, decode, unreadable, handler, unknown_probe).", "domain", "probe", "reason")
	m.dropped = f.counter("vmi_events_dropped_total", "Events an exporter did not deliver, by reason (queue_full, write_error, export_rejected, too_large, shutdown, panic).", "domain", "exporter", "reason")
	m.truncated = f.counter("vmi_event_fields_truncated_total", "Guest-controlled event fields cut to the string cap, by field.", "domain", "field")
	m.notices = f.counter("vmi_engine_notices_total", "Other things the hook engine did, by notice.", "domain", "notice")
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vmi_event_handling_seconds", Help: "Time from the vCPU stop to the decoded event.", Buckets: LatencyBuckets,
	}, []string{"domain", "probe"})
	m.reg.MustRegister(m.latency)
	m.suspicious = f.counter("vmi_suspicious_file_writes_total", "File events (writes, creates, renames, deletes) that matched a rule, by rule.", "domain", "rule")
	if o.ProcessLabelCap > 0 {
		m.procEvents = f.counter("vmi_process_events_total", "Events by process name (opt-in; names beyond the cap count as other).", "domain", "kind", "process")
	}
	m.sessions = newSessionCounters()
	m.reg.MustRegister(m.sessions)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

// Registry is the private registry the metrics live on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var _ collector.Metrics = (*Metrics)(nil)

func (m *Metrics) handlesFor(domain, probe string, kind collector.Kind) *handles {
	k := handleKey{domain, probe, kind}
	m.mu.RLock()
	h := m.handles[k]
	m.mu.RUnlock()
	if h != nil {
		return h
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h = m.handles[k]; h != nil {
		return h
	}
	h = &handles{}
	if probe != "" {
		h.hits = m.hits.WithLabelValues(domain, label(probe))
		h.latency = m.latency.WithLabelValues(domain, label(probe))
	}
	if int(kind) < len(m.kinds) && m.kinds[kind] != nil {
		h.kind = m.kinds[kind].WithLabelValues(domain)
	}
	m.handles[k] = h
	return h
}

// Event counts ev by probe and kind, observes its latency, and counts its
// rule matches; the trace ID, when there is one, is the exemplar.
func (m *Metrics) Event(ev *collector.Event) {
	domain := ev.Guest.Domain
	h := m.handlesFor(domain, ev.Probe, ev.Kind)
	var ex prometheus.Labels
	if ev.TraceID.IsValid() {
		ex = prometheus.Labels{"trace_id": ev.TraceID.String()}
	}
	if h.hits != nil {
		add(h.hits, ex)
		if ex != nil {
			h.latency.(prometheus.ExemplarObserver).ObserveWithExemplar(ev.Latency.Seconds(), ex)
		} else {
			h.latency.Observe(ev.Latency.Seconds())
		}
	}
	if h.kind != nil && ev.Kind.Counted(ev) {
		add(h.kind, ex)
	}
	// Rule hits of every kind rules look at (writes, creates, renames,
	// deletes): the metric's name predates the other kinds.
	for _, r := range ev.Rules {
		m.suspicious.WithLabelValues(domain, label(r)).Inc()
	}
	if m.procEvents != nil {
		m.procEvents.WithLabelValues(domain, ev.Kind.String(), m.processLabel(domain, ev.Process.Name)).Inc()
	}
}

func add(c prometheus.Counter, ex prometheus.Labels) {
	if ex != nil {
		c.(prometheus.ExemplarAdder).AddWithExemplar(1, ex)
		return
	}
	c.Inc()
}

// processLabel admits the first ProcessLabelCap distinct names of each
// guest.
func (m *Metrics) processLabel(domain, name string) string {
	name = label(name)
	m.mu.RLock()
	_, ok := m.procNames[domain][name]
	m.mu.RUnlock()
	if ok {
		return name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	names := m.procNames[domain]
	if names == nil {
		names = map[string]struct{}{}
		m.procNames[domain] = names
	}
	if _, ok := names[name]; ok {
		return name
	}
	if len(names) >= m.procCap || name == OtherProcess {
		return OtherProcess
	}
	names[name] = struct{}{}
	return name
}

// label makes a guest-controlled string a safe label value: valid UTF-8,
// bounded length.
func label(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxLabelLen {
		s = strings.ToValidUTF8(s[:maxLabelLen], "")
	}
	return s
}

// ProbeError counts a hit that produced no event.
//
// Every probe error comes from a hit, so it counts as a hit too: the hit
// counter is what the guest paid in stops, events or not.
func (m *Metrics) ProbeError(domain, probe, reason string) {
	m.probeErrors.WithLabelValues(domain, label(probe), reason).Inc()
	m.hits.WithLabelValues(domain, label(probe)).Inc()
}

// Notice counts an engine notice that is not an event.
func (m *Metrics) Notice(domain, notice string) {
	m.notices.WithLabelValues(domain, notice).Inc()
}

// Attach counts an attach attempt.
func (m *Metrics) Attach(domain string, err error) {
	result := "success"
	if err != nil {
		result = "failure"
	}
	m.attempts.WithLabelValues(domain, result).Inc()
}

// Down sets vmi_guest_down_reason of domain: 1 for reason, 0 for the
// other reasons; "" (attached) sets them all to 0. Reasons outside
// collector.DownReasons count as attach_error, so the label stays
// bounded.
func (m *Metrics) Down(domain, reason string) {
	reasons := collector.DownReasons()
	if reason != "" && !slices.Contains(reasons, reason) {
		reason = collector.DownAttachError
	}
	for _, r := range reasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		m.downReason.WithLabelValues(domain, r).Set(v)
	}
}

// Up sets vmi_guest_up and, for an attached guest, vmi_guest_info. The
// first call for a domain creates its counters at zero, so that rates
// and alerts work from the first scrape.
func (m *Metrics) Up(domain string, g *collector.Guest, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(domain).Set(v)
	m.mu.Lock()
	defer m.mu.Unlock()
	old, known := m.infoLabel[domain]
	if !known {
		m.attempts.WithLabelValues(domain, "success")
		m.attempts.WithLabelValues(domain, "failure")
		for _, r := range collector.DownReasons() {
			m.downReason.WithLabelValues(domain, r)
		}
		for _, k := range m.kinds {
			if k != nil {
				k.WithLabelValues(domain)
			}
		}
		// Drops start at zero too, so that rate() and alerts see them.
		for _, e := range m.exporters {
			m.initDropped(domain, e)
		}
		m.infoLabel[domain] = [3]string{}
	}
	if g == nil {
		return
	}
	lv := [3]string{domain, label(g.OS), label(g.Kernel)}
	if lv == old {
		return
	}
	if old[0] != "" {
		m.info.DeleteLabelValues(old[:]...)
	}
	m.info.WithLabelValues(lv[:]...).Set(1)
	m.infoLabel[domain] = lv
}

// Dropped counts an event a full exporter queue refused.
func (m *Metrics) Dropped(domain, exporter string) {
	m.Lost(domain, exporter, collector.LossQueueFull, 1)
}

var _ collector.LossMetrics = (*Metrics)(nil)

// lossReasons are the reasons whose series start at zero.
var lossReasons = []string{collector.LossQueueFull, collector.LossWriteError, collector.LossExportRejected,
	collector.LossTooLarge, collector.LossShutdown, collector.LossPanic}

func (m *Metrics) initDropped(domain, exporter string) {
	for _, r := range lossReasons {
		m.dropped.WithLabelValues(domain, exporter, r)
	}
}

// Lost counts n events an exporter did not deliver, by reason. domain is
// the configured guest name (or "" when a sink cannot tell).
func (m *Metrics) Lost(domain, exporter, reason string, n int) {
	m.dropped.WithLabelValues(domain, exporter, reason).Add(float64(n))
}

// Truncated counts an event field cut to the string cap.
func (m *Metrics) Truncated(domain, field string) {
	m.truncated.WithLabelValues(domain, field).Inc()
}

// Queue reports an exporter queue's length as vmi_exporter_queue_length.
func (m *Metrics) Queue(exporter string, length func() int) {
	m.mu.Lock()
	m.exporters = append(m.exporters, exporter)
	for domain := range m.infoLabel {
		m.initDropped(domain, exporter)
	}
	m.mu.Unlock()
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "vmi_exporter_queue_length",
		Help:        "Events waiting in an exporter's queue.",
		ConstLabels: prometheus.Labels{"exporter": exporter},
	}, func() float64 { return float64(length()) }))
}
