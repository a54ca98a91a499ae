package otlp_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
)

// sizedReceiver is a stock gRPC trace receiver (default 4 MiB message
// limit) that records the size of each request, or fails every one.
type sizedReceiver struct {
	receiver
	smu   sync.Mutex
	sizes []int
	fail  bool
}

func (r *sizedReceiver) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.smu.Lock()
	r.sizes = append(r.sizes, proto.Size(req))
	r.smu.Unlock()
	if r.fail {
		return nil, status.Error(codes.InvalidArgument, "rejected by test")
	}
	r.add(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func sizedGRPCReceiver(t *testing.T, fail bool) (*sizedReceiver, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &sizedReceiver{fail: fail}
	s := grpc.NewServer() // MaxRecvMsgSize: 4 MiB, as an OTel Collector's
	collectorpb.RegisterTraceServiceServer(s, r)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return r, l.Addr().String()
}

// hostileSteps are 400 file writes of one process, every other one with a
// 98 KB path (a UNICODE_STRING of 0xfffe bytes, UTF-8 encoded).
func hostileSteps() []collectortest.Step {
	long := `\??\C:\` + strings.Repeat("ü", 49<<10)
	var steps []collectortest.Step
	for i := range 400 {
		p := `\??\C:\short.txt`
		if i%2 == 0 {
			p = long
		}
		steps = append(steps, collectortest.Step{Kind: collector.KindFileWrite, Process: proc(7, 1, "w"), Path: p})
	}
	return steps
}

// runWith drives steps through a collector with limits into exp, and
// returns what Run returned.
func runWith(t *testing.T, exp *otlp.Exporter, lim collector.Limits, m collector.Metrics, steps []collectortest.Step) error {
	t.Helper()
	done := make(chan struct{})
	a := &collectortest.Attacher{Guest: collector.Guest{OS: "windows"}, Script: collectortest.Replay(steps, done)}
	stop := collectortest.Start(t, collector.Options{
		Guests:    []collector.GuestConfig{{Name: "vm1", Driver: "t"}},
		Enrichers: []collector.Enricher{exp.Tracker()},
		Sinks:     []collector.Sink{exp}, Limits: lim, Metrics: m, CloseTimeout: 30 * time.Second,
		QueueBytes: 1 << 30, // the split test sends 20 MB of events at once
	}, a)
	<-done
	return stop()
}

// With the collector's caps, 200 98 KB paths among 400 events reach a
// stock receiver, capped and marked truncated (before: 0 of 402 spans
// were delivered and nothing counted the loss).
func TestHostilePathsDeliveredCapped(t *testing.T) {
	r, addr := sizedGRPCReceiver(t, false)
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: addr, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := runWith(t, exp, collector.Limits{}, nil, hostileSteps()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.spans) != 401 { // 400 writes and their process
		t.Fatalf("receiver got %d spans, want 401", len(r.spans))
	}
	truncated := 0
	for _, s := range index(r.spans) {
		if len(s.attrs["file.path"]) > collector.DefaultMaxStringLen {
			t.Fatalf("path of %d bytes delivered", len(s.attrs["file.path"]))
		}
		if s.attrs["vmi.truncated"] == "[path]" {
			truncated++
		}
	}
	if truncated != 200 {
		t.Errorf("%d spans marked truncated, want 200", truncated)
	}
}

// Without the collector's cap, spans of 32 KiB still reach the receiver:
// each batch is split into requests under its 4 MiB limit.
func TestBatchesSplitToMessageLimit(t *testing.T) {
	r, addr := sizedGRPCReceiver(t, false)
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: addr, Insecure: true, MaxAttributeLen: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := runWith(t, exp, collector.Limits{MaxStringLen: -1}, nil, hostileSteps()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.spans) != 401 {
		t.Fatalf("receiver got %d spans, want 401", len(r.spans))
	}
	if len(r.sizes) < 2 {
		t.Errorf("one request of %v bytes: not split", r.sizes)
	}
	for _, n := range r.sizes {
		if n > otlp.DefaultMaxMessageBytes {
			t.Errorf("request of %d bytes over the limit", n)
		}
	}
}

// lossMetrics records LossMetrics calls (the rest of collector.Metrics
// does nothing).
type lossMetrics struct {
	mu   sync.Mutex
	lost map[string]int
}

func (m *lossMetrics) Event(*collector.Event)            {}
func (m *lossMetrics) ProbeError(string, string, string) {}
func (m *lossMetrics) Notice(string, string)             {}
func (m *lossMetrics) Attach(string, error)              {}
func (m *lossMetrics) Up(string, *collector.Guest, bool) {}
func (m *lossMetrics) Dropped(string, string)            {}
func (m *lossMetrics) Queue(string, func() int)          {}
func (m *lossMetrics) Truncated(string, string)          {}
func (m *lossMetrics) Lost(d, e, reason string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lost[d+"/"+e+"/"+reason] += n
}

// A receiver that rejects every request costs counted spans: per request
// and per span, and in vmi_events_dropped_total by domain (before: a Warn
// line, and Close returned nil).
func TestExportFailuresCounted(t *testing.T) {
	_, addr := sizedGRPCReceiver(t, true)
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: addr, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	m := &lossMetrics{lost: map[string]int{}}
	err = runWith(t, exp, collector.Limits{}, m, hostileSteps()[:10])
	if err == nil || !strings.Contains(err.Error(), "11 spans lost") {
		t.Errorf("Run (closing the exporter): %v", err)
	}
	if exp.SpansFailed() != 11 {
		t.Errorf("%d spans counted failed, want 11", exp.SpansFailed())
	}
	if got := m.lost["vm1/otlp/export_rejected"]; got != 11 {
		t.Errorf("losses %v, want 11 export_rejected for vm1", m.lost)
	}
}
