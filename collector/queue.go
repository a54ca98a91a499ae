package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueueBytes is the Options.QueueBytes used when it is 0: room for
// the default 4096 events of ordinary size, but not for 4096 events near
// the string cap (about 12 KiB each), which would cost 48 MiB per sink.
const DefaultQueueBytes = 16 << 20

// closeGrace is how long a sink gets to flush and close once the close
// deadline has passed: a buffering sink keeps what it already holds.
const closeGrace = time.Second

// queue is a bounded queue in front of a sink. push never blocks: when the
// queue is full, by count or by bytes, the event is dropped and counted.
type queue struct {
	sink     Sink
	name     string
	ch       chan *Event
	bytes    atomic.Int64 // estimated size of the events in ch
	maxBytes int64
	metrics  Metrics
	log      *slog.Logger
	done     chan struct{}
	// abort makes run drop (and count) what is left instead of
	// exporting it: the close deadline passed.
	abort atomic.Bool
}

func newQueue(s Sink, size int, maxBytes int64, m Metrics, log *slog.Logger) *queue {
	q := &queue{sink: s, name: s.Name(), ch: make(chan *Event, size), maxBytes: maxBytes, metrics: m,
		log: log, done: make(chan struct{})}
	if log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	m.Queue(q.name, func() int { return len(q.ch) })
	if lr, ok := s.(LossReporter); ok {
		lr.SetLossFunc(func(domain, reason string, n int) { lost(m, domain, q.name, reason, n) })
	}
	return q
}

// eventOverhead is the size of an Event with its slices' headers, and the
// channel slot, rounded up.
const eventOverhead = 320

// eventSize estimates the memory ev holds beyond what other events share
// (the Guest).
func eventSize(ev *Event) int64 {
	n := eventOverhead + len(ev.Path) + len(ev.OldPath) + len(ev.Syscall) + len(ev.Process.Name) + len(ev.Process.Image)
	for _, a := range ev.Args {
		n += 16 + len(a)
	}
	for _, r := range ev.Rules {
		n += 16 + len(r)
	}
	for _, f := range ev.Truncated {
		n += 16 + len(f)
	}
	return int64(n)
}

func (q *queue) push(ev *Event) {
	sz := eventSize(ev)
	if q.bytes.Add(sz) > q.maxBytes {
		q.bytes.Add(-sz)
		lost(q.metrics, ev.Guest.Domain, q.name, LossQueueFull, 1)
		return
	}
	select {
	case q.ch <- ev:
	default:
		q.bytes.Add(-sz)
		lost(q.metrics, ev.Guest.Domain, q.name, LossQueueFull, 1)
	}
}

func (q *queue) run() {
	defer close(q.done)
	for ev := range q.ch {
		q.bytes.Add(-eventSize(ev))
		if q.abort.Load() {
			lost(q.metrics, ev.Guest.Domain, q.name, LossShutdown, 1)
			continue
		}
		q.export(ev)
	}
}

// export hands ev to the sink. A sink that panics loses the event, which
// is counted, not the process: the other sinks and guests go on.
func (q *queue) export(ev *Event) {
	defer func() {
		if r := recover(); r != nil {
			lost(q.metrics, ev.Guest.Domain, q.name, LossPanic, 1)
			q.log.Error("exporter panicked; event dropped", "exporter", q.name, "panic", r)
		}
	}()
	q.sink.Export(ev)
}

// close stops accepting events (no push may follow), drains what is queued
// until ctx ends, and closes the sink. The sink is closed in any case,
// with closeGrace more when ctx has ended, so that what it buffered is
// flushed; events still queued at the deadline are counted as lost
// (LossShutdown).
func (q *queue) close(ctx context.Context) error {
	close(q.ch)
	var drainErr error
	select {
	case <-q.done:
	case <-ctx.Done():
		drainErr = fmt.Errorf("exporter %s: drain: %w", q.name, ctx.Err())
		q.abort.Store(true)
		// Count what is left here too: run may be stuck in one Export.
		// Both read the closed channel, each event is counted once.
		for ev := range q.ch {
			q.bytes.Add(-eventSize(ev))
			lost(q.metrics, ev.Guest.Domain, q.name, LossShutdown, 1)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), closeGrace)
		defer cancel()
		// Wait briefly for an Export in progress, then close the sink
		// regardless (sinks must tolerate a Close during an Export).
		select {
		case <-q.done:
		case <-ctx.Done():
		}
	}
	if err := q.sink.Close(ctx); err != nil {
		return errors.Join(drainErr, fmt.Errorf("exporter %s: close: %w", q.name, err))
	}
	return drainErr
}

// closeQueues closes every queue at once, each with the whole timeout:
// one stalled sink must not use up the time of the others.
func closeQueues(qs []*queue, timeout time.Duration) []error {
	errs := make([]error, len(qs))
	var wg sync.WaitGroup
	for i, q := range qs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			errs[i] = q.close(ctx)
		})
	}
	wg.Wait()
	return errs
}
