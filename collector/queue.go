package collector

import (
	"context"
	"fmt"
)

// queue is a bounded queue in front of a sink. push never blocks: when the
// queue is full the event is dropped and counted.
type queue struct {
	sink    Sink
	name    string
	ch      chan *Event
	metrics Metrics
	done    chan struct{}
}

func newQueue(s Sink, size int, m Metrics) *queue {
	q := &queue{sink: s, name: s.Name(), ch: make(chan *Event, size), metrics: m, done: make(chan struct{})}
	m.Queue(q.name, func() int { return len(q.ch) })
	return q
}

func (q *queue) push(ev *Event) {
	select {
	case q.ch <- ev:
	default:
		q.metrics.Dropped(ev.Guest.Domain, q.name)
	}
}

func (q *queue) run() {
	defer close(q.done)
	for ev := range q.ch {
		q.sink.Export(ev)
	}
}

// close stops accepting events (no push may follow), drains what is queued
// until ctx ends, and closes the sink.
func (q *queue) close(ctx context.Context) error {
	close(q.ch)
	select {
	case <-q.done:
	case <-ctx.Done():
		return fmt.Errorf("exporter %s: drain: %w", q.name, ctx.Err())
	}
	if err := q.sink.Close(ctx); err != nil {
		return fmt.Errorf("exporter %s: close: %w", q.name, err)
	}
	return nil
}
