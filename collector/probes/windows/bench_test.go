package windows_test

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// decoder attaches to a world and returns its probes by kind.
func decoder(t testing.TB, w *world) (map[collector.Kind]collector.Probe, *probes.Guest) {
	t.Helper()
	gos, err := probes.Attach(t.Context(), w.g.M, store(t, "win10-22H2"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := gos.Probes(collector.ProbeKinds())
	if err != nil {
		t.Fatal(err)
	}
	m := map[collector.Kind]collector.Probe{}
	for _, p := range ps {
		m[p.Kind] = p
	}
	return m, gos
}

func hitFor(t testing.TB, w *world, p collector.Probe, proc string, args ...uint64) *hook.Hit {
	t.Helper()
	caller := w.notepad
	if proc == "cmd" {
		caller = w.cmd
	}
	regs, err := w.g.Regs(0, caller, p.Name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return &hook.Hit{Hook: &hook.Hook{Addr: p.Addr, Tag: p.Name}, Ev: &driver.Event{Reason: driver.ReasonInterrupt, Regs: regs}}
}

// BenchmarkDecode measures one event per iteration, decoded from the hit's
// registers with every guest memory read it needs (the translation cache
// is flushed at each hit, as in the event loop), on the Windows 10 layout.
func BenchmarkDecode(b *testing.B) {
	w := newWorld(b, "win10-22H2", 1)
	ps, _ := decoder(b, w)
	for _, c := range []struct {
		name string
		kind collector.Kind
		proc string
		args []uint64
	}{
		{"NtCreateFile", collector.KindFileCreate, "notepad", []uint64{0x1000, 0x40100080, uint64(w.oa), 0x2000}},
		{"NtCreateFile-absolute", collector.KindFileCreate, "cmd", []uint64{0x1000, 0x40100080, uint64(w.oaAbs), 0x2000}},
		{"NtWriteFile", collector.KindFileWrite, "notepad", []uint64{hFile}},
		{"NtWriteFile-level2", collector.KindFileWrite, "cmd", []uint64{hLevel2}},
		{"PspInsertProcess", collector.KindProcessStart, "notepad", []uint64{uint64(w.notepad.EPROCESS), uint64(w.explorer.EPROCESS)}},
		{"MmCleanProcessAddressSpace", collector.KindProcessExit, "notepad", []uint64{uint64(w.notepad.EPROCESS)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := ps[c.kind]
			h := hitFor(b, w, p, c.proc, c.args...)
			var ev collector.Event
			if err := p.Decode(h, &ev); err != nil {
				b.Fatal(err)
			}
			reads0 := w.g.M.Calls("ReadPhysical")
			b.ReportAllocs()
			for b.Loop() {
				ev = collector.Event{}
				if err := p.Decode(h, &ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(w.g.M.Calls("ReadPhysical")-reads0)/float64(b.N), "physreads/op")
		})
	}
}

// decodeHandler decodes every hit with its probe, as the collector's loop
// does, without the exporter pipeline.
type decodeHandler struct {
	probes map[string]collector.Probe
	events int
	err    error
}

func (d *decodeHandler) HandleHit(h *hook.Hit) error {
	p := d.probes[h.Hook.Tag]
	var ev collector.Event
	err := p.Decode(h, &ev)
	if err == nil {
		d.events++
	} else if d.err == nil {
		d.err = err
	}
	return err
}
func (d *decodeHandler) Notice(hook.Notice) {}

// BenchmarkEngine measures one hooked call per iteration through the Views
// engine on the model: the guest's INT3 event, the handler's decode with
// all its memory reads, and the fast single-step response.
func BenchmarkEngine(b *testing.B) {
	for _, fn := range []string{probes.FuncFileCreate, probes.FuncFileWrite} {
		b.Run(fn, func(b *testing.B) {
			w := newWorld(b, "win10-22H2", 1)
			ps, gos := decoder(b, w)
			eng, err := hook.NewViews(w.g.M, hook.ViewsOptions{Cache: gos.OSLayer().Memory().Cache})
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close()
			d := &decodeHandler{probes: map[string]collector.Probe{}}
			for _, p := range ps {
				d.probes[p.Name] = p
				if err := eng.Add(hook.Hook{Addr: p.Addr, Root: p.Root, Global: true, Tag: p.Name}); err != nil {
					b.Fatal(err)
				}
			}
			args := []uint64{hFile}
			if fn == probes.FuncFileCreate {
				args = []uint64{0x1000, 0x40100080, uint64(w.oa), 0x2000}
			}
			if err := w.g.M.Script(0, w.g.SwitchTo(0, w.notepad)...); err != nil {
				b.Fatal(err)
			}
			call, err := w.g.Call(w.notepad, fn, args...)
			if err != nil {
				b.Fatal(err)
			}
			run := func() {
				if err := w.g.M.Script(0, call); err != nil {
					b.Fatal(err)
				}
				if err := eng.Run(b.Context(), d); !errors.Is(err, sim.ErrIdle) {
					b.Fatal(err)
				}
			}
			run()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run()
				if i%1024 == 0 {
					w.g.M.ResetObservations()
				}
			}
			b.StopTimer()
			if d.err != nil || d.events != b.N+1 {
				b.Fatalf("%d events for %d calls, first error %v", d.events, b.N+1, d.err)
			}
		})
	}
}
