package promexp_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// A guest that dies mid-run is shown down while the exporter keeps
// serving; once it is back, the supervisor attaches again and it is up.
func TestGuestDownAndBack(t *testing.T) {
	var off atomic.Bool
	kill := make(chan struct{})
	a := &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux", Kernel: "k"},
		AttachErr: func(int) error {
			if off.Load() {
				return errors.New("qmp: connection refused")
			}
			return nil
		},
		Script: func(ctx context.Context, n int, emit func(collectortest.Step) error) error {
			if n == 0 {
				if err := emit(collectortest.Step{Kind: collector.KindProcessStart, Process: collector.Process{PID: 1}}); err != nil {
					return err
				}
				select {
				case <-kill:
					off.Store(true)
					return collectortest.ErrDied
				case <-ctx.Done():
					return nil
				}
			}
			return emit(collectortest.Step{Kind: collector.KindProcessStart, Process: collector.Process{PID: 2}})
		},
	}
	m := promexp.New(promexp.Options{})
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "vm", Driver: "t"}},
		Attachers: map[string]collector.Attacher{"t": a},
		Enabled:   collector.ProbeKinds(), Metrics: m,
		Backoff: collector.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	url := "http://" + serve(t, m, "") + "/metrics"
	waitScrape := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			text := scrape(t, url, "")
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(text, w+"\n")
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: scrape lacks %v:\n%s", what, want, grep(text, "vmi_guest"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitScrape("running", `vmi_guest_up{domain="vm"} 1`, `vmi_process_starts_total{domain="vm"} 1`)
	close(kill)
	waitScrape("killed", `vmi_guest_up{domain="vm"} 0`)
	// While it is off, attach attempts fail and are counted.
	waitScrape("off", `vmi_guest_attach_attempts_total{domain="vm",result="failure"} 2`)
	if text := scrape(t, url, ""); !strings.Contains(text, `vmi_guest_up{domain="vm"} 0`+"\n") {
		t.Fatal("guest up while it is off")
	}
	off.Store(false)
	waitScrape("restarted", `vmi_guest_up{domain="vm"} 1`, `vmi_process_starts_total{domain="vm"} 2`,
		`vmi_guest_attach_attempts_total{domain="vm",result="success"} 2`)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
