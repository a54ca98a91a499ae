package collector

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Loss reasons: the reason label of vmi_events_dropped_total. Every event
// a sink does not deliver is counted under exactly one of them.
const (
	// LossQueueFull: the exporter queue held its maximum of events or
	// bytes (a stalled or slow sink).
	LossQueueFull = "queue_full"
	// LossWriteError: the sink could not write the event, after retries.
	LossWriteError = "write_error"
	// LossExportRejected: the receiver refused or failed the export.
	LossExportRejected = "export_rejected"
	// LossTooLarge: one event alone exceeded the receiver's message limit.
	LossTooLarge = "too_large"
	// LossShutdown: the event was still queued when the close deadline
	// passed.
	LossShutdown = "shutdown"
	// LossPanic: a sink, rule, enricher or decoder panicked on the event.
	LossPanic = "panic"
)

// ReasonPanic is the vmi_probe_errors_total reason of a hit or notice
// whose handling panicked (decoder, enricher or rule).
const ReasonPanic = "panic"

// LossMetrics is implemented by Metrics that count losses by reason and
// truncated fields. The collector uses it when its Metrics has it, and
// falls back to Metrics.Dropped for full queues otherwise.
type LossMetrics interface {
	// Lost counts n events of domain that exporter did not deliver.
	Lost(domain, exporter, reason string, n int)
	// Truncated counts an event field cut to the string cap.
	Truncated(domain, field string)
}

// LossFunc reports n events of domain lost by a sink, for reason.
type LossFunc func(domain, reason string, n int)

// LossReporter is implemented by sinks that lose events after Export
// returned (a write or export that fails later): the collector hands them
// a LossFunc counting under the sink's name before the first Export.
type LossReporter interface {
	SetLossFunc(LossFunc)
}

// lost counts n events lost by exporter through m.
func lost(m Metrics, domain, exporter, reason string, n int) {
	if n <= 0 {
		return
	}
	if lm, ok := m.(LossMetrics); ok {
		lm.Lost(domain, exporter, reason, n)
		return
	}
	if reason == LossQueueFull {
		for range n {
			m.Dropped(domain, exporter)
		}
	}
}

// runEngine runs the session's engine, turning a panic in it into an
// error: the session then ends as a failed one does (the deferred Close
// removes the hooks and resumes the guest) and the supervisor attaches
// again.
func runEngine(ctx context.Context, sess Session, h hook.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return sess.Engine().Run(ctx, h)
}
