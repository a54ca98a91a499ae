package promexp

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

var _ collector.CounterMetrics = (*Metrics)(nil)

// sessionCounters exports the counters of attached sessions as
// vmi_session_events_total{domain,counter}, read at scrape time.
type sessionCounters struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	read map[string]func() map[string]uint64 // by domain
}

func newSessionCounters() *sessionCounters {
	return &sessionCounters{
		desc: prometheus.NewDesc("vmi_session_events_total",
			"Things a guest session counts besides events (windows_parent_mismatches, qemu_resteps); they start at 0 with each attach.",
			[]string{"domain", "counter"}, nil),
		read: map[string]func() map[string]uint64{},
	}
}

func (c *sessionCounters) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sessionCounters) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, read := range c.read {
		for k, v := range read() {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), d, label(k))
		}
	}
}

// SessionCounters implements collector.CounterMetrics: read (nil when the
// session ended) supplies the domain's counters at each scrape.
func (m *Metrics) SessionCounters(domain string, read func() map[string]uint64) {
	m.sessions.mu.Lock()
	defer m.sessions.mu.Unlock()
	if read == nil {
		delete(m.sessions.read, domain)
		return
	}
	m.sessions.read[domain] = read
}
