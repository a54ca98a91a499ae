package linux_test

import (
	"encoding/binary"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// FuzzDecoders runs every probe decoder end to end on a forged hit: the
// argument registers are the fuzzer's, and so is a 512-byte region of
// kernel memory they may point into (forged files, dentries, strings).
// A decoder returns an event or an error, never panics, and an event's
// strings stay within what the guest could have built.
func FuzzDecoders(f *testing.F) {
	w := newGuest(f)
	region := w.g.Alloc(512)
	kinds := []collector.Kind{}
	for k := range w.probes {
		kinds = append(kinds, k)
	}
	for i := range kinds {
		f.Add(uint8(i), uint64(1), uint64(w.absName), uint64(w.how), []byte{})
		f.Add(uint8(i), uint64(w.fileOut), uint64(w.absName), uint64(8), []byte{})
		f.Add(uint8(i), uint64(region), uint64(region+64), uint64(region+128), make([]byte, 512))
	}
	f.Fuzz(func(t *testing.T, ki uint8, a0, a1, a2 uint64, data []byte) {
		k := kinds[int(ki)%len(kinds)]
		buf := make([]byte, 512)
		copy(buf, data)
		for off := 0; off < len(buf); off += 8 {
			w.g.PutU64(region+introspect.Va(off), binary.LittleEndian.Uint64(buf[off:]))
		}
		ev, err := w.hit(k, a0, a1, a2)
		if err != nil {
			return
		}
		if len(ev.Path) > 1<<20 || len(ev.Process.Name) > 1<<10 {
			t.Fatalf("event with a %d-byte path, %d-byte name", len(ev.Path), len(ev.Process.Name))
		}
	})
}
