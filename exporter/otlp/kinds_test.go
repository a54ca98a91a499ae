package otlp_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
)

// keep is an in-memory exporter whose spans survive its shutdown.
type keep struct{ *tracetest.InMemoryExporter }

func (keep) Shutdown(context.Context) error { return nil }

// TestEveryKindSpans exports one event of each kind of the collector's
// table: a traced kind must yield its spans under their names, a kind
// that is not traced none, so that a new kind cannot go unseen.
func TestEveryKindSpans(t *testing.T) {
	g := &collector.Guest{Domain: "g", OS: "linux"}
	for _, k := range collector.Kinds() {
		mem := tracetest.NewInMemoryExporter()
		exp, err := otlp.New(context.Background(), otlp.Options{SpanExporter: keep{mem}})
		if err != nil {
			t.Fatal(err)
		}
		ev := &collector.Event{Time: time.Unix(1, 0), Kind: k, Guest: g, Probe: "p", Process: proc(7, 1, "x")}
		exp.Tracker().Enrich(ev)
		exp.Export(ev)
		if err := exp.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range mem.GetSpans() {
			got = append(got, s.Name)
		}
		slices.Sort(got)
		var want []string
		switch k.Info().Span {
		case collector.SpanNone:
			if n := otlp.SpanName(k); n != "" {
				t.Errorf("%s: not traced, but span name %q", k, n)
			}
		case collector.SpanProcessStart, collector.SpanProcessEnd:
			want = []string{otlp.ProcessSpan}
		case collector.SpanEvent:
			want = []string{k.String(), otlp.ProcessSpan}
		default:
			t.Errorf("%s: span role %d unknown to the exporter", k, k.Info().Span)
		}
		if want != nil && !slices.Contains(want, otlp.SpanName(k)) {
			t.Errorf("%s: span name %q not among the spans %v", k, otlp.SpanName(k), want)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: spans %v, want %v", k, got, want)
		}
		if traced := k.Info().Span != collector.SpanNone; ev.TraceID.IsValid() != traced {
			t.Errorf("%s: trace ID %v, traced %v", k, ev.TraceID, traced)
		}
	}
}
