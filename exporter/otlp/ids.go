package otlp

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"sync"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// idGen makes random trace and span IDs, except that a root span started
// with a context from withTraceID gets that trace ID: the tracker chose
// it in the event loop, so that metrics could use it as an exemplar
// before the span existed.
type idGen struct {
	mu sync.Mutex
	r  *rand.Rand
}

var _ sdktrace.IDGenerator = (*idGen)(nil)

func newIDGen() *idGen {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return &idGen{r: rand.New(rand.NewChaCha8(seed))}
}

type traceIDKey struct{}

func withTraceID(ctx context.Context, id trace.TraceID) context.Context {
	return context.WithValue(ctx, traceIDKey{}, id)
}

func (g *idGen) traceID() trace.TraceID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var t trace.TraceID
	for !t.IsValid() {
		putU64(t[:8], g.r.Uint64())
		putU64(t[8:], g.r.Uint64())
	}
	return t
}

func (g *idGen) spanIDLocked() trace.SpanID {
	var s trace.SpanID
	for !s.IsValid() {
		putU64(s[:], g.r.Uint64())
	}
	return s
}

// NewIDs implements sdktrace.IDGenerator.
func (g *idGen) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	t, ok := ctx.Value(traceIDKey{}).(trace.TraceID)
	if !ok || !t.IsValid() {
		t = g.traceID()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return t, g.spanIDLocked()
}

// NewSpanID implements sdktrace.IDGenerator.
func (g *idGen) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.spanIDLocked()
}

func putU64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

// procKey identifies a guest process.
type procKey struct {
	domain string
	pid    uint64
}

// Tracker assigns each guest process a trace ID in the event loop
// (collector.Enricher). It remembers at most a bounded number of
// processes; a process it forgot gets a new trace.
type Tracker struct {
	mu  sync.Mutex
	ids *lru[procKey, trace.TraceID]
	gen *idGen
}

// Enrich sets ev.TraceID for process and file events.
func (t *Tracker) Enrich(ev *collector.Event) {
	role := ev.Kind.Info().Span
	if role == collector.SpanNone {
		return
	}
	k := procKey{ev.Guest.Domain, ev.Process.PID}
	t.mu.Lock()
	defer t.mu.Unlock()
	var (
		id trace.TraceID
		ok bool
	)
	switch role {
	case collector.SpanProcessStart:
	case collector.SpanProcessEnd:
		id, ok = t.ids.remove(k)
	default:
		id, ok = t.ids.get(k)
	}
	if !ok {
		id = t.gen.traceID()
		if role != collector.SpanProcessEnd {
			t.ids.put(k, id)
		}
	}
	ev.TraceID = id
}
