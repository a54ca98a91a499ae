package collector_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
)

// lossRecorder is a recorder that also counts losses by reason and
// truncated fields (collector.LossMetrics).
type lossRecorder struct {
	*recorder
	lmu       sync.Mutex
	lost      map[string]int // domain/exporter/reason
	truncated map[string]int // domain/field
}

func newLossRecorder() *lossRecorder {
	return &lossRecorder{recorder: newRecorder(), lost: map[string]int{}, truncated: map[string]int{}}
}

func (r *lossRecorder) Lost(d, e, reason string, n int) {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	r.lost[d+"/"+e+"/"+reason] += n
}

func (r *lossRecorder) Truncated(d, f string) {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	r.truncated[d+"/"+f]++
}

func (r *lossRecorder) lostOf(key string) int {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	return r.lost[key]
}

// funcSink is a Sink made of functions.
type funcSink struct {
	name    string
	export  func(*collector.Event)
	closed  atomic.Bool
	onClose func()
}

func (s *funcSink) Name() string               { return s.name }
func (s *funcSink) Export(ev *collector.Event) { s.export(ev) }
func (s *funcSink) Close(context.Context) error {
	s.closed.Store(true)
	if s.onClose != nil {
		s.onClose()
	}
	return nil
}

// runSteps runs a collector over one scripted Windows guest that emits
// steps, and stops it once they are all handled (after wait, when set).
func runSteps(t *testing.T, o collector.Options, steps []collectortest.Step, wait func()) error {
	t.Helper()
	done := make(chan struct{})
	a := &collectortest.Attacher{Guest: collector.Guest{OS: "windows"}, Script: collectortest.Replay(steps, done)}
	stop := collectortest.Start(t, o, a)
	<-done
	if wait != nil {
		wait()
	}
	return stop()
}

// A 98 KB NtCreateFile name (UNICODE_STRING is up to 0xfffe bytes) and a
// 1 MB object-name chain leave the collector capped, marked truncated and
// counted; rules see the capped form.
func TestGuestStringsCapped(t *testing.T) {
	rec := newLossRecorder()
	long := `\Device\HarddiskVolume2\Windows\System32\` + strings.Repeat("é", 49<<10) // 98 KB
	huge := strings.Repeat(`\a`, 800<<10)                                             // 1.6 MB
	var matched []int
	rule := collector.RuleFunc(func(ev *collector.Event) []string {
		matched = append(matched, len(ev.Path))
		return nil
	})
	steps := []collectortest.Step{
		{Kind: collector.KindFileCreate, Process: collector.Process{PID: 4, Name: strings.Repeat("n", 5000)}, Path: long},
		{Kind: collector.KindFileCreate, Process: collector.Process{PID: 4, Name: "ok"}, Path: huge},
		{Kind: collector.KindFileCreate, Process: collector.Process{PID: 4, Name: "ok"}, Path: `\a`},
	}
	err := runSteps(t, collector.Options{Metrics: rec, Sinks: []collector.Sink{rec}, Rules: []collector.Rule{rule}}, steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.exports) != 3 {
		t.Fatalf("exported %d events, want 3", len(rec.exports))
	}
	for i, ev := range rec.exports[:2] {
		if len(ev.Path) > collector.DefaultMaxStringLen || !strings.HasPrefix(ev.Path, `\`) {
			t.Errorf("event %d: path of %d bytes", i, len(ev.Path))
		}
		if !strings.Contains(fmt.Sprint(ev.Truncated), collector.FieldPath) {
			t.Errorf("event %d: truncated %v", i, ev.Truncated)
		}
	}
	if !strings.HasSuffix(rec.exports[0].Path, "é") {
		t.Error("cut inside a UTF-8 character")
	}
	if got := fmt.Sprint(rec.exports[0].Truncated); got != "[path process.name]" {
		t.Errorf("truncated %s", got)
	}
	if ev := rec.exports[2]; ev.Truncated != nil || ev.Path != `\a` {
		t.Errorf("short event changed: %+v", ev)
	}
	if rec.truncated["g/path"] != 2 || rec.truncated["g/process.name"] != 1 {
		t.Errorf("truncation counters %v", rec.truncated)
	}
	for _, n := range matched {
		if n > collector.DefaultMaxStringLen {
			t.Errorf("rule matched on %d bytes", n)
		}
	}
}

// A stalled sink holds at most QueueBytes of events, whatever their count;
// the rest is counted as queue_full.
func TestQueueBoundedInBytes(t *testing.T) {
	rec := newLossRecorder()
	release := make(chan struct{})
	var got atomic.Int64
	sink := &funcSink{name: "slow", export: func(*collector.Event) { <-release; got.Add(1) }}
	const n = 200
	steps := make([]collectortest.Step, n)
	for i := range steps {
		steps[i] = collectortest.Step{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: strings.Repeat("p", 4000)}
	}
	const maxBytes = 100 << 10 // room for about 23 such events
	err := runSteps(t, collector.Options{Metrics: rec, Sinks: []collector.Sink{sink}, QueueBytes: maxBytes}, steps,
		func() { close(release) })
	if err != nil {
		t.Fatal(err)
	}
	full := rec.lostOf("g/slow/queue_full")
	if full < n-30 || full+int(got.Load()) != n {
		t.Errorf("queue_full %d, delivered %d, of %d", full, got.Load(), n)
	}
}

// At shutdown a stalled sink costs only its own events: the other sink is
// drained, closed and flushed, the stalled one is closed too, and what it
// still held is counted as shutdown.
func TestShutdownClosesEverySink(t *testing.T) {
	rec := newLossRecorder()
	stall := make(chan struct{})
	defer close(stall)
	stalled := &funcSink{name: "stalled", export: func(*collector.Event) { <-stall }}
	var fast atomic.Int64
	quick := &funcSink{name: "quick", export: func(*collector.Event) { fast.Add(1) }}
	const n = 50
	steps := make([]collectortest.Step, n)
	for i := range steps {
		steps[i] = collectortest.Step{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: "/f"}
	}
	start := time.Now()
	// The stalled sink is first: it used to take the whole deadline.
	err := runSteps(t, collector.Options{Metrics: rec, Sinks: []collector.Sink{stalled, quick}, CloseTimeout: 200 * time.Millisecond}, steps, nil)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Errorf("Run error %v, want the stalled drain", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if !quick.closed.Load() || !stalled.closed.Load() {
		t.Errorf("closed: quick %v, stalled %v", quick.closed.Load(), stalled.closed.Load())
	}
	if fast.Load() != n {
		t.Errorf("quick sink got %d of %d", fast.Load(), n)
	}
	// One event is stuck in Export; the others are lost at shutdown.
	if s := rec.lostOf("g/stalled/shutdown"); s != n-1 {
		t.Errorf("shutdown losses %d, want %d (%v)", s, n-1, rec.lost)
	}
}

// A sink, a rule or a decoder that panics costs one event, counted; the
// guest's later events are delivered.
func TestPanicsCostOneEvent(t *testing.T) {
	rec := newLossRecorder()
	var got []string
	sink := &funcSink{name: "p", export: func(ev *collector.Event) {
		if ev.Path == "/sink-panic" {
			panic("sink bug")
		}
		got = append(got, ev.Path)
	}}
	rule := collector.RuleFunc(func(ev *collector.Event) []string {
		if ev.Path == "/rule-panic" {
			var m map[string]int
			m["x"]++ // nil map write: a runtime panic
		}
		return nil
	})
	steps := []collectortest.Step{
		{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: "/sink-panic"},
		{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: "/rule-panic"},
		{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: "/after"},
	}
	err := runSteps(t, collector.Options{Metrics: rec, Sinks: []collector.Sink{sink}, Rules: []collector.Rule{rule}}, steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[/after]" {
		t.Errorf("delivered %v", got)
	}
	if rec.lostOf("g/p/panic") != 1 {
		t.Errorf("sink panics counted %v", rec.lost)
	}
	if rec.errs["g/"+collectortest.ProbeWrite+"/panic"] != 1 {
		t.Errorf("handler panics counted %v", rec.errs)
	}
}

// counterRecorder is a lossRecorder that keeps the session counters'
// read function (collector.CounterMetrics).
type counterRecorder struct {
	*lossRecorder
	cmu  sync.Mutex
	read map[string]func() map[string]uint64
}

func (r *counterRecorder) SessionCounters(d string, read func() map[string]uint64) {
	r.cmu.Lock()
	defer r.cmu.Unlock()
	if read == nil {
		delete(r.read, d)
		return
	}
	r.read[d] = read
}

// A session's own counters (Windows parent mismatches, QEMU resteps) are
// handed to the metrics while it is attached, and withdrawn after.
func TestSessionCountersExported(t *testing.T) {
	rec := &counterRecorder{lossRecorder: newLossRecorder(), read: map[string]func() map[string]uint64{}}
	var during map[string]uint64
	done := make(chan struct{})
	a := &collectortest.Attacher{
		Counters: map[string]uint64{"qemu_resteps": 2},
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			close(done)
			return nil
		},
	}
	stop := collectortest.Start(t, collector.Options{Metrics: rec}, a)
	<-done
	waitFor(t, "counters", func() bool {
		rec.cmu.Lock()
		defer rec.cmu.Unlock()
		if r := rec.read["g"]; r != nil {
			during = r()
		}
		return during != nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if during["qemu_resteps"] != 2 {
		t.Errorf("counters while attached %v", during)
	}
	if rec.read["g"] != nil {
		t.Error("counters still exported after detach")
	}
}

// Shutdown while a vCPU is held in the handler (a rule still running):
// the hit is finished, the session closes (hooks removed, guest resumed),
// Detached is called then, and only after it do the queues drain.
func TestShutdownWhileHitHeld(t *testing.T) {
	rec := newLossRecorder()
	entered, release := make(chan struct{}), make(chan struct{})
	rule := collector.RuleFunc(func(ev *collector.Event) []string {
		if ev.Path == "/held" {
			close(entered)
			<-release
		}
		return nil
	})
	a := &collectortest.Attacher{
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			return emit(collectortest.Step{Kind: collector.KindFileWrite, Process: collector.Process{PID: 1}, Path: "/held"})
		},
	}
	stall := make(chan struct{})
	sink := &funcSink{name: "s", export: func(*collector.Event) { <-stall }}
	var hooksAtDetach = -1
	var drainedAtDetach bool
	stop := collectortest.Start(t, collector.Options{
		Metrics: rec, Rules: []collector.Rule{rule}, Sinks: []collector.Sink{sink},
		CloseTimeout: 100 * time.Millisecond,
		Detached: func() {
			_, _, _, hooksAtDetach = a.Stats()
			drainedAtDetach = sink.closed.Load()
		},
	}, a)
	<-entered
	errc := make(chan error, 1)
	go func() { errc <- stop() }() // SIGTERM
	time.Sleep(20 * time.Millisecond)
	close(release)
	err := <-errc
	close(stall)
	if _, open, closed, hooks := a.Stats(); open != 0 || closed != 1 || hooks != 0 {
		t.Errorf("after shutdown: open=%d closed=%d hooks=%d", open, closed, hooks)
	}
	if hooksAtDetach != 0 || drainedAtDetach {
		t.Errorf("Detached saw hooks=%d, sink closed=%v", hooksAtDetach, drainedAtDetach)
	}
	if err == nil || !sink.closed.Load() {
		t.Errorf("Run %v, sink closed %v", err, sink.closed.Load())
	}
}
