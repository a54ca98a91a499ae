package collectortest

import (
	"context"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// Replay returns a Script that emits steps in order and then closes done
// (the guest keeps running, unhooked of nothing, until the session ends).
func Replay(steps []Step, done chan<- struct{}) func(context.Context, int, func(Step) error) error {
	return func(_ context.Context, _ int, emit func(Step) error) error {
		for _, s := range steps {
			if err := emit(s); err != nil {
				return err
			}
		}
		close(done)
		return nil
	}
}

// Start builds a collector from o with a, as driver "t", watching the
// guest "g" (unless o lists guests), with every probe kind enabled (unless
// o enables some), and runs it. stop cancels the run and returns what Run
// returned.
func Start(tb testing.TB, o collector.Options, a *Attacher) (stop func() error) {
	tb.Helper()
	if len(o.Guests) == 0 {
		o.Guests = []collector.GuestConfig{{Name: "g", Driver: "t"}}
	}
	if o.Attachers == nil {
		o.Attachers = map[string]collector.Attacher{"t": a}
	}
	if o.Enabled == nil {
		o.Enabled = collector.ProbeKinds()
	}
	c, err := collector.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return func() error {
		cancel()
		return <-errc
	}
}
