package collector_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"

	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// recorder is a Metrics and a Sink that remembers everything.
type recorder struct {
	mu      sync.Mutex
	events  []*collector.Event
	exports []*collector.Event
	errs    map[string]int
	notices map[string]int
	up      map[string]bool
	attach  map[string]int
	dropped map[string]int
	block   chan struct{} // Export waits on it when set
}

func newRecorder() *recorder {
	return &recorder{errs: map[string]int{}, notices: map[string]int{}, up: map[string]bool{},
		attach: map[string]int{}, dropped: map[string]int{}}
}

func (r *recorder) Event(ev *collector.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}
func (r *recorder) ProbeError(d, p, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[d+"/"+p+"/"+reason]++
}
func (r *recorder) Notice(d, k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices[d+"/"+k]++
}
func (r *recorder) Attach(d string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attach[fmt.Sprintf("%s/%v", d, err == nil)]++
}
func (r *recorder) Up(d string, g *collector.Guest, up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up[d] = up
}
func (r *recorder) Dropped(d, e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped[d+"/"+e]++
}
func (r *recorder) Queue(string, func() int) {}
func (r *recorder) Name() string             { return "rec" }
func (r *recorder) Export(ev *collector.Event) {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports = append(r.exports, ev)
}
func (r *recorder) Close(context.Context) error { return nil }

func (r *recorder) isUp(d string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up[d]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func proc(pid, ppid uint64, name string) collector.Process {
	return collector.Process{PID: pid, PPID: ppid, Name: name, Image: "/bin/" + name}
}

func TestEventsNoticesAndErrors(t *testing.T) {
	rec := newRecorder()
	done := make(chan struct{})
	notFault := fmt.Errorf("read: %w", &paging.TranslationError{VA: 0x1000, Err: paging.ErrNotPresent})
	a := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux", Kernel: "Linux version 6.1.0"},
		Script: func(ctx context.Context, n int, emit func(collectortest.Step) error) error {
			steps := []collectortest.Step{
				{Kind: collector.KindProcessStart, VCPU: 1, Process: proc(100, 1, "sh")},
				{Kind: collector.KindFileCreate, Process: proc(100, 1, "sh"), Path: "/tmp/a"},
				{Kind: collector.KindFileWrite, Err: fmt.Errorf("pipe: %w", collector.ErrSkip)},
				{Kind: collector.KindFileWrite, Err: errors.New("garbage dentry")},
				{Notice: &hook.Notice{Kind: hook.NoticePageOut, VCPU: 0, Tag: collectortest.ProbeWrite, Addr: 0xffff1000}},
				{Notice: &hook.Notice{Kind: hook.NoticeStaleBreakpoint}},
				{Notice: &hook.Notice{Kind: hook.NoticeUnreadable, Tag: collectortest.ProbeWrite}},
				{Kind: collector.KindProcessExit, Process: proc(100, 1, "sh")},
			}
			for _, s := range steps {
				if err := emit(s); err != nil {
					return err
				}
			}
			// A missing page is handed back to the engine, not counted.
			if err := emit(collectortest.Step{Kind: collector.KindFileWrite, Err: notFault}); !errors.Is(err, paging.ErrNotPresent) {
				return fmt.Errorf("page fault not returned to the engine: %v", err)
			}
			close(done)
			return nil
		},
	}
	var rules collector.RuleFunc = func(ev *collector.Event) []string {
		if ev.Path == "/tmp/a" {
			return []string{"tmp"}
		}
		return nil
	}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "g1", Driver: "test"}},
		Attachers: map[string]collector.Attacher{"test": a},
		Enabled:   collector.ProbeKinds(),
		Metrics:   rec, Sinks: []collector.Sink{rec}, Rules: []collector.Rule{rules},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Run(ctx) }()
	<-done
	waitFor(t, "up", func() bool { return rec.isUp("g1") })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, open, closed, hooks := a.Stats(); open != 0 || closed != 1 || hooks != 0 {
		t.Errorf("open=%d closed=%d hooks=%d after exit", open, closed, hooks)
	}
	if rec.up["g1"] {
		t.Error("guest still up after exit")
	}
	var kinds []string
	for _, ev := range rec.exports {
		kinds = append(kinds, ev.Kind.String())
		if ev.Guest.Domain != "g1" || ev.Guest.Kernel != "Linux version 6.1.0" {
			t.Errorf("guest identity %+v", ev.Guest)
		}
	}
	want := "[process.start file.create page.out process.exit]"
	if fmt.Sprint(kinds) != want {
		t.Fatalf("exported %v, want %s", kinds, want)
	}
	if ev := rec.exports[0]; ev.VCPU != 1 || ev.Probe != collectortest.ProbeStart || ev.Process.PID != 100 || ev.Time.IsZero() {
		t.Errorf("start event %+v", ev)
	}
	if ev := rec.exports[1]; fmt.Sprint(ev.Rules) != "[tmp]" || ev.Path != "/tmp/a" {
		t.Errorf("create event %+v", ev)
	}
	if ev := rec.exports[2]; ev.Address != 0xffff1000 || ev.Probe != "" {
		t.Errorf("page-out event %+v", ev)
	}
	wantErrs := map[string]int{
		"g1/vfs_write/skip": 1, "g1/vfs_write/decode": 1, "g1/vfs_write/unreadable": 1,
	}
	if fmt.Sprint(rec.errs) != fmt.Sprint(wantErrs) {
		t.Errorf("probe errors %v, want %v", rec.errs, wantErrs)
	}
	if rec.notices["g1/stale_breakpoint"] != 1 {
		t.Errorf("notices %v", rec.notices)
	}
}

// A guest that dies is marked down and attached again with backoff while
// another guest keeps delivering events.
func TestSupervisorRetriesWhileOthersRun(t *testing.T) {
	rec := newRecorder()
	flaky := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux"},
		AttachErr: func(n int) error {
			if n == 1 {
				return errors.New("qmp: connection refused")
			}
			return nil
		},
		Script: func(ctx context.Context, n int, emit func(collectortest.Step) error) error {
			if n == 0 {
				return collectortest.ErrDied
			}
			return nil
		},
	}
	var steady collectortest.Attacher
	tick := make(chan struct{})
	steady.Guest = collector.Guest{OS: "linux"}
	steady.Script = func(ctx context.Context, n int, emit func(collectortest.Step) error) error {
		for pid := uint64(1); ; pid++ {
			select {
			case <-ctx.Done():
				return nil
			case <-tick:
			}
			if err := emit(collectortest.Step{Kind: collector.KindProcessStart, Process: proc(pid, 1, "x")}); err != nil {
				return nil
			}
		}
	}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "flaky", Driver: "flaky"}, {Name: "steady", Driver: "steady"}},
		Attachers: map[string]collector.Attacher{"flaky": flaky, "steady": &steady},
		Enabled:   collector.ProbeKinds(),
		Metrics:   rec, Sinks: []collector.Sink{rec},
		Backoff: collector.Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, Jitter: 0.5},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Run(ctx) }()
	tick <- struct{}{}
	waitFor(t, "third attach of the flaky guest", func() bool {
		n, _, _, _ := flaky.Stats()
		return n >= 3 && rec.isUp("flaky")
	})
	tick <- struct{}{}
	waitFor(t, "events of the steady guest", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.exports) == 2
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if rec.attach["flaky/false"] != 1 || rec.attach["flaky/true"] != 2 || rec.attach["steady/true"] != 1 {
		t.Errorf("attach attempts %v", rec.attach)
	}
	for _, a := range []*collectortest.Attacher{flaky, &steady} {
		if _, open, _, hooks := a.Stats(); open != 0 || hooks != 0 {
			t.Errorf("open=%d hooks=%d after exit", open, hooks)
		}
	}
}

// A guest whose kernel check fails (it rebooted) is marked down and
// attached again, its hooks removed; a session that cannot be checked
// runs on.
func TestVerifyFailureReattaches(t *testing.T) {
	rec := newRecorder()
	rebooted := errors.New("banner changed")
	a := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux"},
		Verify: func(n int) error {
			if n == 0 {
				return rebooted
			}
			return fmt.Errorf("no check: %w", driver.ErrUnsupported)
		},
	}
	var logs testutil.SyncBuffer
	c, err := collector.New(collector.Options{
		Guests:         []collector.GuestConfig{{Name: "g", Driver: "d"}},
		Attachers:      map[string]collector.Attacher{"d": a},
		Enabled:        collector.ProbeKinds(),
		Metrics:        rec,
		Backoff:        collector.Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond},
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
		VerifyInterval: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Run(ctx) }()
	waitFor(t, "second attach after the failed check", func() bool {
		n, _, closed, _ := a.Stats()
		return n == 2 && closed == 1 && rec.isUp("g")
	})
	// The second session answers ErrUnsupported: checks stop, it stays.
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n, open, closed, hooks := a.Stats(); n != 2 || open != 0 || closed != 2 || hooks != 0 {
		t.Errorf("attempts %d open %d closed %d hooks %d", n, open, closed, hooks)
	}
	if !strings.Contains(logs.String(), "banner changed") {
		t.Errorf("the failed check is not logged:\n%s", logs.String())
	}
}

// A stalled exporter never blocks the event loop: the queue fills, the
// rest is dropped and counted, and metrics still see every event.
func TestStalledSinkDrops(t *testing.T) {
	rec := newRecorder()
	rec.block = make(chan struct{})
	const n = 100
	done := make(chan struct{})
	a := &collectortest.Attacher{
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			for i := range n {
				if err := emit(collectortest.Step{Kind: collector.KindFileWrite, Process: proc(uint64(i), 1, "w"), Path: "/f"}); err != nil {
					return err
				}
			}
			close(done)
			return nil
		},
	}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "g", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": a},
		Enabled:   collector.ProbeKinds(), Metrics: rec, Sinks: []collector.Sink{rec}, QueueSize: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Run(ctx) }()
	<-done
	cancel()
	close(rec.block)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// One event may be in Export (blocked) and 10 queued.
	if d := rec.dropped["g/rec"]; d < n-11 || d+len(rec.exports) != n {
		t.Errorf("dropped %d, exported %d of %d", d, len(rec.exports), n)
	}
	if len(rec.events) != n {
		t.Errorf("metrics saw %d events, want %d", len(rec.events), n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	a := &collectortest.Attacher{}
	for _, tc := range []struct {
		guests []collector.GuestConfig
		want   string
	}{
		{[]collector.GuestConfig{{Name: "a", Driver: "xen"}}, `no attacher for driver "xen"`},
		{[]collector.GuestConfig{{Name: "a", Driver: "t"}, {Name: "a", Driver: "t"}}, "listed twice"},
	} {
		_, err := collector.New(collector.Options{Guests: tc.guests, Attachers: map[string]collector.Attacher{"t": a}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.guests, err, tc.want)
		}
	}
}

// With Once, a failed attach ends Run with the error instead of retrying.
func TestOnceReturnsAttachError(t *testing.T) {
	a := &collectortest.Attacher{AttachErr: func(int) error { return errors.New("no such socket") }}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "g", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": a}, Once: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "guest g: attach: no such socket") {
		t.Fatalf("err %v", err)
	}
	if n, _, _, _ := a.Stats(); n != 1 {
		t.Errorf("%d attempts", n)
	}
}
