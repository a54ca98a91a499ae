package otlp_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
)

// receiver is an OTLP trace receiver: it keeps every span it is sent.
type receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	mu       sync.Mutex
	spans    []*tracepb.Span
	resource map[string]string
	headers  []string
}

func (r *receiver) add(req *collectorpb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		r.resource = attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
}

func (r *receiver) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_ArrayValue:
			var s []string
			for _, e := range x.ArrayValue.GetValues() {
				s = append(s, e.GetStringValue())
			}
			m[kv.GetKey()] = fmt.Sprint(s)
		}
	}
	return m
}

// grpcReceiver serves a receiver on a free loopback port.
func grpcReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
	s := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(s, r)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return r, l.Addr().String()
}

// events is a sink remembering the events, to compare trace IDs.
type events struct {
	mu  sync.Mutex
	evs []*collector.Event
}

func (e *events) Name() string { return "events" }
func (e *events) Export(ev *collector.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}
func (e *events) Close(context.Context) error { return nil }

func proc(pid, ppid uint64, name string) collector.Process {
	return collector.Process{PID: pid, PPID: ppid, Name: name, Image: "/usr/bin/" + name}
}

// script: process 10 starts (forked by a shell, so still named after it),
// runs "writer", which creates and writes a file, and exits; process 20
// (running before the attach) writes a file and never exits; process 30
// starts and is still running at shutdown.
var script = []collectortest.Step{
	{Kind: collector.KindProcessStart, VCPU: 1, Process: proc(10, 1, "sh")},
	{Kind: collector.KindFileCreate, VCPU: 1, Process: proc(10, 1, "writer"), Path: "/tmp/out"},
	{Kind: collector.KindFileWrite, VCPU: 0, Process: proc(20, 1, "old"), Path: "/var/log/old"},
	{Kind: collector.KindFileWrite, VCPU: 1, Process: proc(10, 1, "writer"), Path: "/tmp/out"},
	{Kind: collector.KindProcessStart, Process: proc(30, 10, "sleeper\xff\xfe")},
	{Kind: collector.KindProcessExit, VCPU: 1, Process: proc(10, 1, "writer")},
}

// run drives script through a collector into exp and stops it.
func run(t *testing.T, exp *otlp.Exporter, steps []collectortest.Step) *events {
	t.Helper()
	done := make(chan struct{})
	a := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux", Kernel: "Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"},
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			for _, s := range steps {
				if err := emit(s); err != nil {
					return err
				}
			}
			close(done)
			return nil
		},
	}
	evs := &events{}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "vm1", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": a},
		Enabled:   collector.ProbeKinds(),
		Enrichers: []collector.Enricher{exp.Tracker()},
		Rules: []collector.Rule{collector.RuleFunc(func(ev *collector.Event) []string {
			if ev.Path == "/tmp/out" && ev.Kind == collector.KindFileWrite {
				return []string{"tmp-write"}
			}
			return nil
		})},
		Sinks: []collector.Sink{exp, evs},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Run(ctx) }()
	<-done
	time.Sleep(20 * time.Millisecond) // let the queues drain before the running processes are ended
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return evs
}

type span struct {
	name           string
	trace, id, par string
	start, end     uint64
	attrs          map[string]string
}

func index(spans []*tracepb.Span) []span {
	var out []span
	for _, s := range spans {
		out = append(out, span{name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()),
			par: hex.EncodeToString(s.GetParentSpanId()), start: s.GetStartTimeUnixNano(), end: s.GetEndTimeUnixNano(), attrs: attrs(s.GetAttributes())})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].start != out[j].start {
			return out[i].start < out[j].start
		}
		return out[i].par == "" && out[j].par != ""
	})
	return out
}

func checkSpans(t *testing.T, r *receiver, evs *events) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resource["service.name"] != "vmi-exporter" || r.resource["service.version"] != "1.2.3" || r.resource["host.name"] == "" {
		t.Errorf("resource %v", r.resource)
	}
	spans := index(r.spans)
	if len(spans) != 6 {
		for _, s := range spans {
			t.Logf("%+v", s)
		}
		t.Fatalf("%d spans, want 6", len(spans))
	}
	byPid := map[string][]span{}
	for _, s := range spans {
		byPid[s.attrs["process.pid"]] = append(byPid[s.attrs["process.pid"]], s)
	}
	// Process 10: root span from start to exit, two file children.
	p10 := byPid["10"]
	if len(p10) != 3 {
		t.Fatalf("pid 10 spans %+v", p10)
	}
	root := p10[0]
	want := map[string]string{
		"vmi.domain": "vm1", "os.type": "linux", "os.version": "6.1.0-28-cloud-amd64",
		"os.build_id":             "Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP",
		"process.pid":             "10",
		"process.parent_pid":      "1",
		"process.executable.name": "writer", "process.executable.path": "/usr/bin/writer",
		"vmi.process.start_seen": "true", "vmi.process.exit_seen": "true",
		"vmi.probe": collectortest.ProbeStart, "vmi.vcpu": "1",
	}
	if root.name != otlp.ProcessSpan || root.par != "" || fmt.Sprint(pick(root.attrs, want)) != fmt.Sprint(want) {
		t.Errorf("process span %+v", root)
	}
	for i, wantName := range []string{"file.create", "file.write"} {
		c := p10[i+1]
		if c.name != wantName || c.par != root.id || c.trace != root.trace || c.attrs["file.path"] != "/tmp/out" ||
			c.attrs["vmi.vcpu"] != "1" || c.start < root.start || c.end > root.end {
			t.Errorf("child %d %+v of %+v", i, c, root)
		}
	}
	if p10[2].attrs["vmi.rules"] != "[tmp-write]" {
		t.Errorf("rules %+v", p10[2].attrs)
	}
	// Process 20: start not seen; root made at the first event.
	p20 := byPid["20"]
	if len(p20) != 2 || p20[0].attrs["vmi.process.start_seen"] != "false" || p20[1].par != p20[0].id ||
		p20[1].attrs["file.path"] != "/var/log/old" || p20[0].trace == root.trace {
		t.Errorf("pid 20 spans %+v", p20)
	}
	// Process 30: still running at shutdown, ended then.
	p30 := byPid["30"]
	if len(p30) != 1 || p30[0].attrs["vmi.process.exit_seen"] != "false" || p30[0].attrs["process.parent_pid"] != "10" ||
		p30[0].attrs["process.executable.name"] != "sleeper\uFFFD" {
		t.Errorf("pid 30 spans %+v", p30)
	}
	// Events carry their span's trace ID (the metrics' exemplar).
	evs.mu.Lock()
	defer evs.mu.Unlock()
	for _, ev := range evs.evs {
		if got := byPid[fmt.Sprint(ev.Process.PID)][0].trace; ev.TraceID.String() != got {
			t.Errorf("event %s of pid %d has trace %s, span %s", ev.Kind, ev.Process.PID, ev.TraceID, got)
		}
	}
}

func pick(m, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		out[k] = m[k]
	}
	return out
}

func TestGRPCReceiverGetsProcessTraces(t *testing.T) {
	r, addr := grpcReceiver(t)
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: addr, Protocol: "grpc", Insecure: true, Version: "1.2.3",
		Headers: map[string]string{"x-tenant": "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := run(t, exp, script)
	checkSpans(t, r, evs)
}

func TestHTTPReceiverGetsProcessTraces(t *testing.T) {
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var m collectorpb.ExportTraceServiceRequest
		if req.URL.Path != "/v1/traces" || proto.Unmarshal(b, &m) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		r.mu.Lock()
		r.headers = append(r.headers, req.Header.Get("X-Tenant"))
		r.mu.Unlock()
		r.add(&m)
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	defer srv.Close()
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: srv.URL, Protocol: "http", Insecure: true, Version: "1.2.3",
		Headers: map[string]string{"X-Tenant": "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := run(t, exp, script)
	checkSpans(t, r, evs)
	if len(r.headers) == 0 || r.headers[0] != "t1" {
		t.Errorf("headers %v", r.headers)
	}
}

// The table of open processes is bounded: the oldest is ended and counted.
func TestOpenProcessTableEvicts(t *testing.T) {
	r, addr := grpcReceiver(t)
	exp, err := otlp.New(context.Background(), otlp.Options{Endpoint: addr, Insecure: true, MaxOpenProcesses: 2})
	if err != nil {
		t.Fatal(err)
	}
	var steps []collectortest.Step
	for pid := uint64(1); pid <= 5; pid++ {
		steps = append(steps, collectortest.Step{Kind: collector.KindProcessStart, Process: proc(pid, 0, "p")})
	}
	run(t, exp, steps)
	if exp.Evicted() != 3 {
		t.Errorf("evicted %d, want 3", exp.Evicted())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := 0
	for _, s := range index(r.spans) {
		if s.attrs["vmi.process.evicted"] == "true" {
			ev++
		}
	}
	if len(r.spans) != 5 || ev != 3 {
		t.Errorf("%d spans, %d evicted", len(r.spans), ev)
	}
}
