package otlp

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/ratelog"
	"github.com/vmi-exporter/vmi-exporter/internal/redact"
)

// DefaultMaxMessageBytes is the Options.MaxMessageBytes used when it is 0:
// the default gRPC receive limit of the OpenTelemetry Collector (and of
// grpc-go servers).
const DefaultMaxMessageBytes = 4 << 20

// requestOverhead is what one export request carries besides its spans
// (resource, scope, framing), with room to spare.
const requestOverhead = 16 << 10

// splitter is the SpanExporter the batch processor feeds: it splits each
// batch into requests that fit the receiver's message limit (a receiver
// rejects a whole oversized request, so one large span used to cost the
// other 511), and counts what an export still loses.
type splitter struct {
	next  sdktrace.SpanExporter
	limit int // bytes of spans per request

	loss     atomic.Pointer[collector.LossFunc]
	log      *ratelog.Logger
	endpoint string // redacted from logged errors

	batchesFailed, spansFailed, tooLarge atomic.Uint64
}

func newSplitter(next sdktrace.SpanExporter, maxMessage int, log *slog.Logger, endpoint string) *splitter {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessageBytes
	}
	return &splitter{next: next, limit: max(maxMessage-requestOverhead, maxMessage/2), log: ratelog.New(log, ratelog.DefaultInterval), endpoint: endpoint}
}

// ExportSpans implements sdktrace.SpanExporter. It returns nil once the
// losses are counted and logged (at a limited rate): the batch processor
// does not retry, and the process-wide OTel error handler would log every
// failed batch.
func (s *splitter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	var (
		chunk []sdktrace.ReadOnlySpan
		size  int
	)
	for _, sp := range spans {
		n := spanSize(sp)
		if n > s.limit {
			// Cannot happen with the attribute limits set by New; counted
			// should a future attribute escape them.
			s.tooLarge.Add(1)
			s.lost(domainOf(sp), collector.LossTooLarge, 1)
			s.log.Warn("span larger than the OTLP message limit dropped", "span", sp.Name(), "bytes", n, "limit", s.limit)
			continue
		}
		if size+n > s.limit && len(chunk) > 0 {
			s.export(ctx, chunk)
			chunk, size = nil, 0
		}
		chunk = append(chunk, sp)
		size += n
	}
	if len(chunk) > 0 {
		s.export(ctx, chunk)
	}
	return nil
}

func (s *splitter) export(ctx context.Context, spans []sdktrace.ReadOnlySpan) {
	err := s.next.ExportSpans(ctx, spans)
	if err == nil {
		return
	}
	s.batchesFailed.Add(1)
	s.spansFailed.Add(uint64(len(spans)))
	byDomain := map[string]int{}
	for _, sp := range spans {
		byDomain[domainOf(sp)]++
	}
	for d, n := range byDomain {
		s.lost(d, collector.LossExportRejected, n)
	}
	// The HTTP exporter's errors quote the endpoint URL, credentials
	// and all.
	s.log.Warn("span export failed", "spans", len(spans), "err", redact.Error(err, s.endpoint))
}

func (s *splitter) lost(domain, reason string, n int) {
	if f := s.loss.Load(); f != nil {
		(*f)(domain, reason, n)
	}
}

// Shutdown implements sdktrace.SpanExporter.
func (s *splitter) Shutdown(ctx context.Context) error {
	if err := s.next.Shutdown(ctx); err != nil {
		return fmt.Errorf("span exporter shutdown: %w", err)
	}
	return nil
}

func domainOf(sp sdktrace.ReadOnlySpan) string {
	for _, kv := range sp.Attributes() {
		if kv.Key == AttrDomain {
			return kv.Value.AsString()
		}
	}
	return ""
}

// spanSize overestimates the protobuf encoding of a span: its fixed fields
// with tags and lengths, plus every attribute, event and link.
func spanSize(sp sdktrace.ReadOnlySpan) int {
	n := 96 + len(sp.Name()) + attrsSize(sp.Attributes())
	for _, e := range sp.Events() {
		n += 32 + len(e.Name) + attrsSize(e.Attributes)
	}
	for _, l := range sp.Links() {
		n += 64 + attrsSize(l.Attributes)
	}
	n += 16 + len(sp.Status().Description)
	return n
}

func attrsSize(kvs []attribute.KeyValue) int {
	n := 0
	for _, kv := range kvs {
		n += 16 + len(kv.Key)
		switch kv.Value.Type() {
		case attribute.STRING:
			n += len(kv.Value.AsString())
		case attribute.STRINGSLICE:
			for _, v := range kv.Value.AsStringSlice() {
				n += 8 + len(v)
			}
		case attribute.BOOLSLICE:
			n += 2 * len(kv.Value.AsBoolSlice())
		case attribute.INT64SLICE:
			n += 11 * len(kv.Value.AsInt64Slice())
		case attribute.FLOAT64SLICE:
			n += 9 * len(kv.Value.AsFloat64Slice())
		default:
			n += 16
		}
	}
	return n
}
