// Package otlp exports guest events as OpenTelemetry traces: one trace per
// guest process, a process span from its start to its exit, and a child
// span per file event. Spans go to an OTLP endpoint (gRPC or HTTP) through
// the SDK's batch processor or, without an endpoint, to a JSON file.
package otlp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// Attribute keys of this project (no semantic convention exists for them).
const (
	AttrDomain    = attribute.Key("vmi.domain")
	AttrProbe     = attribute.Key("vmi.probe")
	AttrVCPU      = attribute.Key("vmi.vcpu")
	AttrRules     = attribute.Key("vmi.rules")
	AttrStartSeen = attribute.Key("vmi.process.start_seen")
	AttrExitSeen  = attribute.Key("vmi.process.exit_seen")
	AttrEvicted   = attribute.Key("vmi.process.evicted")
	AttrLatencyNS = attribute.Key("vmi.latency_ns")
	// Attributes of the kinds of issue #12.
	AttrOldPath       = attribute.Key("vmi.file.old_path")          // file.rename: the path renamed from
	AttrCreated       = attribute.Key("vmi.file.created")           // file.create: a new file (else an existing one opened with O_CREAT)
	AttrSyscall       = attribute.Key("vmi.syscall")                // file.write, file.delete: the system call family
	AttrBytes         = attribute.Key("vmi.file.bytes")             // file.write: bytes asked for
	AttrArgsTruncated = attribute.Key("vmi.process.args_truncated") // process.exec: argv cut by the configured bounds
	AttrExitSignal    = attribute.Key("vmi.process.exit_signal")    // process.exit: the signal that killed it
	ProcessSpan       = "process"
	DefaultMaxOpen    = 10000
)

// AttrTruncated lists the event fields cut to the collector's string cap
// (collector.Event.Truncated).
const AttrTruncated = attribute.Key("vmi.truncated")

// Options configure the exporter.
type Options struct {
	// Endpoint is the OTLP receiver: host:port, or a URL for HTTP. Empty
	// writes spans as JSON lines to File.
	Endpoint string
	// Protocol is "grpc" (default) or "http".
	Protocol string
	Insecure bool
	Headers  map[string]string
	// File receives the spans when Endpoint is empty.
	File string
	// MaxOpenProcesses bounds the table of open process spans; the least
	// recently used is ended when it is full (DefaultMaxOpen if 0).
	MaxOpenProcesses int
	// Version is service.version.
	Version string
	// SpanExporter, when set, replaces Endpoint and File (tests).
	SpanExporter sdktrace.SpanExporter
	// BatchOptions tune the batch span processor.
	BatchOptions []sdktrace.BatchSpanProcessorOption
	// MaxMessageBytes is the receiver's message limit: batches are split
	// into requests below it (DefaultMaxMessageBytes if 0).
	MaxMessageBytes int
	// MaxAttributeLen caps every string attribute value in bytes, the
	// last line of defence should a field escape the collector's cap
	// (collector.DefaultMaxStringLen if 0).
	MaxAttributeLen int
	Logger          *slog.Logger
}

// Exporter is a collector.Sink that turns events into spans.
type Exporter struct {
	// mu is held by Export, so that a Close during an Export stuck in a
	// stalled batch processor does not touch the open-span table with it.
	mu      sync.Mutex
	split   *splitter
	tp      *sdktrace.TracerProvider
	tracer  trace.Tracer
	tracker *Tracker
	open    *lru[procKey, *procSpan]
	file    *os.File
	evicted atomic.Uint64
	spans   atomic.Uint64
	log     *slog.Logger
}

type procSpan struct {
	span trace.Span
	ctx  context.Context
	// name and image are the span's process.executable.* values. A Linux
	// process starts with its parent's name (fork before exec); later
	// events of the process carry the program it runs, and refresh them.
	name, image string
}

// refresh updates the process span's executable name and path from a later
// event of the same process, when the process has changed program (exec).
func (p *procSpan) refresh(ev *collector.Event) {
	if n := ev.Process.Name; n != "" && n != p.name {
		p.name = n
		p.span.SetAttributes(semconv.ProcessExecutableName(utf8(n)))
	}
	if i := ev.Process.Image; i != "" && i != p.image {
		p.image = i
		p.span.SetAttributes(semconv.ProcessExecutablePath(utf8(i)))
	}
}

// New builds the exporter and its span pipeline.
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.MaxOpenProcesses <= 0 {
		o.MaxOpenProcesses = DefaultMaxOpen
	}
	e := &Exporter{log: o.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	exp := o.SpanExporter
	var err error
	if exp == nil {
		exp, err = e.spanExporter(ctx, o)
		if err != nil {
			return nil, err
		}
	}
	e.split = newSplitter(exp, o.MaxMessageBytes, e.log, o.Endpoint)
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = o.MaxAttributeLen
	if limits.AttributeValueLengthLimit <= 0 {
		limits.AttributeValueLengthLimit = collector.DefaultMaxStringLen
	}
	host, _ := os.Hostname()
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("vmi-exporter"),
		semconv.ServiceVersion(o.Version),
		semconv.HostName(host),
	)
	gen := newIDGen()
	e.tp = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(gen),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithRawSpanLimits(limits),
		// Blocking: a stalled endpoint backs up into the collector's
		// bounded queue, where drops are counted (vmi_events_dropped_total
		// {exporter="otlp"}), instead of vanishing inside the SDK.
		sdktrace.WithBatcher(e.split, append([]sdktrace.BatchSpanProcessorOption{sdktrace.WithBlocking()}, o.BatchOptions...)...),
	)
	e.tracer = e.tp.Tracer("github.com/vmi-exporter/vmi-exporter/exporter/otlp")
	e.tracker = &Tracker{ids: newLRU[procKey, trace.TraceID](o.MaxOpenProcesses, nil), gen: gen}
	e.open = newLRU(o.MaxOpenProcesses, func(_ procKey, p *procSpan) {
		p.span.SetAttributes(AttrEvicted.Bool(true))
		p.span.End()
		e.evicted.Add(1)
	})
	return e, nil
}

func (e *Exporter) spanExporter(ctx context.Context, o Options) (sdktrace.SpanExporter, error) {
	if o.Endpoint == "" {
		if o.File == "" {
			return nil, errors.New("otlp: neither an endpoint nor a file")
		}
		f, err := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("otlp: span file: %w", err)
		}
		e.file = f
		exp, err := stdouttrace.New(stdouttrace.WithWriter(f))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("otlp: span file: %w", err)
		}
		return exp, nil
	}
	url := strings.Contains(o.Endpoint, "://")
	switch o.Protocol {
	case "", "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithHeaders(o.Headers)}
		if url {
			opts = append(opts, otlptracegrpc.WithEndpointURL(o.Endpoint))
		} else {
			opts = append(opts, otlptracegrpc.WithEndpoint(o.Endpoint))
		}
		if o.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp grpc exporter: %w", err)
		}
		return exp, nil
	case "http":
		opts := []otlptracehttp.Option{otlptracehttp.WithHeaders(o.Headers)}
		if url {
			opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(o.Endpoint)))
		} else {
			opts = append(opts, otlptracehttp.WithEndpoint(o.Endpoint))
		}
		if o.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp http exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("otlp: unknown protocol %q (want grpc or http)", o.Protocol)
}

// httpTracesURL adds the traces path to a base URL without a path, as
// OTEL_EXPORTER_OTLP_ENDPOINT does.
func httpTracesURL(u string) string {
	scheme, rest, _ := strings.Cut(u, "://")
	if i := strings.IndexByte(rest, '/'); i < 0 || rest[i:] == "/" {
		host, _, _ := strings.Cut(rest, "/")
		return scheme + "://" + host + "/v1/traces"
	}
	return u
}

// Tracker is the Enricher that assigns trace IDs in the event loop; add it
// to the collector's enrichers so exemplars and spans agree.
func (e *Exporter) Tracker() *Tracker { return e.tracker }

// Name implements collector.Sink.
func (e *Exporter) Name() string { return "otlp" }

// Export turns one event into spans. It is called from one goroutine.
func (e *Exporter) Export(ev *collector.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	role := ev.Kind.Info().Span
	if role == collector.SpanNone {
		return
	}
	k := procKey{ev.Guest.Domain, ev.Process.PID}
	switch role {
	case collector.SpanProcessStart:
		if old, ok := e.open.remove(k); ok {
			// The exit was missed (or the pid reused): close the old one.
			old.span.SetAttributes(AttrExitSeen.Bool(false))
			old.span.End(trace.WithTimestamp(ev.Time))
		}
		e.open.put(k, e.startProcess(ev, true))
	case collector.SpanProcessEnd:
		p, ok := e.open.remove(k)
		if !ok {
			p = e.startProcess(ev, false)
		}
		p.refresh(ev)
		p.span.SetAttributes(AttrExitSeen.Bool(true))
		if ev.ExitCode != nil {
			p.span.SetAttributes(semconv.ProcessExitCode(int(*ev.ExitCode)))
		}
		if ev.ExitSignal != 0 {
			p.span.SetAttributes(AttrExitSignal.Int(int(ev.ExitSignal)))
		}
		p.span.End(trace.WithTimestamp(ev.Time))
	case collector.SpanEvent:
		p, ok := e.open.get(k)
		if !ok {
			p = e.startProcess(ev, false)
			e.open.put(k, p)
		}
		p.refresh(ev)
		_, s := e.tracer.Start(p.ctx, SpanName(ev.Kind),
			trace.WithTimestamp(ev.Time), trace.WithAttributes(eventAttrs(ev)...))
		s.End(trace.WithTimestamp(ev.Time.Add(ev.Latency)))
		e.spans.Add(1)
	}
}

// SpanName is the name of the span an event of kind k starts or
// continues: ProcessSpan for process starts and exits, the kind's name for
// the child spans of other traced kinds, "" for kinds not traced.
func SpanName(k collector.Kind) string {
	switch k.Info().Span {
	case collector.SpanProcessStart, collector.SpanProcessEnd:
		return ProcessSpan
	case collector.SpanEvent:
		return k.String()
	}
	return ""
}

func (e *Exporter) startProcess(ev *collector.Event, startSeen bool) *procSpan {
	g := ev.Guest
	attrs := []attribute.KeyValue{
		AttrDomain.String(g.Domain),
		semconv.OSTypeKey.String(utf8(g.OS)),
		semconv.ProcessPID(int(ev.Process.PID)),
		semconv.ProcessParentPID(int(ev.Process.PPID)),
		AttrStartSeen.Bool(startSeen),
	}
	if g.Kernel != "" {
		attrs = append(attrs, semconv.OSBuildID(utf8(g.Kernel)))
		if v := kernelVersion(utf8(g.Kernel)); v != "" {
			attrs = append(attrs, semconv.OSVersion(v))
		}
	}
	if ev.Process.Name != "" {
		attrs = append(attrs, semconv.ProcessExecutableName(utf8(ev.Process.Name)))
	}
	if ev.Process.Image != "" {
		attrs = append(attrs, semconv.ProcessExecutablePath(utf8(ev.Process.Image)))
	}
	if startSeen {
		attrs = append(attrs, AttrProbe.String(utf8(ev.Probe)), AttrVCPU.Int(ev.VCPU))
		if len(ev.Rules) > 0 {
			attrs = append(attrs, AttrRules.StringSlice(ev.Rules))
		}
	}
	// The process span carries the process's fields only.
	var cut []string
	for _, f := range ev.Truncated {
		if f == collector.FieldProcessName || f == collector.FieldProcessImage {
			cut = append(cut, f)
		}
	}
	if len(cut) > 0 {
		attrs = append(attrs, AttrTruncated.StringSlice(cut))
	}
	ctx := withTraceID(context.Background(), ev.TraceID)
	ctx, s := e.tracer.Start(ctx, ProcessSpan, trace.WithNewRoot(), trace.WithTimestamp(ev.Time), trace.WithAttributes(attrs...))
	e.spans.Add(1)
	return &procSpan{span: s, ctx: ctx, name: ev.Process.Name, image: ev.Process.Image}
}

func eventAttrs(ev *collector.Event) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		AttrDomain.String(ev.Guest.Domain),
		semconv.ProcessPID(int(ev.Process.PID)),
		AttrProbe.String(utf8(ev.Probe)),
		AttrVCPU.Int(ev.VCPU),
		AttrLatencyNS.Int64(int64(ev.Latency)),
	}
	if ev.Path != "" {
		attrs = append(attrs, semconv.FilePath(utf8(ev.Path)))
	}
	if ev.Process.Name != "" {
		attrs = append(attrs, semconv.ProcessExecutableName(utf8(ev.Process.Name)))
	}
	if len(ev.Rules) > 0 {
		attrs = append(attrs, AttrRules.StringSlice(ev.Rules))
	}
	if len(ev.Truncated) > 0 {
		attrs = append(attrs, AttrTruncated.StringSlice(ev.Truncated))
	}
	if ev.OldPath != "" {
		attrs = append(attrs, AttrOldPath.String(utf8(ev.OldPath)))
	}
	if ev.Created != nil {
		attrs = append(attrs, AttrCreated.Bool(*ev.Created))
	}
	if ev.Syscall != "" {
		attrs = append(attrs, AttrSyscall.String(utf8(ev.Syscall)))
	}
	if ev.Kind == collector.KindFileWrite {
		attrs = append(attrs, AttrBytes.Int64(int64(min(ev.Bytes, 1<<63-1))))
	}
	if len(ev.Args) > 0 {
		args := make([]string, len(ev.Args))
		for i, a := range ev.Args {
			args[i] = utf8(a)
		}
		attrs = append(attrs, semconv.ProcessCommandArgs(args...), AttrArgsTruncated.Bool(ev.ArgsTruncated))
	}
	return attrs
}

// utf8 makes a guest-controlled string valid UTF-8: OTLP's protobuf
// strings must be, and one bad process name would otherwise fail the
// export of its whole batch.
func utf8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// kernelVersion returns the release of a Linux banner ("Linux version
// 6.1.0-28-cloud-amd64 (...) ..." → "6.1.0-28-cloud-amd64").
func kernelVersion(k string) string {
	const p = "Linux version "
	if !strings.HasPrefix(k, p) {
		return ""
	}
	v, _, _ := strings.Cut(k[len(p):], " ")
	return v
}

// Close ends the spans of processes still running (exit_seen=false),
// flushes the batch processor and closes the span file. It gives up when
// ctx ends (a stalled endpoint).
func (e *Exporter) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		// An Export stuck behind a stalled endpoint holds mu: the open
		// spans are then left out, the batch processor still flushed.
		if e.mu.TryLock() {
			now := time.Now()
			e.open.each(func(_ procKey, p *procSpan) {
				p.span.SetAttributes(AttrExitSeen.Bool(false))
				p.span.End(trace.WithTimestamp(now))
			})
			e.open = newLRU[procKey, *procSpan](1, nil)
			e.mu.Unlock()
		} else {
			e.log.Warn("otlp: an export is stalled; open process spans are not ended")
		}
		done <- e.tp.Shutdown(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if e.file != nil {
		err = errors.Join(err, e.file.Close())
	}
	// Losses were counted as they happened; Close says so too, as it
	// used to return nil with every span of a rejected batch lost.
	if n, m := e.split.spansFailed.Load(), e.split.tooLarge.Load(); n+m > 0 {
		err = errors.Join(err, fmt.Errorf("%d spans lost in failed exports, %d too large", n, m))
	}
	if err != nil {
		return fmt.Errorf("otlp: %w", err)
	}
	return nil
}

// Collector exposes the exporter's own counters to Prometheus.
func (e *Exporter) Collector() prometheus.Collector {
	return collectors{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "vmi_otlp_process_spans_evicted_total",
			Help: "Open process spans ended early because the table of open processes was full.",
		}, func() float64 { return float64(e.evicted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "vmi_otlp_spans_started_total",
			Help: "Spans started by the OTLP exporter.",
		}, func() float64 { return float64(e.spans.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "vmi_otlp_export_failures_total",
			Help: "OTLP export requests that failed (after the exporter's retries); their spans are lost.",
		}, func() float64 { return float64(e.split.batchesFailed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "vmi_otlp_spans_failed_total",
			Help: "Spans lost in failed OTLP export requests (also in vmi_events_dropped_total{exporter=\"otlp\",reason=\"export_rejected\"}).",
		}, func() float64 { return float64(e.split.spansFailed.Load()) }),
	}
}

// SetLossFunc implements collector.LossReporter: spans of failed exports
// are counted through f, by the domain attribute of each span.
func (e *Exporter) SetLossFunc(f collector.LossFunc) { e.split.loss.Store(&f) }

var _ collector.LossReporter = (*Exporter)(nil)

// SpansFailed is the number of spans lost in failed export requests.
func (e *Exporter) SpansFailed() uint64 { return e.split.spansFailed.Load() }

// Evicted is the number of process spans ended by eviction.
func (e *Exporter) Evicted() uint64 { return e.evicted.Load() }

type collectors []prometheus.Collector

func (c collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c {
		x.Describe(ch)
	}
}

func (c collectors) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c {
		x.Collect(ch)
	}
}
