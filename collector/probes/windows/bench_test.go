package windows_test

import (
	"log/slog"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	probes "github.com/vmi-exporter/vmi-exporter/collector/probes/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
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
