package linux_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/linux"
	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Flags of TestHookBench, set by scripts/bench-qemu-hooks.sh. Without
// -hookbench.config the test skips, so plain test runs never boot for it.
var (
	hookBenchConfig = flag.String("hookbench.config", "", "TestHookBench configuration: none, plugin or gdbstub (empty: skip)")
	hookBenchRounds = flag.Int("hookbench.rounds", 2, "TestHookBench: rounds of the standard workload")
	hookBenchFlood  = flag.Int("hookbench.flood", 20000, "TestHookBench: write(2) calls of the write-flood")
	hookBenchHoldMS = flag.Int("hookbench.hold-ms", 1000, "TestHookBench: the plugin's hold deadline in ms")
	hookBenchPlugin = flag.String("hookbench.plugin-opts", "", "TestHookBench: more vmi-hooks arguments, comma-separated (spin=N)")
)

// rtHandler is a recorder that also samples the plugin driver's held round
// trip. The engine calls HandleHit before it releases the hit, so each call
// sees the round trip of the hit released before it: every hit but the
// last of a run is sampled once.
type rtHandler struct {
	*recorder
	d   *qemu.PluginDriver
	rts []time.Duration // guarded by recorder.mu
}

func (h *rtHandler) HandleHit(hit *hook.Hit) error {
	if rt := h.d.LastRoundTrip(); rt > 0 {
		h.mu.Lock()
		h.rts = append(h.rts, rt)
		h.mu.Unlock()
	}
	return h.recorder.HandleHit(hit)
}

// hookBenchMark is where a workload phase starts in the recorder and the
// driver's counters.
type hookBenchMark struct {
	t            time.Time
	hits, events int
	rts          int
	decodeErrs   int
	decode       time.Duration // total time in the probes' Decode
	stats        driver.HookStats
}

// TestHookBench is one alternation of the hook benchmark (not a timed
// test: it reports and fails only on errors). It boots a guest in one
// configuration -- none (no hooks, nothing attached), plugin (the full
// Linux probe set on the vmi-hooks plugin engine, held) or gdbstub (the
// same on the gdbstub engine) --, warms it up with one round before
// anything is hooked, then runs the standard workload (-hookbench.rounds
// rounds) and the write-flood (-hookbench.flood writes) while the engine
// decodes every hit, and prints one HOOKBENCH line per workload: time,
// work done (manifest records, or flood writes) and its rate, hits and
// hits/s, events missed against the manifest (and extra ones), held round
// trip p50/p99 (plugin), the mean time a hit spends in its probe's Decode
// (part of the round trip) and holds the plugin counted as missed.
func TestHookBench(t *testing.T) {
	cfg := *hookBenchConfig
	if cfg == "" {
		t.Skip("hook benchmark: run by scripts/bench-qemu-hooks.sh (-hookbench.config)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	warm := func(g *testguest.Guest) {
		t.Helper()
		if _, err := g.Run(ctx, 1); err != nil {
			t.Fatalf("warm-up round: %v", err)
		}
	}
	var (
		g     *testguest.Guest
		rec   *recorder
		h     hook.Handler
		eng   hook.Engine
		plug  *qemu.PluginDriver
		nhook int
	)
	// full hooks the probe set ps with e and records their hits.
	full := func(ps []collector.Probe, e hook.Engine) {
		t.Helper()
		nhook = len(ps)
		rec = hookProbes(t, e, ps)
		rec.noTrace = true
		h, eng = rec, e
	}
	switch cfg {
	case "none":
		g, _ = testguest.BootForTest(t, "vhb", testguest.Options{CPUs: 2})
		warm(g)
	case "plugin":
		var opts []string
		if *hookBenchPlugin != "" {
			opts = strings.Split(*hookBenchPlugin, ",")
		}
		gg, d, o := livePlugin(t, *hookBenchHoldMS, opts...)
		g = gg
		warm(g)
		ps, err := probes.New(o).Probes(collector.Kinds())
		if err != nil {
			t.Fatal(err)
		}
		full(ps, hook.NewPlugin(d, hook.WithPluginFlush(o.Flush)))
		plug = d
		h = &rtHandler{recorder: rec, d: d}
		if err := eng.(*hook.Plugin).WaitApplied(ctx); err != nil {
			t.Fatalf("apply %d hooks: %v", nhook, err)
		}
	case "gdbstub":
		gg, d, o := liveOSWith(t, testguest.Options{CPUs: 2})
		g = gg
		if err := d.Resume(); err != nil {
			t.Fatal(err)
		}
		warm(g)
		if err := d.Pause(); err != nil {
			t.Fatal(err)
		}
		ps, err := probes.New(o).Probes(collector.Kinds())
		if err != nil {
			t.Fatal(err)
		}
		full(ps, hook.NewNative(d, hook.WithFlush(o.Flush)))
		if err := d.Resume(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("-hookbench.config %q: want none, plugin or gdbstub", cfg)
	}
	done := make(chan error, 1)
	rctx, stop := context.WithCancel(ctx)
	if eng != nil {
		t.Cleanup(func() { eng.Close() })
		go func() { done <- eng.Run(rctx, h) }()
	} else {
		done <- nil
	}

	mark := func() hookBenchMark {
		m := hookBenchMark{t: time.Now()}
		if plug != nil {
			m.stats, _ = plug.HookStats()
		}
		if rec == nil {
			return m
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		m.hits, m.events, m.decode = rec.hits, len(rec.events), rec.decode
		for _, es := range rec.errs {
			m.decodeErrs += len(es)
		}
		if rh, ok := h.(*rtHandler); ok {
			m.rts = len(rh.rts)
		}
		return m
	}
	// report prints one HOOKBENCH line, which the script parses, for the
	// phase from m0 to m1 with work units done and events missed and extra.
	report := func(workload string, m0, m1 hookBenchMark, work int, missed, extra int) {
		secs := m1.t.Sub(m0.t).Seconds()
		p50, p99 := "-", "-"
		holds := "-"
		if rh, ok := h.(*rtHandler); ok {
			rec.mu.Lock()
			rts := slices.Clone(rh.rts[m0.rts:m1.rts])
			rec.mu.Unlock()
			slices.Sort(rts)
			if len(rts) > 0 {
				us := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Nanoseconds())/1e3) }
				p50, p99 = us(rts[len(rts)/2]), us(rts[len(rts)*99/100])
			}
			holds = fmt.Sprint(m1.stats.MissedDeadline - m0.stats.MissedDeadline + m1.stats.MissedNoConsumer - m0.stats.MissedNoConsumer)
		}
		missedS, extraS, decode := "-", "-", "-"
		if rec != nil {
			missedS, extraS = fmt.Sprint(missed), fmt.Sprint(extra)
			decode = fmt.Sprintf("%.1f", float64((m1.decode-m0.decode).Nanoseconds())/1e3/float64(max(m1.hits-m0.hits, 1)))
		}
		fmt.Printf("HOOKBENCH config=%s workload=%s hooks=%d seconds=%.3f work=%d work_per_s=%.1f hits=%d hits_per_s=%.1f missed=%s extra=%s rt_p50_us=%s rt_p99_us=%s decode_us=%s holds_missed=%s decode_errors=%d\n",
			cfg, workload, nhook, secs, work, float64(work)/secs, m1.hits-m0.hits, float64(m1.hits-m0.hits)/secs,
			missedS, extraS, p50, p99, decode, holds, m1.decodeErrs-m0.decodeErrs)
	}
	events := func(from, to int) []collector.Event {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return slices.Clone(rec.events[from:to])
	}

	// The standard workload, compared with its manifest exactly.
	m0 := mark()
	man, err := g.Run(ctx, *hookBenchRounds)
	m1 := mark()
	if err != nil {
		t.Fatalf("standard workload: %v", err)
	}
	if err := man.Check(); err != nil {
		t.Fatalf("standard workload's manifest: %v", err)
	}
	var missed, extra int
	if rec != nil {
		want, got := wantEvents(man), countEvents(events(m0.events, m1.events))
		for k, n := range want {
			missed += max(0, n-got[k])
			extra += max(0, got[k]-n)
		}
		for k, n := range got {
			if _, ok := want[k]; !ok && k.path != "" {
				extra += n
			}
		}
	}
	work := len(man.Rounds) + len(man.Spawns) + len(man.Files) + len(man.Exits)
	report("standard", m0, m1, work, missed, extra)

	// The write-flood, compared with the writes the flood reported.
	m0 = mark()
	f, err := g.Flood(ctx, *hookBenchFlood)
	m1 = mark()
	if err != nil {
		t.Fatalf("write-flood: %v", err)
	}
	missed, extra = 0, 0
	if rec != nil {
		n := 0
		for _, ev := range events(m0.events, m1.events) {
			if ev.Kind == collector.KindFileWrite && ev.Path == f.Path && ev.Process.PID == uint64(f.PID) {
				n++
			}
		}
		missed, extra = max(0, f.Writes-n), max(0, n-f.Writes)
	}
	report("flood", m0, m1, f.Writes, missed, extra)

	stop()
	if err := <-done; err != nil {
		t.Fatalf("engine: %v", err)
	}
}
