package xen

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// BenchmarkRingEvent measures the pure-Go part of one vm_event round trip:
// take a request off the ring, decode it into a driver.Event, build and
// encode the seed's fast single-step answer, and publish it.
func BenchmarkRingEvent(b *testing.B) {
	page := newPage()
	r, _ := NewBackRing(page)
	r.InitShared()
	fe := &frontEnd{page: page}
	req := encodeRequest(reqSpec{flags: abi.FlagVCPUPaused | abi.FlagAlternateP2M, view: 1, reason: abi.ReasonSoftwareBreakpoint, insnLen: 1, trapType: abi.EventTypeSWException, rip: 0xfffff80000001000})
	var in [abi.RequestSize]byte
	var out [abi.ResponseSize]byte
	b.ReportAllocs()
	for b.Loop() {
		// Xen's side, inline: t.Helper in frontEnd.push would dominate.
		off := slot(fe.reqProd)
		copy(page[off:off+abi.EntrySize], req[:])
		fe.reqProd++
		le.PutUint32(page[abi.OffReqProd:], fe.reqProd)
		if ok, err := r.NextRequest(&in); !ok || err != nil {
			b.Fatal(ok, err)
		}
		q, err := DecodeRequest(&in)
		if err != nil {
			b.Fatal(err)
		}
		ev, err := q.Event(4)
		if err != nil {
			b.Fatal(err)
		}
		w, err := BuildResponse(&q, driver.Response{FastSingleStep: true, SetView: true, View: ev.View - 1})
		if err != nil {
			b.Fatal(err)
		}
		w.Encode(&out)
		if _, err := r.PutResponse(&out); err != nil {
			b.Fatal(err)
		}
		fe.rspCons++
	}
}
