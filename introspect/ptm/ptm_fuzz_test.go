package ptm

import (
	"encoding/binary"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// FuzzMonitor edits the entries of watched walks at random (present bit,
// frame moves of pages and tables at every level, A/D bits, rewrites of
// the same value) and checks after each edit that the monitor's view of
// every watch matches a fresh walk, that the events it emitted tell the
// same story, and that exactly the table frames of the current walks are
// write-protected.
func FuzzMonitor(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 1, 1, 2, 2, 3, 0x11, 0x22, 0x33})
	f.Add([]byte{5, 1, 9, 2, 1, 0, 6, 3, 7, 2, 2, 4, 4, 4, 1})
	f.Add([]byte("move the tables around and back"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fx := newFixture(t)
		vas := []introspect.Va{va1 + 0x10, va2 + 0x800, vaL + 0x5123}
		type state struct {
			present bool
			gfn     introspect.Gfn
		}
		model := make([]state, len(vas))
		for i, va := range vas {
			if err := fx.mon.Monitor(va, fx.as.Root, fx.view, "w"); err != nil {
				t.Fatal(err)
			}
			pa, _ := fx.as.Translate(va)
			model[i] = state{true, pa.Gfn()}
		}
		for step := 0; len(data) >= 3 && step < 64; step++ {
			w, level, action := int(data[0])%len(vas), paging.Level(1+data[1]%4), data[2]%4
			data = data[3:]
			walk, _ := paging.WalkVA(fx.m, fx.as.Root, vas[w], paging.Level4)
			found := false
			var pa introspect.Pa
			var old uint64
			for s := 0; s < walk.N; s++ {
				if walk.Steps[s].Level == level {
					pa, old, found = walk.Steps[s].EntryPA, walk.Steps[s].Entry, true
				}
			}
			if !found {
				continue // an upper level is out, or a large page ends the walk
			}
			val := old
			switch action {
			case 0:
				val ^= paging.PTEPresent
			case 1: // move what the entry points to onto a fresh frame
				if old&paging.PTELarge != 0 || old&paging.PTEPresent == 0 {
					continue
				}
				nf, err := fx.m.AllocGuestFrame()
				if err != nil {
					return
				}
				buf := make([]byte, introspect.PageSize)
				fx.m.Peek(introspect.Pa(old&paging.AddrMask), buf)
				fx.m.Poke(nf.Pa(), buf)
				val = old&^paging.AddrMask | uint64(nf.Pa())
			case 2:
				val |= paging.PTEAccessed | paging.PTEDirty
			}
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], val)
			fx.m.Poke(pa, b[:])
			if !fx.mon.MarkDirty(pa, fx.view, 0) {
				t.Fatalf("step %d: entry %v of a watched walk not watched", step, pa)
			}
			evs, err := fx.mon.ProcessDirty(0)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				for i, va := range vas {
					if va.PageBase() != ev.VA {
						continue
					}
					switch ev.Kind {
					case PageOut:
						if !model[i].present || model[i].gfn != ev.Gfn {
							t.Fatalf("step %d: page-out of %v from %v, model %+v", step, va, ev.Gfn, model[i])
						}
						model[i].present = false
					case PageIn:
						if model[i].present {
							t.Fatalf("step %d: page-in of present %v", step, va)
						}
						model[i] = state{true, ev.Gfn}
					}
				}
			}
			tables := map[introspect.Gfn]bool{}
			for i, va := range vas {
				walk, werr := paging.WalkVA(fx.m, fx.as.Root, va, paging.Level4)
				for s := 0; s < walk.N; s++ {
					tables[walk.Steps[s].EntryPA.Gfn()] = true
				}
				g, ok := fx.mon.Present(va, fx.as.Root, fx.view)
				if want := werr == nil; ok != want || model[i].present != want || (want && (g != walk.PA.Gfn() || model[i].gfn != g)) {
					t.Fatalf("step %d: %v: monitor %v %v, model %+v, walk %v %v", step, va, g, ok, model[i], walk.PA, werr)
				}
			}
			for g := introspect.Gfn(0); g < 2048; g++ {
				_, a := fx.m.Mapping(fx.view, g)
				if want := tables[g]; want != (a == introspect.AccessRX) || (!want && a != introspect.AccessRWX) {
					t.Fatalf("step %d: frame %v access %v, table of a walk: %v", step, g, a, want)
				}
			}
		}
		if err := fx.mon.Close(); err != nil {
			t.Fatal(err)
		}
		for g := introspect.Gfn(0); g < 2048; g++ {
			if _, a := fx.m.Mapping(fx.view, g); a != introspect.AccessRWX {
				t.Fatalf("after close: frame %v %v", g, a)
			}
		}
	})
}
