package main

import (
	"context"
	"os"
	"sync"
)

// latch is closed once, by whoever fires it first.
type latch struct {
	once sync.Once
	ch   chan struct{}
}

func newLatch() *latch { return &latch{ch: make(chan struct{})} }

func (l *latch) fire()                 { l.once.Do(func() { close(l.ch) }) }
func (l *latch) done() <-chan struct{} { return l.ch }

// detached is fired by the pipeline once every guest is detached at exit
// (collector.Options.Detached): a second signal may then end the process
// without waiting for the exporters.
var detached = newLatch()

// shutdownContext returns a context canceled by the first signal on sig:
// the graceful shutdown detaches every guest, then drains and closes the
// exporters. A second signal asks to skip the draining: exit(130) is
// called as soon as the guests are detached (at once if they are), never
// before, so that no guest is left stopped at a breakpoint.
func shutdownContext(sig <-chan os.Signal, detached <-chan struct{}, exit func(int), log func(msg string)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-sig:
		case <-ctx.Done():
			return
		}
		log("signal received: detaching guests and flushing exporters (a second signal skips the flush)")
		cancel()
		<-sig
		log("second signal: exiting once every guest is detached")
		<-detached
		exit(130)
	}()
	return ctx, cancel
}
