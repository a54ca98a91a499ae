// Package jsonl writes guest events as JSON lines: one object per event,
// to stdout or a file, buffered and flushed at a short interval.
package jsonl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// DefaultFlushInterval bounds how long a line waits in the buffer.
const DefaultFlushInterval = 200 * time.Millisecond

// Writer is a collector.Sink writing JSON lines.
type Writer struct {
	mu     sync.Mutex
	bw     *bufio.Writer
	enc    *json.Encoder
	closer io.Closer
	err    error
	stop   chan struct{}
	done   chan struct{}
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
	bw := bufio.NewWriterSize(w, 64<<10)
	j := &Writer{bw: bw, enc: json.NewEncoder(bw), closer: c, stop: make(chan struct{}), done: make(chan struct{})}
	j.enc.SetEscapeHTML(false)
	go j.flusher(flush)
	return j
}

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
			if j.bw.Buffered() > 0 && j.err == nil {
				j.err = j.bw.Flush()
			}
			j.mu.Unlock()
		}
	}
}

// Name implements collector.Sink.
func (j *Writer) Name() string { return "jsonl" }

// Export writes ev as one line. After a write error the writer stops
// writing; Close reports the error.
func (j *Writer) Export(ev *collector.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err == nil {
		j.err = j.enc.Encode(ev)
	}
}

// Close flushes and closes the output.
func (j *Writer) Close(context.Context) error {
	close(j.stop)
	<-j.done
	j.mu.Lock()
	defer j.mu.Unlock()
	err := j.err
	if err == nil {
		err = j.bw.Flush()
	}
	if j.closer != nil {
		err = errors.Join(err, j.closer.Close())
	}
	if err != nil {
		return fmt.Errorf("jsonl: %w", err)
	}
	return nil
}
