package hook

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// The test guest: a kernel address space K and a process U sharing its
// kernel half.
const (
	codeA = introspect.Va(0xffff_f800_0000_0000) // hooks f0, f1 (twice); unhooked g; guest INT3s
	codeB = codeA + 0x1000                       // hook f2
	codeC = codeA + 0x2000                       // no hook, same page table
	large = introspect.Va(0xffff_f800_0040_0000) // a 2 MiB page with hook f3
	kdata = introspect.Va(0xffff_f800_0100_0000) // arguments
	udata = introspect.Va(0x0000_7ff0_0000_0000) // user arguments (U only)

	f0        = codeA + 0x100
	f1        = codeA + 0x800
	f2        = codeB + 0x10
	f3        = large + 0x5123
	g         = codeA + 0x200
	guestBP   = codeA + 0x400 // 0xCC in the guest's own code from boot
	guestBPRT = codeA + 0x600 // + vCPU: INT3 the guest writes at run time
	scribble  = codeA + 0xc00 // + 0x40*vCPU: data the guest rewrites on a code page
)

var hooked = []introspect.Va{f0, f1, f2, f3}

type world struct {
	m     *sim.Machine
	k, u  *sim.AddressSpace
	hooks []Hook
	vcpus int
}

func newWorld(tb testing.TB, vcpus int, seed uint64, latency float64) *world {
	tb.Helper()
	m := sim.New(sim.Config{Frames: 2048, VCPUs: vcpus, Seed: seed, Latency: latency})
	w := &world{m: m, vcpus: vcpus}
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	k, err := m.NewAddressSpace(paging.Level4)
	must(err)
	w.k = k
	nops := make([]byte, introspect.PageSize)
	for i := range nops {
		nops[i] = 0x90
	}
	_, err = k.MapNew(codeA, 3, 0)
	must(err)
	for _, p := range []introspect.Va{codeA, codeB, codeC} {
		must(k.Write(p, nops))
	}
	must(k.Write(guestBP, []byte{0xcc}))
	big, err := m.AllocGuestFrames(512, 512)
	must(err)
	must(k.Map2M(large, big, 0))
	must(k.Write(large+0x5000, nops))
	_, err = k.MapNew(kdata, 1, paging.PTENX)
	must(err)
	vals := make([]byte, introspect.PageSize)
	for i := 0; i < 512; i++ {
		binary.LittleEndian.PutUint64(vals[i*8:], 0x1000+uint64(i))
	}
	must(k.Write(kdata, vals))
	u, err := k.Clone()
	must(err)
	w.u = u
	_, err = u.MapNew(udata, 1, paging.PTEUser|paging.PTENX)
	must(err)
	for i := 0; i < 512; i++ {
		binary.LittleEndian.PutUint64(vals[i*8:], 0x2000+uint64(i))
	}
	must(u.Write(udata, vals))
	for i := 0; i < vcpus; i++ {
		must(m.SetRegisters(introspect.VCPU(i), &amd64.Registers{
			CR3: uint64(k.Root), CR0: amd64.CR0PG, CR4: amd64.CR4PAE, EFER: amd64.EFERLMA | amd64.EFERLME,
		}))
	}
	w.hooks = []Hook{
		{Addr: f0, Root: k.Root, Global: true, Tag: "f0"},
		{Addr: f1, Root: k.Root, Global: true, Tag: "f1"},
		{Addr: f1, Root: k.Root, Global: true, Tag: "f1b"},
		{Addr: f2, Root: k.Root, Global: true, Tag: "f2"},
		{Addr: f3, Root: k.Root, Global: true, Tag: "f3"},
	}
	return w
}

// call returns a call of fn whose first argument points at the i-th value
// of the argument page of the address space in use, and whose second is
// that value, for the handler to check.
func call(fn introspect.Va, user bool, i int) sim.Op {
	ptr, want := kdata+introspect.Va(8*i), 0x1000+uint64(i)
	if user {
		ptr, want = udata+introspect.Va(8*i), 0x2000+uint64(i)
	}
	return sim.Call(fn, func(r *amd64.Registers) { r.RCX, r.RDX = uint64(ptr), want })
}

// script is a generated guest program and what it should produce.
type script struct {
	ops   [][]sim.Op
	int3s int // guest INT3s executed, each must reach the guest once
}

// gen makes a random but valid script from r: n ops per vCPU.
func (w *world) gen(r *rand.Rand, n int) *script {
	s := &script{ops: make([][]sim.Op, w.vcpus)}
	for v := 0; v < w.vcpus; v++ {
		user, installed := false, false
		for i := 0; i < n; i++ {
			s.ops[v] = append(s.ops[v], w.genOp(r, v, &user, &installed, s)...)
		}
	}
	return s
}

func (w *world) genOp(r *rand.Rand, v int, user, installed *bool, s *script) []sim.Op {
	switch r.IntN(16) {
	case 0, 1, 2, 3, 4:
		return []sim.Op{call(hooked[r.IntN(len(hooked))], *user, r.IntN(512))}
	case 5:
		return []sim.Op{sim.Call(g, nil)}
	case 6:
		s.int3s++
		return []sim.Op{sim.Int3(guestBP)}
	case 7:
		at := guestBPRT + introspect.Va(v)
		if !*installed {
			*installed = true
			s.int3s++
			return []sim.Op{sim.Write(at, []byte{0xcc}), sim.Int3(at)}
		}
		s.int3s++
		return []sim.Op{sim.Int3(at)}
	case 8:
		pages := []introspect.Va{codeA, codeB, large + 0x5000}
		p := pages[r.IntN(len(pages))]
		off := introspect.Va(r.IntN(introspect.PageSize - 16))
		return []sim.Op{sim.Read(p+off, 1+r.IntN(16))}
	case 9:
		at := scribble + introspect.Va(0x40*v+r.IntN(0x38))
		b := make([]byte, 1+r.IntN(8))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return []sim.Op{sim.Write(at, b), sim.Read(at, len(b))}
	case 10:
		if r.IntN(2) == 0 {
			return []sim.Op{sim.PageOut(codeB, 1)}
		}
		return []sim.Op{sim.PageIn(codeB, 1, r.IntN(2) == 0)}
	case 11:
		arg := kdata
		if *user {
			arg = udata
		}
		if r.IntN(2) == 0 {
			return []sim.Op{sim.PageOut(arg, 1)}
		}
		return []sim.Op{sim.PageIn(arg, 1, r.IntN(2) == 0)}
	case 12:
		if r.IntN(2) == 0 {
			return []sim.Op{sim.PageOut(codeA, 2)}
		}
		return []sim.Op{sim.PageIn(codeA, 2, r.IntN(2) == 0)}
	case 13:
		if r.IntN(2) == 0 {
			return []sim.Op{sim.PageOut(large, 2)}
		}
		return []sim.Op{sim.PageIn(large, 2, false)}
	case 14:
		if r.IntN(3) == 0 {
			return []sim.Op{sim.PageOut(codeA, 1)}
		}
		return []sim.Op{sim.PageIn(codeA, 1, r.IntN(2) == 0)}
	default:
		*user = !*user
		root := w.k.Root
		if *user {
			root = w.u.Root
		}
		return []sim.Op{sim.SetCR3(root)}
	}
}

func (w *world) load(tb testing.TB, s *script) {
	for v, ops := range s.ops {
		if err := w.m.Script(introspect.VCPU(v), ops...); err != nil {
			tb.Fatal(err)
		}
	}
}

// hitLog is a Handler that reads the first argument of each hit through
// the guest's page tables and records the hit.
type hitLog struct {
	mem     *paging.Memory
	hits    [][]string // per vCPU: "va/tag"
	bad     []string
	notices map[NoticeKind]int
	fail    func() error // optional extra failure
}

func newHitLog(w *world) *hitLog {
	return &hitLog{
		mem:     &paging.Memory{Phys: w.m, Mode: paging.Level4, Cache: paging.NewCache(0)},
		hits:    make([][]string, w.vcpus),
		notices: make(map[NoticeKind]int),
	}
}

func (r *hitLog) HandleHit(h *Hit) error {
	regs := &h.Ev.Regs
	if introspect.Va(regs.RIP) != h.Hook.Addr {
		r.bad = append(r.bad, fmt.Sprintf("hit %s at RIP %#x", h.Hook.Tag, regs.RIP))
	}
	got, err := r.mem.ReadU64(introspect.Pa(regs.TranslationRoot()), introspect.Va(regs.RCX))
	if err != nil {
		return fmt.Errorf("read argument: %w", err)
	}
	if got != regs.RDX {
		r.bad = append(r.bad, fmt.Sprintf("hit %s: argument %#x, want %#x", h.Hook.Tag, got, regs.RDX))
	}
	r.hits[h.Ev.VCPU] = append(r.hits[h.Ev.VCPU], fmt.Sprintf("%v/%s", h.Hook.Addr, h.Hook.Tag))
	return nil
}

func (r *hitLog) Notice(n Notice) { r.notices[n.Kind]++ }

// expectedHits derives, from what the guest observed, the hits each vCPU
// should have produced: one per hook of each hooked call it completed.
func (w *world) expectedHits() [][]string {
	tags := map[introspect.Va][]string{}
	for _, h := range w.hooks {
		tags[h.Addr] = append(tags[h.Addr], h.Tag)
	}
	out := make([][]string, w.vcpus)
	for _, o := range w.m.Observations() {
		if o.Kind != sim.ObsCall {
			continue
		}
		for _, t := range tags[o.VA] {
			out[o.VCPU] = append(out[o.VCPU], fmt.Sprintf("%v/%s", o.VA, t))
		}
	}
	return out
}

// guestSafe checks what the guest saw: only its own bytes, only its own
// INT3s (each exactly once), and no unhandled violations or script errors.
func (w *world) guestSafe(s *script, exactInt3 bool) error {
	var errs []error
	bps := 0
	for _, o := range w.m.Observations() {
		switch {
		case o.Kind == sim.ObsRead && o.Mismatch:
			errs = append(errs, fmt.Errorf("guest read foreign bytes: %v", o))
		case o.Kind == sim.ObsWrite && o.Mismatch:
			errs = append(errs, fmt.Errorf("guest write went astray: %v", o))
		case o.Kind == sim.ObsException && o.Vector == 3:
			bps++
			if !o.GuestCaused {
				errs = append(errs, fmt.Errorf("guest received a #BP it did not cause: %v", o))
			}
		case o.Kind == sim.ObsUnmonitored, o.Kind == sim.ObsScriptError:
			errs = append(errs, fmt.Errorf("%v", o))
		}
	}
	if exactInt3 && bps != s.int3s {
		errs = append(errs, fmt.Errorf("guest received %d #BP, executed %d INT3", bps, s.int3s))
	}
	if n := w.m.ForeignWrites(); n != 0 {
		errs = append(errs, fmt.Errorf("%d introspector writes to guest RAM", n))
	}
	return errors.Join(errs...)
}

// attach creates the engine and installs the hooks with the guest paused.
func (w *world) attach(rec *hitLog, opts ViewsOptions) (*Views, error) {
	if rec != nil {
		opts.Cache = rec.mem.Cache
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := NewViews(w.m, opts)
	if err != nil {
		return nil, err
	}
	if err := w.m.Pause(); err != nil {
		return e, err
	}
	defer func() {
		if w.m.Resume() != nil {
			w.m.Resume() // an injected failure hits once
		}
	}()
	for _, h := range w.hooks {
		if err := e.Add(h); err != nil {
			return e, err
		}
	}
	return e, nil
}

// run loads s, attaches an engine that logs its hits, runs the guest until
// it has nothing left to do and closes the engine. It returns the log and
// the engine's counters; what names the run in failure messages.
func (w *world) run(t *testing.T, s *script, what string) (*hitLog, ViewsStats) {
	t.Helper()
	w.load(t, s)
	rec := newHitLog(w)
	e, err := w.attach(rec, ViewsOptions{})
	if err != nil {
		t.Fatalf("%s: attach: %v", what, err)
	}
	if err := runToIdle(e, rec); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	st := e.Stats()
	if err := e.Close(); err != nil {
		t.Fatalf("%s: close: %v", what, err)
	}
	return rec, st
}

// runToIdle runs the engine until the guest has nothing left to do.
func runToIdle(e *Views, h Handler) error {
	err := e.Run(context.Background(), h)
	if errors.Is(err, sim.ErrIdle) {
		return nil
	}
	return err
}

// finish lets the guest run to its end without an introspector.
func (w *world) finish() error {
	_, err := w.m.WaitEvent(context.Background())
	if errors.Is(err, sim.ErrInjected) { // the failure may fall here
		_, err = w.m.WaitEvent(context.Background())
	}
	if errors.Is(err, sim.ErrIdle) {
		return nil
	}
	return fmt.Errorf("guest after detach: %w", err)
}

func diffHits(got, want [][]string) error {
	var errs []error
	for v := range want {
		if !slices.Equal(got[v], want[v]) {
			errs = append(errs, fmt.Errorf("vCPU %d: hits %d, calls %d\n got  %v\n want %v", v, len(got[v]), len(want[v]), got[v], want[v]))
		}
	}
	return errors.Join(errs...)
}
