package windows_test

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// FuzzDecoders runs every probe decoder end to end on a forged hit: the
// fuzzer picks the argument registers (handles, OBJECT_ATTRIBUTES and
// EPROCESS pointers) and a page of kernel memory they may point into
// (forged UNICODE_STRINGs, object headers, handle tables). A decoder
// returns an event or an error, never panics.
func FuzzDecoders(f *testing.F) {
	w := newWorld(f, "win10-22H2", 1)
	ps, _ := decoder(f, w)
	region, err := w.g.Alloc(introspect.PageSize, introspect.PageSize)
	if err != nil {
		f.Fatal(err)
	}
	kinds := []collector.Kind{collector.KindFileCreate, collector.KindFileWrite, collector.KindProcessStart, collector.KindProcessExit}
	for i, args := range [][4]uint64{
		{0x1000, 0x40100080, uint64(w.oa), 0x2000},
		{hFile},
		{uint64(w.notepad.EPROCESS), uint64(w.explorer.EPROCESS)},
		{uint64(w.notepad.EPROCESS)},
	} {
		f.Add(uint8(i), args[0], args[1], args[2], args[3], []byte{})
		f.Add(uint8(i), uint64(region), uint64(region+64), uint64(region+128), uint64(region), make([]byte, 256))
	}
	f.Fuzz(func(t *testing.T, ki uint8, a0, a1, a2, a3 uint64, data []byte) {
		buf := make([]byte, introspect.PageSize)
		copy(buf, data)
		if err := w.g.Kernel.Write(region, buf); err != nil {
			t.Fatal(err)
		}
		p := ps[kinds[int(ki)%len(kinds)]]
		h := hitFor(t, w, p, "notepad", a0, a1, a2, a3)
		var ev collector.Event
		if p.Decode(h, &ev) == nil && len(ev.Path) > 1<<21 {
			t.Fatalf("a %d-byte path", len(ev.Path))
		}
	})
}
