package jsonl_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/exporter/jsonl"
)

func fastRetries(t *testing.T) {
	old := jsonl.RetryDelays
	jsonl.RetryDelays = []time.Duration{time.Millisecond, time.Millisecond}
	t.Cleanup(func() { jsonl.RetryDelays = old })
}

// Writing to /dev/full (ENOSPC on every write) loses events, but every
// one is counted by domain, the log says so a few times rather than once
// per write, and Close reports it (before: 100k events lost unseen).
func TestDiskFullCounted(t *testing.T) {
	fastRetries(t)
	w, err := jsonl.Open("/dev/full", time.Hour)
	if err != nil {
		t.Skip(err)
	}
	var logs bytes.Buffer
	w.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	var mu sync.Mutex
	lost := map[string]int{}
	w.SetLossFunc(func(d, reason string, n int) {
		mu.Lock()
		defer mu.Unlock()
		lost[d+"/"+reason] += n
	})
	g := &collector.Guest{Domain: "vm1"}
	const n = 100_000
	for range n {
		w.Export(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: "/var/log/x"})
	}
	err = w.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "100000 events lost") {
		t.Errorf("Close: %v", err)
	}
	if lost["vm1/"+collector.LossWriteError] != n || w.Lost() != n {
		t.Errorf("lost %v (%d), want %d write_error", lost, w.Lost(), n)
	}
	if l := strings.Count(logs.String(), "\n"); l < 1 || l > 3 {
		t.Errorf("%d log lines:\n%s", l, logs.String())
	}
}

// flaky fails its first fails writes, then works.
type flaky struct {
	fails int
	buf   bytes.Buffer
}

func (f *flaky) Write(p []byte) (int, error) {
	if f.fails > 0 {
		f.fails--
		return 0, errors.New("EAGAIN")
	}
	return f.buf.Write(p)
}

// A transient error costs nothing: the write is retried, and the writer
// goes on writing after it (before: the first error stopped every later
// write until Close).
func TestTransientErrorRetried(t *testing.T) {
	fastRetries(t)
	f := &flaky{fails: 2}
	w := jsonl.New(f, nil, time.Hour)
	g := &collector.Guest{Domain: "vm1"}
	w.Export(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: "/a"})
	w.Export(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: "/b"})
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(f.buf.String(), "\n"); got != 2 || w.Lost() != 0 {
		t.Errorf("%d lines, %d lost:\n%s", got, w.Lost(), f.buf.String())
	}
}

// After a failure that lost events, later events are written again.
func TestWritesResumeAfterFailure(t *testing.T) {
	fastRetries(t)
	f := &flaky{fails: 3} // more than the retries
	w := jsonl.New(f, nil, 10*time.Millisecond)
	g := &collector.Guest{Domain: "vm1"}
	w.Export(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: "/lost"})
	deadline := time.Now().Add(5 * time.Second)
	for w.Lost() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.Export(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Path: "/kept"})
	err := w.Close(context.Background())
	if err == nil || w.Lost() != 1 {
		t.Errorf("Close %v, lost %d", err, w.Lost())
	}
	if !strings.Contains(f.buf.String(), `"/kept"`) {
		t.Errorf("later event not written: %q", f.buf.String())
	}
}
