package qemu

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/gdbstub"
)

// BenchmarkBreakpointHit measures breakpoint hits per second on the live
// test guest: a breakpoint on ksys_write while the guest loops its
// workload; each iteration is one hit answered (step over, continue).
// Besides ns/op it reports hits/s and the guest's workload records per
// second with and without the breakpoint (the slowdown monitoring costs).
func BenchmarkBreakpointHit(b *testing.B) {
	g, assets := liveGuest(b)
	d := openLive(b, g, true)
	o := kernelOS(b, d, assets)
	fn, err := o.Symbol("ksys_write")
	if err != nil {
		b.Fatal(err)
	}
	if err := g.StartLoop(context.Background(), 0); err != nil {
		b.Fatal(err)
	}
	// Workload rate without breakpoints (attached, but nothing to stop at).
	if err := d.Resume(); err != nil {
		b.Fatal(err)
	}
	free := recordRate(g, 5*time.Second)
	if err := d.Pause(); err != nil {
		b.Fatal(err)
	}
	if err := d.InsertBreakpoint(fn); err != nil {
		b.Fatal(err)
	}
	{
		b.Run("step=single", func(b *testing.B) {
			rateCh := make(chan float64, 1)
			ctx, cancel := context.WithCancel(context.Background())
			go func() { rateCh <- recordRateCtx(ctx, g) }()
			var responds time.Duration
			start := time.Now()
			for i := 0; i < b.N; i++ {
				wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
				ev, err := d.WaitEvent(wctx)
				wcancel()
				if err != nil {
					b.Fatalf("hit %d: %v", i, err)
				}
				if ev.Regs.RIP != uint64(fn) {
					b.Fatalf("hit at %#x, want %v", ev.Regs.RIP, fn)
				}
				s := time.Now()
				if err := d.Respond(ev, driver.Response{}); err != nil {
					b.Fatal(err)
				}
				responds += time.Since(s)
			}
			elapsed := time.Since(start)
			cancel()
			monitored := <-rateCh
			if err := d.Pause(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "hits/s")
			b.ReportMetric(float64(responds.Microseconds())/float64(b.N), "respond-µs/hit")
			b.ReportMetric(free, "records/s-free")
			b.ReportMetric(monitored, "records/s-monitored")
		})
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
}

// recordRate counts the guest's workload records per second for d.
func recordRate(g *testguest.Guest, d time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return recordRateCtx(ctx, g)
}

// recordRateCtx counts the guest's workload records per second until ctx
// ends.
func recordRateCtx(ctx context.Context, g *testguest.Guest) float64 {
	start := time.Now()
	n := 0
	for range g.Records(ctx) {
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkReadPhysical compares the two physical read paths on the live
// guest (stopped): the mapped RAM file and gdbstub m packets in QEMU's
// physical mode.
func BenchmarkReadPhysical(b *testing.B) {
	g, _ := liveGuest(b)
	d := openLive(b, g, true)
	regs, err := d.Registers(0)
	if err != nil {
		b.Fatal(err)
	}
	pa := introspect.Pa(regs.TranslationRoot()) // a page that surely is RAM
	for _, size := range []int{8, 4096} {
		buf := make([]byte, size)
		b.Run("mmap/"+strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := d.ReadPhysical(pa, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("gdbstub/"+strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := d.ReadPhysicalGDB(pa, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStopCost finds what makes breakpoint hits expensive under TCG:
// the guest's workload rate while the driver, every 50 ms, only stops and
// continues the guest, also single-steps one vCPU, or also inserts and
// removes a breakpoint at an address the guest never runs. Each reports
// records/s; compare them with "none".
func BenchmarkStopCost(b *testing.B) {
	g, _ := liveGuest(b)
	d := openLive(b, g, true)
	if err := g.StartLoop(context.Background(), 0); err != nil {
		b.Fatal(err)
	}
	cold := introspect.Va(0xffff_ffff_ff00_0000) // mapped by nobody
	actions := []struct {
		name string
		do   func() error
	}{
		{"none", func() error { return nil }},
		{"stop-continue", func() error { return nil }},
		{"stop-step-continue", func() error {
			th, _ := d.Thread(0)
			_, err := d.GDB().Step(th)
			return err
		}},
		{"stop-step-irq-continue", func() error {
			// Step with interrupts and timers enabled (qqemu.sstep=1).
			if err := d.GDB().SetStepFlags(gdbstub.SStepEnable); err != nil {
				return err
			}
			th, _ := d.Thread(0)
			_, err := d.GDB().Step(th)
			if err != nil {
				return err
			}
			return d.GDB().SetStepFlags(gdbstub.SStepEnable | gdbstub.SStepNoIRQ | gdbstub.SStepNoTimer)
		}},
		{"stop-breakpoint-continue", func() error {
			if err := d.InsertBreakpoint(cold); err != nil {
				return err
			}
			return d.RemoveBreakpoint(cold)
		}},
	}
	for _, a := range actions {
		b.Run(a.name, func(b *testing.B) {
			var rate float64
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				rateCh := make(chan float64, 1)
				go func() { rateCh <- recordRateCtx(ctx, g) }()
				tick := time.NewTicker(50 * time.Millisecond)
				for ctx.Err() == nil {
					if err := d.Resume(); err != nil {
						b.Fatal(err)
					}
					<-tick.C
					if a.name == "none" {
						continue
					}
					if err := d.Pause(); err != nil {
						b.Fatal(err)
					}
					if err := a.do(); err != nil {
						b.Fatal(err)
					}
				}
				tick.Stop()
				cancel()
				rate = <-rateCh
			}
			b.ReportMetric(rate, "records/s")
		})
	}
}

// BenchmarkPluginHit measures held hits through the vmi-hooks plugin on
// the live test guest (2 vCPUs) while it loops its workload: each
// iteration is one hit received and released. It reports hits/s, the
// round trip the vCPU waited (plugin post to release, p50 and p99) and
// the guest's workload records per second: without the plugin (a guest
// booted without it), with the plugin loaded and no hooks, and hooked.
func BenchmarkPluginHit(b *testing.B) {
	var noPlugin float64
	{
		g, _ := liveGuest(b)
		if err := g.StartLoop(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
		noPlugin = recordRate(g, 10*time.Second)
		g.Close()
	}
	g, d, o, loaded := loopingPlugin(b, testguest.Options{}, 10*time.Second)
	for _, name := range []string{"ksys_write", "do_syscall_64"} {
		fn, err := o.Symbol(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			applied := applyHooks(b, d, []introspect.Va{fn}, 10*time.Second)
			rateCh := make(chan float64, 1)
			ctx, cancel := context.WithCancel(context.Background())
			go func() { rateCh <- recordRateCtx(ctx, g) }()
			rts := make([]time.Duration, 0, b.N)
			missed := 0
			start := time.Now()
			for i := 0; i < b.N; i++ {
				wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
				ev, err := d.WaitHit(wctx)
				wcancel()
				if err != nil {
					b.Fatalf("hit %d: %v", i, err)
				}
				if ev.Regs.RIP != uint64(fn) {
					// The previous sub-benchmark's hook, until the
					// plugin applied the new table.
					d.ReleaseHit(ev)
					i--
					continue
				}
				held, err := d.ReleaseHit(ev)
				if err != nil {
					b.Fatal(err)
				}
				if !held {
					missed++
				}
				rts = append(rts, d.LastRoundTrip())
			}
			elapsed := time.Since(start)
			cancel()
			hooked := <-rateCh
			if err := d.SetHooks(nil); err != nil {
				b.Fatal(err)
			}
			slices.Sort(rts)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "hits/s")
			b.ReportMetric(float64(rts[len(rts)/2].Microseconds()), "rt-p50-µs")
			b.ReportMetric(float64(rts[len(rts)*99/100].Microseconds()), "rt-p99-µs")
			b.ReportMetric(float64(missed), "missed")
			b.ReportMetric(float64(applied.Milliseconds()), "apply-ms")
			b.ReportMetric(noPlugin, "records/s-noplugin")
			b.ReportMetric(loaded, "records/s-nohooks")
			b.ReportMetric(hooked, "records/s-hooked")
		})
	}
}

// BenchmarkPluginLoadedCost measures what loading the plugin with no hooks
// costs the guest: the workload's records per second on guests booted in
// turn without the plugin, with it (no exporter attached), and with it
// but without its translation-block trigger (trigger=idle), each
// iteration one round, so that drift in the host's load hits all alike.
func BenchmarkPluginLoadedCost(b *testing.B) {
	var without, with, idle float64
	for b.Loop() {
		g, _ := liveGuest(b)
		if err := g.StartLoop(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
		without += recordRate(g, 10*time.Second)
		g.Close()
		g, _, _ = pluginGuest(b)
		if err := g.StartLoop(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
		with += recordRate(g, 10*time.Second)
		g.Close()
		g, _, _ = pluginGuest(b, "trigger=idle")
		if err := g.StartLoop(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
		idle += recordRate(g, 10*time.Second)
		g.Close()
	}
	b.ReportMetric(without/float64(b.N), "records/s-noplugin")
	b.ReportMetric(with/float64(b.N), "records/s-nohooks")
	b.ReportMetric(idle/float64(b.N), "records/s-nohooks-idletrigger")
}
