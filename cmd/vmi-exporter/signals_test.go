package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// The first signal cancels; a second one exits, but only once the guests
// are detached.
func TestSecondSignalExitsAfterDetach(t *testing.T) {
	sig := make(chan os.Signal, 2)
	det := newLatch()
	exited := make(chan int, 1)
	ctx, cancel := shutdownContext(sig, det.done(), func(c int) { exited <- c }, func(string) {})
	defer cancel()
	sig <- syscall.SIGTERM
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("first signal did not cancel")
	}
	sig <- syscall.SIGTERM
	select {
	case <-exited:
		t.Fatal("exited before the guests were detached")
	case <-time.After(50 * time.Millisecond):
	}
	det.fire()
	select {
	case c := <-exited:
		if c != 130 {
			t.Errorf("exit status %d", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not exit after detach")
	}
}
