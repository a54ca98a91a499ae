package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/bpm"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/ptm"
)

// ViewsDriver is what the Views engine needs from a driver: alternate
// views, frames for shadows, physical writes into them, and events.
// driver.Injector is used when the driver has it; driver.Pauser too.
type ViewsDriver interface {
	driver.Driver
	driver.PhysWriter
	driver.Views
	driver.FrameAllocator
	driver.EventSource
}

// ViewsOptions configures a Views engine. The zero value is usable.
type ViewsOptions struct {
	// Mode is the guest's paging mode (default 4-level).
	Mode paging.Mode
	// Cache, when set, is flushed at every event: the guest may have
	// changed its page tables while it ran.
	Cache *paging.Cache
	// OnEvent, when set, is called at every event before it is handled
	// (to flush other caches the handler keeps).
	OnEvent func()
	// Logger receives debug and warning logs (default: slog.Default()).
	Logger *slog.Logger
}

// ViewsStats counts what the Views engine did, by case.
type ViewsStats struct {
	Events uint64 // every event handled
	// Hits delivered to the handler (one per hook): at the INT3, or at the
	// page-table write trap the CPU raises just before fetching a hooked
	// instruction (HitsAtWrite, a subset).
	Hits        uint64
	HitsAtWrite uint64
	// ReadsHidden: reads of a hooked page, run in the default view.
	ReadsHidden uint64
	// PTEWrites: writes to a watched page-table entry; OtherWrites: other
	// writes to protected frames (A/D-only updates of tables not watched
	// entries, writes to hooked pages, which resync the shadow).
	PTEWrites   uint64
	OtherWrites uint64
	Resyncs     uint64
	SingleSteps uint64
	PageIns     uint64
	PageOuts    uint64
	// Reinjected: guest INT3s of its own, delivered to it.
	Reinjected uint64
	// Stale: INT3 events for no current breakpoint; the vCPU resumed.
	Stale uint64
	// PageFaultsInjected: a handler needed a page the guest had paged out.
	PageFaultsInjected uint64
	HandlerErrors      uint64
	Unreadable         uint64
	// Unexpected: events the engine did not cause (answered harmlessly).
	Unexpected uint64
	// HeldStores: page-table stores made to retry because another vCPU's
	// step at a hook, whose walk reads that entry, had not run yet;
	// HeldHits: hits (and traps or stale INT3s at a hook) made to retry
	// because another vCPU's store to an entry of the hook's walk was
	// being stepped (see Views).
	HeldStores uint64
	HeldHits   uint64
	// Errors: failures of the engine's own bookkeeping (arming a page-in,
	// reading an entry); the guest stays safe, a hook may miss hits.
	Errors uint64
}

type viewsCounters struct {
	events, hits, hitsAtWrite, readsHidden, pteWrites, otherWrites, resyncs, singleSteps,
	pageIns, pageOuts, reinjected, stale, pfInjected, handlerErrors, unreadable, unexpected, errors,
	heldStores, heldHits atomic.Uint64
}

type vcpuState struct {
	stepping bool           // we toggled single-step on
	written  introspect.Gfn // a shadowed frame it wrote, to resync
	wrote    bool

	// After a page fault injected for hook number retryIdx of retryKey,
	// the vCPU re-executes the address; the hooks before that one already
	// had the hit. retryRSP tells the retry from a new call.
	retry    bool
	retryKey bpm.Key
	retryIdx int
	retryRSP uint64

	// The vCPU was answered with a step that runs the hooked instruction
	// at flyVA (under flyRoot) in the default view, and no event of it has
	// come since: the step may not have run yet.
	flying  bool
	flyVA   introspect.Va
	flyRoot introspect.Pa
	flyMode paging.Mode
	// While stepping: the trapped write goes to storeAt; storeGVA: it is a
	// store to storeVA, or the Accessed/Dirty update for an access to it.
	storeAt   introspect.Pa
	storeVA   introspect.Va
	storeRoot introspect.Pa
	storeMode paging.Mode
	storeGVA  bool
	// Consecutive retries of this vCPU's event by holdStore or holdHit.
	holds int
}

// maxHolds bounds how many times in a row one vCPU's event is retried to
// wait for another vCPU's step. A step takes microseconds on hardware and
// a retry an event round trip, so this is only reached if the other vCPU
// is not scheduled; the hit may then be delivered twice, as without holds.
const maxHolds = 256

// Views is the Engine for hypervisors with alternate views (Xen altp2m,
// the sim model). It answers events as the seed's monitor does:
//
//   - read of a hooked page: fast single-step in the default view, so the
//     guest reads the original bytes;
//   - write to a protected frame: mark the entry dirty in the page-table
//     monitor, single-step in the default view, then on the single-step
//     process dirty entries (page-in arms, page-out disarms), resync a
//     written shadow, and return to the monitor view;
//   - INT3 of a hook: the handler runs, then a fast single-step over it in
//     the default view;
//   - INT3 the guest placed itself: reinjected;
//   - INT3 with no breakpoint behind it any more: resumed (stale);
//   - a handler error that is a missing guest page: #PF injected for that
//     address and the vCPU resumed without stepping, so it re-executes the
//     INT3 once the guest has paged the memory in.
//
// Run handles one event at a time; a Handler must not call Add, Remove or
// Close. Cancel Run's context and let it return before calling Close.
//
// When several hooks share an address and a later one needs a page fault,
// the retry (same vCPU, address and stack pointer) resumes at that hook, so
// the earlier ones see the hit once.
//
// Exactly once across vCPUs: if another vCPU paged the hooked page out
// between a hit and the step over it, the step would fault, the guest
// would page the page in and re-execute the hooked instruction, and the
// hit would be delivered again; if another vCPU paged it in before a step
// that runs it unarmed, the call would be missed. So a step that runs a
// hooked instruction in the default view (after a hit, or at a trap or
// stale INT3 at a hook) and a store to an entry of that hook's walk are
// kept apart, by retrying (a zero response: the vCPU re-executes the
// instruction and traps again) whichever event comes second:
//
//   - a write trap on an entry of the walk of another vCPU's pending step
//     is retried while that vCPU's registers still show RIP at the hook
//     under the same root, i.e. until its step has run (or it stopped at
//     the hook again, with an event yet to handle); this reads a running
//     vCPU's registers, which Xen does by pausing it for the read;
//   - a hit, or a trap or stale INT3 at a hook, is retried while another
//     vCPU's trapped store to an entry of the hook's walk is being
//     single-stepped.
//
// Neither drops a hit: a retried hit comes back and is delivered then,
// or, if the store paged the page out, after the guest pages it in. After
// 256 retries in a row (maxHolds) the event goes through as without holds.
// With Latency 0 the model steps promptly and nothing is held.
//
// Known limit: a vCPU whose walk does not trap (Accessed bits already
// set) can still run a hooked page that another vCPU has just paged in,
// before the page-in's single-step event re-arms it, and the call is
// missed; on hardware this window lasts microseconds, and the model's
// Latency option measures it (see TestViewsEventLatency).
type Views struct {
	drv  ViewsDriver
	inj  driver.Injector
	opts ViewsOptions
	log  *slog.Logger

	mu    sync.Mutex // serialises Add, Run's handling and Close
	view  introspect.View
	bpm   *bpm.Manager
	ptm   *ptm.Monitor
	hooks map[bpm.Key][]*Hook
	vcpus []vcpuState

	// teardown state
	viewAlive  bool
	inView     bool
	monitors   [3]bool
	unanswered *driver.Event
	closed     bool

	hit     Hit     // reused for every HandleHit call
	byteBuf [1]byte // reused for INT3 checks
	c       viewsCounters
}

var _ Engine = (*Views)(nil)

var viewsMonitors = [...]driver.Monitor{driver.MonitorBreakpoint, driver.MonitorSingleStep, driver.MonitorMemoryAccess}

// NewViews creates the monitor view on drv, enables the breakpoint,
// single-step and memory-access monitors and moves every vCPU into the
// view. drv must implement ViewsDriver. On error, what was set up is undone.
func NewViews(drv driver.Driver, opts ViewsOptions) (*Views, error) {
	vd, ok := drv.(ViewsDriver)
	if !ok {
		return nil, fmt.Errorf("hook: views engine needs views, frame allocation, physical writes and events: %w", driver.ErrUnsupported)
	}
	if opts.Mode == 0 {
		opts.Mode = paging.Level4
	}
	v := &Views{drv: vd, opts: opts, log: opts.Logger, hooks: make(map[bpm.Key][]*Hook)}
	if v.log == nil {
		v.log = slog.Default()
	}
	v.inj, _ = drv.(driver.Injector)
	v.vcpus = make([]vcpuState, vd.VCPUs())
	v.bpm = bpm.New(vd, opts.Mode)
	v.ptm = ptm.New(vd, opts.Mode)

	view, err := vd.CreateView(introspect.AccessRWX)
	if err != nil {
		return nil, fmt.Errorf("hook: create view: %w", err)
	}
	v.view, v.viewAlive = view, true
	for i, m := range viewsMonitors {
		if err = vd.EnableMonitor(m); err != nil {
			err = fmt.Errorf("hook: enable monitor %d: %w", m, err)
			break
		}
		v.monitors[i] = true
	}
	if err == nil {
		v.inView = true // a failed switch may have moved some vCPUs
		if err = vd.SwitchView(view); err != nil {
			err = fmt.Errorf("hook: switch to view %d: %w", view, err)
		}
	}
	if err != nil {
		return nil, errors.Join(err, v.Close())
	}
	return v, nil
}

// View returns the monitor view.
func (v *Views) View() introspect.View { return v.view }

// Add installs a hook: a hidden breakpoint at h.Addr under h.Root (armed
// now if the page is present, else when the guest pages it in) and a watch
// on the page tables that map it. Pause the guest around Adds.
func (v *Views) Add(h Hook) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return errors.New("hook: add to a closed engine")
	}
	root := introspect.Pa(amd64.CR3Root(uint64(h.Root)))
	k := bpm.Key{VA: h.Addr, Root: root, View: v.view}
	if _, err := v.bpm.Insert(k, h.Global, h.Tag); err != nil {
		return fmt.Errorf("hook %s: %w", h.Tag, err)
	}
	if err := v.ptm.Monitor(h.Addr, root, v.view, h.Tag); err != nil {
		return errors.Join(fmt.Errorf("hook %s: %w", h.Tag, err), v.bpm.Remove(k, h.Tag))
	}
	hc := h
	hc.Root = root
	v.hooks[k] = append(v.hooks[k], &hc)
	return nil
}

// Remove uninstalls a hook added with Add.
func (v *Views) Remove(h Hook) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	root := introspect.Pa(amd64.CR3Root(uint64(h.Root)))
	k := bpm.Key{VA: h.Addr, Root: root, View: v.view}
	hs := v.hooks[k]
	i := -1
	for j, x := range hs {
		if x.Tag == h.Tag {
			i = j
			break
		}
	}
	if i < 0 {
		return fmt.Errorf("hook %s at %v: not installed", h.Tag, h.Addr)
	}
	v.hooks[k] = append(hs[:i:i], hs[i+1:]...)
	if len(v.hooks[k]) == 0 {
		delete(v.hooks, k)
	}
	return errors.Join(v.bpm.Remove(k, h.Tag), v.ptm.Unmonitor(h.Addr, root, v.view, h.Tag))
}

// Stats returns the engine's counters. It is safe to call at any time.
func (v *Views) Stats() ViewsStats {
	c := &v.c
	return ViewsStats{
		Events: c.events.Load(), Hits: c.hits.Load(), HitsAtWrite: c.hitsAtWrite.Load(),
		ReadsHidden: c.readsHidden.Load(), PTEWrites: c.pteWrites.Load(), OtherWrites: c.otherWrites.Load(),
		Resyncs: c.resyncs.Load(), SingleSteps: c.singleSteps.Load(), PageIns: c.pageIns.Load(),
		PageOuts: c.pageOuts.Load(), Reinjected: c.reinjected.Load(), Stale: c.stale.Load(),
		PageFaultsInjected: c.pfInjected.Load(), HandlerErrors: c.handlerErrors.Load(),
		Unreadable: c.unreadable.Load(), Unexpected: c.unexpected.Load(), Errors: c.errors.Load(),
		HeldStores: c.heldStores.Load(), HeldHits: c.heldHits.Load(),
	}
}

// Run handles events until ctx ends (it then returns nil) or the driver
// fails.
func (v *Views) Run(ctx context.Context, h Handler) error {
	for {
		ev, err := v.drv.WaitEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("hook: wait for event: %w", err)
		}
		v.mu.Lock()
		r := v.handle(ev, h)
		err = v.drv.Respond(ev, r)
		if err != nil {
			v.unanswered = ev
		}
		v.mu.Unlock()
		if err != nil {
			return fmt.Errorf("hook: respond to vCPU %d: %w", ev.VCPU, err)
		}
	}
}

// stepDefault runs the next instruction in the default view and comes back.
var stepDefault = driver.Response{FastSingleStep: true, SetView: true, View: introspect.DefaultView}

func (v *Views) handle(ev *driver.Event, h Handler) driver.Response {
	v.c.events.Add(1)
	if v.opts.Cache != nil {
		v.opts.Cache.Flush()
	}
	if v.opts.OnEvent != nil {
		v.opts.OnEvent()
	}
	// Whatever the event, a step this vCPU had pending is over.
	v.state(ev.VCPU).flying = false
	switch ev.Reason {
	case driver.ReasonMemoryAccess:
		return v.memoryAccess(ev, h)
	case driver.ReasonInterrupt:
		return v.interrupt(ev, h)
	case driver.ReasonSingleStep:
		return v.singleStep(ev, h)
	}
	v.c.unexpected.Add(1)
	return driver.Response{}
}

func (v *Views) state(c introspect.VCPU) *vcpuState {
	for int(c) >= len(v.vcpus) {
		v.vcpus = append(v.vcpus, vcpuState{})
	}
	return &v.vcpus[c]
}

func (v *Views) memoryAccess(ev *driver.Event, h Handler) driver.Response {
	switch {
	case ev.Access.Has(introspect.AccessW):
		if v.holdStore(ev) {
			return driver.Response{}
		}
		// A write trap with RIP at an armed hook is the CPU setting the
		// Accessed bit of the hooked page's walk before it fetches the
		// INT3. The instruction runs in the default view next, where no
		// INT3 is, so the hit is delivered now.
		//
		// Armed or not, the step below runs the hooked instruction in
		// the default view: it is kept apart from stores to its walk.
		if ev.View == v.view {
			if b, gfn, ok := v.lookup(ev); b != nil {
				if v.holdHit(ev, b.VA) {
					return driver.Response{}
				}
				if ok && b.Armed && gfn == b.Gfn {
					v.c.hitsAtWrite.Add(1)
					if !v.deliver(ev, b, h) {
						return driver.Response{} // #PF injected: the vCPU retries
					}
				}
				v.fly(ev, b.VA)
			}
		}
		st := v.state(ev.VCPU)
		st.storeAt = ev.GPA &^ 7
		if v.ptm.MarkDirty(ev.GPA, ev.View, ev.VCPU) {
			v.c.pteWrites.Add(1)
			// A trap on a table entry may be the CPU setting Accessed or
			// Dirty for a store to GVA; the store runs unseen in the
			// default view, so a shadow of GVA's frame must be refreshed
			// after it. GVA is translated at the single-step, after the
			// store: now its page may not be present yet, or another
			// vCPU's page-in may shadow its frame before the store runs.
			if ev.GVA != 0 && len(v.hooks) > 0 {
				st.storeVA, st.storeRoot, st.storeMode, st.storeGVA = ev.GVA, introspect.Pa(ev.Regs.TranslationRoot()), v.mode(ev), true
			}
		} else {
			v.c.otherWrites.Add(1)
			st.written, st.wrote = ev.GPA.Gfn(), true
			// The store may land elsewhere if another vCPU moves the page
			// before it runs: GVA is translated again at the single-step.
			if ev.GVA != 0 {
				st.storeVA, st.storeRoot, st.storeMode, st.storeGVA = ev.GVA, introspect.Pa(ev.Regs.TranslationRoot()), v.mode(ev), true
			}
		}
		st.stepping = true
		return driver.Response{ToggleSingleStep: true, SetView: true, View: introspect.DefaultView}
	case ev.Access.Has(introspect.AccessR):
		v.c.readsHidden.Add(1)
		h.Notice(Notice{Kind: NoticeReadHidden, VCPU: ev.VCPU, Addr: ev.GVA})
		return stepDefault
	}
	// Execute violations: nothing of ours forbids execution.
	v.c.unexpected.Add(1)
	return stepDefault
}

// lookup finds the breakpoint for a vCPU at RIP and the frame RIP
// translates to now.
func (v *Views) lookup(ev *driver.Event) (*bpm.Breakpoint, introspect.Gfn, bool) {
	va := introspect.Va(ev.Regs.RIP)
	root := introspect.Pa(ev.Regs.TranslationRoot())
	b := v.bpm.Lookup(va, root, ev.View)
	if b == nil {
		return nil, 0, false
	}
	pa, err := paging.Translate(v.drv, root, va, v.mode(ev))
	if err != nil {
		return b, 0, false
	}
	return b, pa.Gfn(), true
}

func (v *Views) mode(ev *driver.Event) paging.Mode {
	if ev.Regs.FiveLevel() {
		return paging.Level5
	}
	return v.opts.Mode
}

func (v *Views) interrupt(ev *driver.Event, h Handler) driver.Response {
	va := introspect.Va(ev.Regs.RIP)
	if ev.Vector != 3 {
		v.c.unexpected.Add(1)
		return driver.Response{ReinjectInterrupt: true}
	}
	root := introspect.Pa(ev.Regs.TranslationRoot())
	b := v.bpm.Lookup(va, root, ev.View)
	pa, err := paging.Translate(v.drv, root, va, v.mode(ev))
	if err != nil {
		// The page went away since the INT3 (another vCPU paged it out).
		// Re-executing faults in the guest, which pages it back in.
		v.c.stale.Add(1)
		if _, pf := paging.PageFault(err); !pf {
			v.c.errors.Add(1)
			v.log.Warn("translate breakpoint address", "vcpu", ev.VCPU, "rip", va, "err", err)
		}
		h.Notice(Notice{Kind: NoticeStaleBreakpoint, VCPU: ev.VCPU, Addr: va})
		return driver.Response{}
	}
	// The guest's own INT3 is in its own frame; ours only in shadows.
	own := v.byteBuf[:]
	if err := v.drv.ReadPhysical(pa, own); err != nil {
		v.c.errors.Add(1)
		v.log.Warn("read breakpoint byte", "vcpu", ev.VCPU, "rip", va, "err", err)
		return driver.Response{} // retry
	}
	guests := own[0] == bpm.INT3
	if b != nil && b.Armed && (pa.Gfn() == b.Gfn || !guests) {
		if v.holdHit(ev, va) {
			return driver.Response{}
		}
		if !v.deliver(ev, b, h) {
			return driver.Response{}
		}
		v.fly(ev, va)
		// A guest INT3 at the same address shows up again in the default
		// view and is reinjected then.
		return stepDefault
	}
	if guests {
		v.c.reinjected.Add(1)
		h.Notice(Notice{Kind: NoticeReinjected, VCPU: ev.VCPU, Addr: va})
		return driver.Response{ReinjectInterrupt: true}
	}
	if b != nil {
		// Our INT3 was still in the view when the vCPU fetched it, but
		// the page is not armed any more: another vCPU's store is paging
		// it out or in. Retry until that is done, so that the step below
		// cannot run the page in between.
		if v.holdHit(ev, va) {
			return driver.Response{}
		}
		v.fly(ev, va)
	}
	v.c.stale.Add(1)
	h.Notice(Notice{Kind: NoticeStaleBreakpoint, VCPU: ev.VCPU, Addr: va})
	return stepDefault
}

// fly records that the vCPU of ev was answered with a step over the hook
// at va.
func (v *Views) fly(ev *driver.Event, va introspect.Va) {
	st := v.state(ev.VCPU)
	st.flying, st.flyVA, st.flyRoot, st.flyMode = true, va, introspect.Pa(ev.Regs.TranslationRoot()), v.mode(ev)
}

// onWalk reports whether the entry at epa is read by the walk of va under
// root. A walk that stops early still lists the entries it read.
func (v *Views) onWalk(epa introspect.Pa, root introspect.Pa, va introspect.Va, mode paging.Mode) bool {
	w, _ := paging.WalkVA(v.drv, root, va, mode)
	for _, s := range w.Steps[:w.N] {
		if s.EntryPA == epa {
			return true
		}
	}
	return false
}

// hold counts a retry of the event of st's vCPU, up to maxHolds in a row.
func (v *Views) hold(st *vcpuState) bool {
	if st.holds >= maxHolds {
		st.holds = 0
		v.log.Debug("another vCPU's step or store did not complete; letting the event through")
		return false
	}
	st.holds++
	return true
}

// holdStore reports whether the write trap ev, on an entry of the walk of
// another vCPU's pending step over a hook, must wait for that step: had
// the store paged the hook out, the step would fault and the call would
// be re-executed and delivered again.
func (v *Views) holdStore(ev *driver.Event) bool {
	st := v.state(ev.VCPU)
	epa := ev.GPA &^ 7
	for i := range v.vcpus {
		x := &v.vcpus[i]
		if !x.flying || introspect.VCPU(i) == ev.VCPU || !v.onWalk(epa, x.flyRoot, x.flyVA, x.flyMode) {
			continue
		}
		// Reading the registers of a running vCPU pauses it briefly on
		// Xen; the model reads them at once.
		regs, err := v.drv.Registers(introspect.VCPU(i))
		if err != nil {
			v.c.errors.Add(1)
			v.log.Warn("read registers of a stepping vCPU", "vcpu", i, "err", err)
			continue
		}
		if introspect.Va(regs.RIP) != x.flyVA || introspect.Pa(regs.TranslationRoot()) != x.flyRoot {
			x.flying = false // its step has run
			continue
		}
		if v.hold(st) {
			v.c.heldStores.Add(1)
			return true
		}
		x.flying = false
	}
	st.holds = 0
	return false
}

// holdHit reports whether the hit of ev at va must wait because another
// vCPU's trapped store to an entry of va's walk is being stepped: the
// store may page the hook out before this vCPU's step over it.
func (v *Views) holdHit(ev *driver.Event, va introspect.Va) bool {
	st := v.state(ev.VCPU)
	root := introspect.Pa(ev.Regs.TranslationRoot())
	for i := range v.vcpus {
		w := &v.vcpus[i]
		if !w.stepping || introspect.VCPU(i) == ev.VCPU || !v.onWalk(w.storeAt, root, va, v.mode(ev)) {
			continue
		}
		if v.hold(st) {
			v.c.heldHits.Add(1)
			return true
		}
		break
	}
	st.holds = 0
	return false
}

// deliver hands the hit to every hook of b. It reports false when it
// injected a page fault, so the vCPU must re-execute the hooked address.
func (v *Views) deliver(ev *driver.Event, b *bpm.Breakpoint, h Handler) bool {
	st := v.state(ev.VCPU)
	hooks := v.hooks[b.Key]
	first := 0
	if st.retry {
		st.retry = false
		if st.retryKey == b.Key && st.retryRSP == ev.Regs.RSP && st.retryIdx < len(hooks) {
			first = st.retryIdx
		}
	}
	for i, hk := range hooks[first:] {
		v.c.hits.Add(1)
		v.hit = Hit{Hook: hk, Ev: ev}
		err := h.HandleHit(&v.hit)
		v.hit = Hit{}
		if err == nil {
			continue
		}
		fva, pf := paging.PageFault(err)
		if !pf {
			v.c.handlerErrors.Add(1)
			h.Notice(Notice{Kind: NoticeHandlerError, VCPU: ev.VCPU, Tag: hk.Tag, Addr: b.VA, Err: err})
			continue
		}
		if v.inj == nil {
			v.c.unreadable.Add(1)
			h.Notice(Notice{Kind: NoticeUnreadable, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva, Err: err})
			continue
		}
		// Error code 0: a supervisor read of a page not present.
		if ierr := v.inj.InjectPageFault(ev.VCPU, fva, 0); ierr != nil {
			v.c.unreadable.Add(1)
			h.Notice(Notice{Kind: NoticeUnreadable, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva, Err: errors.Join(err, ierr)})
			continue
		}
		v.c.pfInjected.Add(1)
		st.retry, st.retryKey, st.retryIdx, st.retryRSP = true, b.Key, first+i, ev.Regs.RSP
		h.Notice(Notice{Kind: NoticePageFaultInjected, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva})
		return false
	}
	return true
}

func (v *Views) singleStep(ev *driver.Event, h Handler) driver.Response {
	st := v.state(ev.VCPU)
	if !st.stepping {
		v.c.unexpected.Add(1)
		return driver.Response{ToggleSingleStep: true}
	}
	v.c.singleSteps.Add(1)
	st.stepping = false
	evs, err := v.ptm.ProcessDirty(ev.VCPU)
	if err != nil {
		v.c.errors.Add(1)
		v.log.Warn("process dirty page-table entries", "vcpu", ev.VCPU, "err", err)
	}
	for i := range evs {
		pe := &evs[i]
		tag := ""
		if len(pe.Tags) > 0 {
			tag = pe.Tags[0]
		}
		var err error
		switch pe.Kind {
		case ptm.PageIn:
			v.c.pageIns.Add(1)
			err = v.bpm.PageIn(pe.VA, pe.Root, pe.View, pe.Gfn)
			h.Notice(Notice{Kind: NoticePageIn, VCPU: ev.VCPU, Tag: tag, Addr: pe.VA})
		case ptm.PageOut:
			v.c.pageOuts.Add(1)
			err = v.bpm.PageOut(pe.VA, pe.Root, pe.View)
			h.Notice(Notice{Kind: NoticePageOut, VCPU: ev.VCPU, Tag: tag, Addr: pe.VA})
		}
		if err != nil {
			v.c.errors.Add(1)
			v.log.Warn("update breakpoints", "vcpu", ev.VCPU, "event", pe.Kind, "va", pe.VA, "err", err)
		}
	}
	if st.wrote {
		v.resync(st.written)
	}
	if st.storeGVA {
		st.storeGVA = false
		if pa, err := paging.Translate(v.drv, st.storeRoot, st.storeVA, st.storeMode); err == nil && (!st.wrote || pa.Gfn() != st.written) {
			v.resync(pa.Gfn())
		}
	}
	st.wrote = false
	return driver.Response{ToggleSingleStep: true, SetView: true, View: v.view}
}

// resync refreshes the shadow of gfn, if it has one, after a store to gfn.
func (v *Views) resync(gfn introspect.Gfn) {
	if _, ok := v.bpm.Shadow(v.view, gfn); !ok {
		return
	}
	v.c.resyncs.Add(1)
	if err := v.bpm.Resync(v.view, gfn); err != nil {
		// A stale shadow would show the guest old code: retry, and
		// failing that give the frame back to the guest.
		v.c.errors.Add(1)
		if err2 := v.bpm.Resync(v.view, gfn); err2 != nil {
			v.log.Warn("resync shadow; evicting its breakpoints", "gfn", gfn, "err", errors.Join(err, err2))
			if err := v.bpm.Evict(v.view, gfn); err != nil {
				v.log.Warn("evict shadow", "gfn", gfn, "err", err)
			}
		}
	}
}

// Close moves every vCPU back to the default view, removes every
// breakpoint, unprotects every table, destroys the view and disables the
// monitors. It continues past errors and returns them joined; calling it
// again retries what failed.
func (v *Views) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	var errs []error
	p, _ := v.drv.(driver.Pauser)
	if p != nil {
		if err := p.Pause(); err != nil {
			errs = append(errs, fmt.Errorf("pause for teardown: %w", err))
			p = nil
		}
	}
	// The guest leaves our view first, so that nothing it does can touch
	// a half-restored view.
	if v.inView {
		if err := v.drv.SwitchView(introspect.DefaultView); err != nil {
			errs = append(errs, fmt.Errorf("switch to the default view: %w", err))
		} else {
			v.inView = false
		}
	}
	if v.unanswered != nil {
		r := driver.Response{SetView: true, View: introspect.DefaultView}
		if v.vcpus != nil && v.state(v.unanswered.VCPU).stepping {
			r.ToggleSingleStep = true
		}
		if err := v.drv.Respond(v.unanswered, r); err != nil {
			errs = append(errs, fmt.Errorf("answer vCPU %d: %w", v.unanswered.VCPU, err))
		} else {
			v.unanswered = nil
		}
	}
	if err := v.bpm.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := v.ptm.Close(); err != nil {
		errs = append(errs, err)
	}
	clear(v.hooks)
	if v.viewAlive && !v.inView {
		if err := v.drv.DestroyView(v.view); err != nil {
			errs = append(errs, fmt.Errorf("destroy view %d: %w", v.view, err))
		} else {
			v.viewAlive = false
			v.bpm.ViewGone(v.view)
			v.ptm.ViewGone(v.view)
			if err := v.bpm.Close(); err != nil { // frees leftover shadows
				errs = append(errs, err)
			}
		}
	}
	for i, m := range viewsMonitors {
		if !v.monitors[i] {
			continue
		}
		if err := v.drv.DisableMonitor(m); err != nil {
			errs = append(errs, fmt.Errorf("disable monitor %d: %w", m, err))
			continue
		}
		v.monitors[i] = false
	}
	for i := range v.vcpus {
		v.vcpus[i] = vcpuState{}
	}
	if p != nil {
		// A guest left paused is as harmful as a view left behind: retry.
		var rerr error
		for range 3 {
			if rerr = p.Resume(); rerr == nil {
				break
			}
		}
		if rerr != nil {
			errs = append(errs, fmt.Errorf("resume after teardown: %w", rerr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hook: close views engine: %w", err)
	}
	return nil
}
