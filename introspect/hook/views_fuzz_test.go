package hook

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
)

// byteSource turns fuzz input into the random decisions of a script
// generator. Past the end it continues with a fixed SplitMix64 sequence
// (never constant: rand's rejection sampling would spin on zeros).
type byteSource struct {
	b []byte
	x uint64
}

func (s *byteSource) Uint64() uint64 {
	if len(s.b) >= 8 {
		v := binary.LittleEndian.Uint64(s.b)
		s.b = s.b[8:]
		return v
	}
	s.b = nil
	s.x += 0x9e3779b97f4a7c15
	z := s.x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// FuzzViewsGuest drives the model with guest scripts made from the input
// (vCPU count and, in the first byte's top bit, event latency; scheduler
// seed; optional failure of one driver call; ops) and checks the engine's
// invariants: exactly-once hits with the right argument when nothing fails
// (with latency: no hit twice, as a call can still be missed), and always
// a guest that sees only itself and a clean teardown.
func FuzzViewsGuest(f *testing.F) {
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00calls"))
	f.Add([]byte("\x02\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf0"))
	f.Add([]byte("\x03\x2a\x00\x00\x00\x00\x00\x00\x00\x05\x03page out and in and out again, with faults"))
	f.Add([]byte("\x82\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00three vCPUs with latency page code out and in while calling it"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 11 {
			return
		}
		vcpus := 1 + int((data[0]&0x7f)%3)
		latency := 0.0
		if data[0]&0x80 != 0 {
			latency = 0.4
		}
		seed := binary.LittleEndian.Uint64(data[1:9])
		failName, failNth := "", 0
		if data[9] != 0 {
			failName = sim.DriverCalls[int(data[9])%len(sim.DriverCalls)]
			failNth = 1 + int(data[10]%32)
		}
		body := data[11:]
		n := min(1+len(body)/8, 48)
		w := newWorld(t, vcpus, seed, latency)
		s := w.gen(rand.New(&byteSource{b: body}), n)
		w.load(t, s)
		if failName != "" {
			w.m.Fail(failName, failNth)
		}
		rec := newHitLog(w)
		e, aerr := w.attach(rec, ViewsOptions{})
		var rerr error
		if aerr == nil {
			rerr = runToIdle(e, rec)
		}
		if e != nil {
			if err := e.Close(); err != nil {
				if err := e.Close(); err != nil {
					t.Fatalf("close twice: %v", err)
				}
			}
		}
		if failName == "" && (aerr != nil || rerr != nil) {
			t.Fatalf("attach %v, run %v", aerr, rerr)
		}
		if failName == "" {
			w.check(t, s, rec, latency == 0)
			want := w.expectedHits()
			for v := range want {
				if _, extra := countDiff(rec.hits[v], want[v]); extra != 0 {
					t.Fatalf("vCPU %d: %d hits delivered twice\n got  %v\n want %v", v, extra, rec.hits[v], want[v])
				}
			}
			return
		}
		if err := w.m.Pristine(); err != nil {
			t.Fatal(err)
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		if err := w.guestSafe(s, true); err != nil {
			t.Fatal(err)
		}
		if len(rec.bad) > 0 {
			t.Fatal(rec.bad)
		}
	})
}
