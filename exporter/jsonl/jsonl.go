// Package jsonl writes guest events as JSON lines: one object per event,
// to stdout or a file, buffered and flushed at a short interval. A failed
// write is retried with backoff; what still cannot be written is counted
// (collector.LossWriteError) and logged at a limited rate, and the writer
// keeps trying with later events (a disk that was full may have room
// again).
package jsonl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/ratelog"
)

// DefaultFlushInterval bounds how long a line waits in the buffer.
const DefaultFlushInterval = 200 * time.Millisecond

// bufSize is how many bytes are buffered before a write.
const bufSize = 64 << 10

// RetryDelays are the waits between the attempts of one write: about a
// second in all, so that a stuck disk costs the sink's queue (counted
// drops) rather than the process.
var RetryDelays = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}

// Writer is a collector.Sink writing JSON lines.
type Writer struct {
	mu      sync.Mutex
	w       io.Writer
	buf     bytes.Buffer
	enc     *json.Encoder
	pending map[string]int // events in buf by domain
	// partial: a dropped write left part of a line in the output; the
	// next write starts a new line so the following events stay valid.
	partial bool
	closer  io.Closer
	stop    chan struct{}
	done    chan struct{}

	loss    atomic.Pointer[collector.LossFunc]
	log     *ratelog.Logger
	lost    atomic.Uint64
	lastErr error
	closing atomic.Bool
}

// Open writes to path, or to stdout when path is "-" (appending to an
// existing file).
func Open(path string, flush time.Duration) (*Writer, error) {
	if path == "-" {
		return New(os.Stdout, nil, flush), nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("jsonl: %w", err)
	}
	return New(f, f, flush), nil
}

// New writes to w and closes c (if not nil) on Close. flush <= 0 uses
// DefaultFlushInterval.
func New(w io.Writer, c io.Closer, flush time.Duration) *Writer {
	if flush <= 0 {
		flush = DefaultFlushInterval
	}
	j := &Writer{w: w, closer: c, pending: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{}),
		log: ratelog.New(nil, 0)}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	go j.flusher(flush)
	return j
}

// SetLogger sends write failures to log, at most one line per
// ratelog.DefaultInterval.
func (j *Writer) SetLogger(log *slog.Logger) { j.log = ratelog.New(log, 0) }

// SetLossFunc implements collector.LossReporter.
func (j *Writer) SetLossFunc(f collector.LossFunc) { j.loss.Store(&f) }

var _ collector.LossReporter = (*Writer)(nil)

// Lost is the number of events lost to write errors.
func (j *Writer) Lost() uint64 { return j.lost.Load() }

func (j *Writer) flusher(d time.Duration) {
	defer close(j.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			j.mu.Lock()
			j.flushLocked()
			j.mu.Unlock()
		}
	}
}

// flushLocked writes the buffer, retrying with backoff (no waits once
// Close has begun); on failure the buffered events are counted as lost
// and the buffer is emptied, so the writer goes on with the next events.
func (j *Writer) flushLocked() {
	if j.buf.Len() == 0 {
		return
	}
	if j.partial {
		if _, err := j.w.Write([]byte{'\n'}); err == nil {
			j.partial = false
		}
	}
	var err error
	for try := 0; ; try++ {
		var n int
		n, err = j.w.Write(j.buf.Bytes())
		j.buf.Next(n)
		if err == nil && j.buf.Len() == 0 {
			clear(j.pending)
			return
		}
		if err == nil {
			err = io.ErrShortWrite
		}
		if n > 0 {
			j.partial = true
		}
		if try >= len(RetryDelays) || j.closing.Load() {
			break
		}
		time.Sleep(RetryDelays[try])
	}
	total := 0
	f := j.loss.Load()
	for d, n := range j.pending {
		total += n
		if f != nil {
			(*f)(d, collector.LossWriteError, n)
		}
	}
	j.lost.Add(uint64(total))
	j.lastErr = err
	clear(j.pending)
	j.buf.Reset()
	j.log.Error("jsonl: write failed after retries; events dropped", "events", total, "err", err, "lost_total", j.lost.Load())
}

// Name implements collector.Sink.
func (j *Writer) Name() string { return "jsonl" }

// Export buffers ev as one line, writing the buffer when it is full.
func (j *Writer) Export(ev *collector.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	mark := j.buf.Len()
	if err := j.enc.Encode(ev); err != nil {
		// Cannot happen for an Event; counted all the same.
		j.buf.Truncate(mark)
		if f := j.loss.Load(); f != nil {
			(*f)(ev.Guest.Domain, collector.LossWriteError, 1)
		}
		j.lost.Add(1)
		j.lastErr = err
		return
	}
	j.pending[ev.Guest.Domain]++
	if j.buf.Len() >= bufSize {
		j.flushLocked()
	}
}

// Close flushes and closes the output. It reports how many events were
// lost to write errors over the writer's life, with the last error.
func (j *Writer) Close(context.Context) error {
	close(j.stop)
	<-j.done
	j.mu.Lock()
	defer j.mu.Unlock()
	j.flushLocked()
	j.closing.Store(true)
	var err error
	if n := j.lost.Load(); n > 0 {
		err = fmt.Errorf("%d events lost to write errors, last: %w", n, j.lastErr)
	}
	if j.closer != nil {
		err = errors.Join(err, j.closer.Close())
	}
	if err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	return nil
}
