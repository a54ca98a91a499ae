package collector_test

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// flood is a scripted guest that, once started, emits n events: processes
// that start, create two files, write three times and exit.
type flood struct {
	ready, start, done chan struct{}
	n                  int
}

func newFlood(n int) *flood {
	return &flood{ready: make(chan struct{}), start: make(chan struct{}), done: make(chan struct{}), n: n}
}

func (f *flood) attacher() *collectortest.Attacher {
	return &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux", Kernel: "Linux version 6.1.0-bench"},
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			close(f.ready)
			<-f.start
			defer close(f.done)
			kinds := [...]collector.Kind{collector.KindProcessStart, collector.KindFileCreate, collector.KindFileCreate,
				collector.KindFileWrite, collector.KindFileWrite, collector.KindFileWrite, collector.KindProcessExit}
			st := collectortest.Step{Path: "/var/tmp/bench/file"}
			for i := range f.n {
				st.Kind = kinds[i%len(kinds)]
				st.Process = collector.Process{PID: uint64(1000 + i/len(kinds)), PPID: 1, Name: "bench", Image: "/usr/bin/bench"}
				if err := emit(st); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// pipelineBench runs n flood events through a collector with Prometheus
// metrics and an OTLP exporter over exp; it returns when the guest has
// emitted everything (not when exporters are done) plus a stop function.
// A nil o leaves the OTLP exporter out.
func runFlood(b *testing.B, f *flood, o *otlp.Options, queue int) (m *promexp.Metrics, stop func()) {
	m = promexp.New(promexp.Options{})
	co := collector.Options{
		Guests:    []collector.GuestConfig{{Name: "bench", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": f.attacher()},
		Enabled:   collector.ProbeKinds(),
		Metrics:   m, QueueSize: queue, CloseTimeout: 2 * time.Second,
	}
	if o != nil {
		exp, err := otlp.New(context.Background(), *o)
		if err != nil {
			b.Fatal(err)
		}
		co.Sinks = []collector.Sink{exp}
		co.Enrichers = []collector.Enricher{exp.Tracker()}
	}
	c, err := collector.New(co)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	<-f.ready
	return m, func() { cancel(); <-errc }
}

// BenchmarkPipeline: events per second from the hook handler through the
// event loop, Prometheus metrics (with exemplars) and the OTLP exporter
// (batch processor into an in-memory exporter), counting allocations of
// every goroutine involved.
func BenchmarkPipeline(b *testing.B) {
	mem := tracetest.NewInMemoryExporter()
	f := newFlood(b.N)
	_, stop := runFlood(b, f, &otlp.Options{SpanExporter: mem}, 1<<16)
	// Empty the in-memory exporter as a receiver would, so that its
	// growing slice does not dominate.
	go func() {
		for {
			select {
			case <-f.done:
				return
			case <-time.After(50 * time.Millisecond):
				mem.Reset()
			}
		}
	}()
	measureFlood(b, f)
	stop()
	mem.Reset()
}

// BenchmarkPipelineMetricsOnly: the same flood with Prometheus metrics
// only, to separate the cost of the event loop and metrics from tracing.
func BenchmarkPipelineMetricsOnly(b *testing.B) {
	f := newFlood(b.N)
	_, stop := runFlood(b, f, nil, 1<<16)
	measureFlood(b, f)
	stop()
}

// stalledEndpoint accepts TCP connections and never answers: an OTLP
// receiver that hangs.
func stalledEndpoint(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// BenchmarkFloodStalledOTLP: a sustained flood of events while the OTLP
// endpoint hangs. Memory stays bounded (batch queue, exporter queue, open
// span table) and the excess is dropped and counted; reports the peak and
// final live heap and the fraction of events dropped.
func BenchmarkFloodStalledOTLP(b *testing.B) {
	const events = 1_000_000
	addr := stalledEndpoint(b)
	for range b.N {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		f := newFlood(events)
		m, stop := runFlood(b, f, &otlp.Options{Endpoint: addr, Insecure: true, MaxOpenProcesses: 10000}, collector.DefaultQueueSize)
		var peak atomic.Uint64
		sample := make(chan struct{})
		go func() {
			defer close(sample)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-f.done:
					return
				case <-t.C:
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					if ms.HeapAlloc > peak.Load() {
						peak.Store(ms.HeapAlloc)
					}
				}
			}
		}()
		start := time.Now()
		close(f.start)
		<-f.done
		elapsed := time.Since(start)
		<-sample
		runtime.GC()
		var end runtime.MemStats
		runtime.ReadMemStats(&end)
		dropped := counterSum(b, m, "vmi_events_dropped_total")
		stop()
		if dropped == 0 {
			b.Fatal("no drops counted with a stalled endpoint")
		}
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapAlloc))/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(end.HeapAlloc-min(end.HeapAlloc, base.HeapAlloc))/(1<<20), "live-heap-MiB")
		b.ReportMetric(dropped/events, "dropped-fraction")
		b.ReportMetric(events/elapsed.Seconds(), "events/s")
	}
}

// measureFlood starts the flood f of b.N events and times it until the
// event loop has taken every event: events per second, CPU time and
// allocations per event.
func measureFlood(b *testing.B, f *flood) {
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	close(f.start)
	<-f.done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
}

// cpuTime is the process's user+system CPU time: a cost per event that
// does not depend on what else the machine runs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func counterSum(b *testing.B, m *promexp.Metrics, name string) float64 {
	mfs, err := m.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	s := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, mt := range mf.GetMetric() {
				s += mt.GetCounter().GetValue()
			}
		}
	}
	return s
}
