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
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: spans %v, want %v", k, got, want)
		}
		if traced := k.Info().Span != collector.SpanNone; ev.TraceID.IsValid() != traced {
			t.Errorf("%s: trace ID %v, traced %v", k, ev.TraceID, traced)
		}
	}
}

// TestNewKindAttributes: the fields of the kinds of issue #12 reach the
// spans: rename's old path, create's created, write's family and bytes,
// exec's argv (and the process span's new name), exit's code.
func TestNewKindAttributes(t *testing.T) {
	g := &collector.Guest{Domain: "g", OS: "linux"}
	mem := tracetest.NewInMemoryExporter()
	exp, err := otlp.New(context.Background(), otlp.Options{SpanExporter: keep{mem}})
	if err != nil {
		t.Fatal(err)
	}
	yes, zero := true, int32(0)
	evs := []*collector.Event{
		{Kind: collector.KindProcessStart, Process: proc(7, 1, "sh")},
		{Kind: collector.KindProcessExec, Process: collector.Process{PID: 7, PPID: 1, Name: "rm", Image: "/bin/busybox"}, Args: []string{"rm", "-f", "x"}},
		{Kind: collector.KindFileRename, Process: proc(7, 1, "rm"), Path: "/a.locked", OldPath: "/a"},
		{Kind: collector.KindFileCreate, Process: proc(7, 1, "rm"), Path: "/b", Created: &yes},
		{Kind: collector.KindFileWrite, Process: proc(7, 1, "rm"), Path: "/b", Syscall: "sendfile", Bytes: 42},
		{Kind: collector.KindProcessExit, Process: proc(7, 1, "rm"), ExitCode: &zero},
	}
	for _, ev := range evs {
		ev.Time, ev.Guest, ev.Probe = time.Unix(1, 0), g, "p"
		exp.Tracker().Enrich(ev)
		exp.Export(ev)
	}
	if err := exp.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]map[string]string{}
	for _, s := range mem.GetSpans() {
		m := map[string]string{}
		for _, a := range s.Attributes {
			m[string(a.Key)] = a.Value.Emit()
		}
		attrs[s.Name] = m
	}
	for span, want := range map[string]map[string]string{
		"process.exec":   {"process.command_args": `["rm","-f","x"]`, "vmi.process.args_truncated": "false"},
		"file.rename":    {"vmi.file.old_path": "/a", "file.path": "/a.locked"},
		"file.create":    {"vmi.file.created": "true"},
		"file.write":     {"vmi.syscall": "sendfile", "vmi.file.bytes": "42"},
		otlp.ProcessSpan: {"process.executable.name": "rm", "process.exit.code": "0"},
	} {
		for k, v := range want {
			if attrs[span][k] != v {
				t.Errorf("span %s: %s = %q, want %q (all: %v)", span, k, attrs[span][k], v, attrs[span])
			}
		}
	}
}
