// Package bpm manages breakpoints that a guest cannot see, in an alternate
// EPT view (Xen altp2m).
//
// The first breakpoint on a guest frame in a view makes a shadow copy of the
// frame, writes INT3 (0xCC) at the breakpoint's offset in the shadow, remaps
// the frame to the shadow in the view and makes it execute-only there. The
// guest executes the shadow (and hits the INT3) but every read or write of
// the frame traps, so the event loop can let that access run in the default
// view, where the original bytes are. Breakpoints are reference-counted per
// address and per frame; removing the last one restores the byte, the
// mapping and the access rights and frees the shadow.
//
// A breakpoint is keyed by (VA, translation root, view). While its page is
// not present it is pending; a page-table monitor (package ptm) reports the
// page-in and the breakpoint is armed on whatever frame the page then uses,
// and a page-out disarms it again.
//
// Limitation: the shadow is a copy. When the guest writes the original frame
// (self-modifying code, data sharing the page), the shadow goes stale until
// Resync is called; the view engine calls it after every write it single-steps
// on a shadowed frame. Writes made by other agents (DMA, another
// introspector) are not seen.
package bpm

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/internal/tagref"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// INT3 is the breakpoint instruction byte.
const INT3 = 0xcc

// Driver is what the manager needs from a hypervisor.
type Driver interface {
	driver.PhysReader
	driver.PhysWriter
	driver.Views
	driver.FrameAllocator
}

// Key identifies a breakpoint: a virtual address under a translation root,
// in a view.
type Key struct {
	VA   introspect.Va
	Root introspect.Pa
	View introspect.View
}

func (k Key) String() string { return fmt.Sprintf("%v@%v/view%d", k.VA, k.Root, k.View) }

// Breakpoint is the state of one breakpointed address. The manager owns it;
// callers read it and must not change it.
type Breakpoint struct {
	Key
	// Global breakpoints match a hit in any address space.
	Global bool
	// Armed is true while the INT3 is in place; Gfn is then the frame.
	Armed bool
	Gfn   introspect.Gfn

	refs tagref.Counts
}

// Tags lists the distinct tags of the insertions, in insertion order.
func (b *Breakpoint) Tags() []string { return b.refs.Tags() }

// Tag returns the first tag, or "".
func (b *Breakpoint) Tag() string {
	if tags := b.refs.Tags(); len(tags) > 0 {
		return tags[0]
	}
	return ""
}

type pageKey struct {
	view introspect.View
	gfn  introspect.Gfn
}

type slot struct {
	orig byte
	refs int
}

// page is a shadowed frame in a view.
type page struct {
	pageKey
	shadow introspect.Gfn
	saved  introspect.Access // access of gfn in the view before we changed it
	orig   []byte            // the frame's content as last copied
	slots  map[uint16]*slot
	refs   int

	// teardown progress, so that a failed teardown can be resumed
	unmapped, restored bool
}

// Manager holds the breakpoints of one introspection session. It is not
// safe for concurrent use: the event loop owns it.
type Manager struct {
	d    Driver
	mode paging.Mode

	bps    map[Key]*Breakpoint
	global map[vaView][]*Breakpoint
	byPage map[Key][]*Breakpoint // Key.VA is the page base
	pages  map[pageKey]*page
	// leftovers are shadows whose teardown failed; retried later.
	leftovers []*page
	buf       []byte
	spare     [][]byte
}

type vaView struct {
	va   introspect.Va
	view introspect.View
}

// New returns an empty manager. mode is the guest's paging mode.
func New(d Driver, mode paging.Mode) *Manager {
	return &Manager{
		d:      d,
		mode:   mode,
		bps:    make(map[Key]*Breakpoint),
		global: make(map[vaView][]*Breakpoint),
		byPage: make(map[Key][]*Breakpoint),
		pages:  make(map[pageKey]*page),
		buf:    make([]byte, introspect.PageSize),
	}
}

func pageOf(k Key) Key { return Key{VA: k.VA.PageBase(), Root: k.Root, View: k.View} }

// Insert adds a reference to the breakpoint at k with tag, creating and
// arming it if it is new. A breakpoint whose page is not present is kept
// pending (armed reports false, err is nil). On error nothing changes.
func (m *Manager) Insert(k Key, global bool, tag string) (b *Breakpoint, err error) {
	if b = m.bps[k]; b != nil {
		b.refs.Add(tag)
		if global && !b.Global {
			b.Global = true
			m.global[vaView{k.VA, k.View}] = append(m.global[vaView{k.VA, k.View}], b)
		}
		return b, nil
	}
	b = &Breakpoint{Key: k, Global: global}
	b.refs.Add(tag)
	w, werr := paging.WalkVA(m.d, k.Root, k.VA, m.mode)
	if werr == nil {
		if err := m.arm(b, w.PA.Gfn()); err != nil {
			return nil, fmt.Errorf("insert breakpoint %v: %w", k, err)
		}
	} else if _, notPresent := paging.PageFault(werr); !notPresent {
		return nil, fmt.Errorf("insert breakpoint %v: %w", k, werr)
	}
	m.bps[k] = b
	if global {
		m.global[vaView{k.VA, k.View}] = append(m.global[vaView{k.VA, k.View}], b)
	}
	pk := pageOf(k)
	m.byPage[pk] = append(m.byPage[pk], b)
	return b, nil
}

// Remove drops one reference with tag to the breakpoint at k. The last
// reference disarms and forgets it. The breakpoint is forgotten even when
// restoring the guest fails; the error says what could not be restored and
// the shadow is kept for Close to retry.
func (m *Manager) Remove(k Key, tag string) error {
	b := m.bps[k]
	if b == nil || !b.refs.Has(tag) {
		return fmt.Errorf("remove breakpoint %v tag %q: not inserted", k, tag)
	}
	if !b.refs.Drop(tag) {
		return nil
	}
	var err error
	if b.Armed {
		err = m.disarm(b)
	}
	delete(m.bps, k)
	if b.Global {
		vv := vaView{k.VA, k.View}
		m.global[vv] = slices.DeleteFunc(m.global[vv], func(x *Breakpoint) bool { return x == b })
		if len(m.global[vv]) == 0 {
			delete(m.global, vv)
		}
	}
	pk := pageOf(k)
	m.byPage[pk] = slices.DeleteFunc(m.byPage[pk], func(x *Breakpoint) bool { return x == b })
	if len(m.byPage[pk]) == 0 {
		delete(m.byPage, pk)
	}
	if err != nil {
		return fmt.Errorf("remove breakpoint %v: %w", k, err)
	}
	return nil
}

// Lookup returns the breakpoint for a hit at va by a vCPU whose translation
// root is root, in view: the one inserted for exactly (va, root, view), or a
// global one at (va, view).
func (m *Manager) Lookup(va introspect.Va, root introspect.Pa, view introspect.View) *Breakpoint {
	if b := m.bps[Key{va, root, view}]; b != nil {
		return b
	}
	if g := m.global[vaView{va, view}]; len(g) > 0 {
		return g[0]
	}
	return nil
}

// Len returns the number of breakpointed addresses.
func (m *Manager) Len() int { return len(m.bps) }

// Breakpoints returns every breakpoint.
func (m *Manager) Breakpoints() []*Breakpoint {
	out := make([]*Breakpoint, 0, len(m.bps))
	for _, b := range m.bps {
		out = append(out, b)
	}
	return out
}

// Shadow returns the shadow frame that gfn resolves to in view, if the
// manager has remapped it.
func (m *Manager) Shadow(view introspect.View, gfn introspect.Gfn) (introspect.Gfn, bool) {
	if p := m.pages[pageKey{view, gfn}]; p != nil {
		return p.shadow, true
	}
	return 0, false
}

// Shadows returns the number of shadowed frames.
func (m *Manager) Shadows() int { return len(m.pages) }

// PageIn arms the pending breakpoints of the page at va (a page base) under
// root in view, now backed by gfn. It arms as many as it can and returns the
// errors of the others, which stay pending.
func (m *Manager) PageIn(va introspect.Va, root introspect.Pa, view introspect.View, gfn introspect.Gfn) error {
	var errs []error
	for _, b := range m.byPage[Key{va.PageBase(), root, view}] {
		if b.Armed {
			if b.Gfn == gfn {
				continue
			}
			// The page moved without a page-out we saw.
			if err := m.disarm(b); err != nil {
				errs = append(errs, err)
			}
		}
		if err := m.arm(b, gfn); err != nil {
			errs = append(errs, fmt.Errorf("arm %v on %v: %w", b.Key, gfn, err))
		}
	}
	return errors.Join(errs...)
}

// PageOut disarms the breakpoints of the page at va under root in view;
// they become pending.
func (m *Manager) PageOut(va introspect.Va, root introspect.Pa, view introspect.View) error {
	var errs []error
	for _, b := range m.byPage[Key{va.PageBase(), root, view}] {
		if b.Armed {
			if err := m.disarm(b); err != nil {
				errs = append(errs, fmt.Errorf("disarm %v: %w", b.Key, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Resync copies the original frame gfn into its shadow in view again (the
// guest wrote it), keeping the INT3 bytes. It does nothing for a frame that
// is not shadowed.
func (m *Manager) Resync(view introspect.View, gfn introspect.Gfn) error {
	p := m.pages[pageKey{view, gfn}]
	if p == nil {
		return nil
	}
	if err := m.d.ReadPhysical(gfn.Pa(), m.buf); err != nil {
		return fmt.Errorf("resync %v: %w", gfn, err)
	}
	copy(p.orig, m.buf)
	for off, s := range p.slots {
		s.orig = m.buf[off]
		m.buf[off] = INT3
	}
	if err := m.d.WritePhysical(p.shadow.Pa(), m.buf); err != nil {
		return fmt.Errorf("resync %v: write shadow %v: %w", gfn, p.shadow, err)
	}
	return nil
}

// Evict disarms every breakpoint on frame gfn in view, restoring the frame;
// they stay pending until the page is paged in again. It is the fallback
// when a shadow cannot be kept in sync with the frame.
func (m *Manager) Evict(view introspect.View, gfn introspect.Gfn) error {
	var errs []error
	for _, b := range m.bps {
		if b.Armed && b.View == view && b.Gfn == gfn {
			if err := m.disarm(b); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// arm puts b's INT3 on frame gfn.
func (m *Manager) arm(b *Breakpoint, gfn introspect.Gfn) error {
	pk := pageKey{b.View, gfn}
	off := uint16(b.VA.Offset())
	p := m.pages[pk]
	if p == nil {
		var err error
		if p, err = m.shadow(pk, off); err != nil {
			return err
		}
		m.pages[pk] = p
	} else if p.slots[off] == nil {
		if err := m.d.WritePhysical(p.shadow.Pa()+introspect.Pa(off), []byte{INT3}); err != nil {
			return fmt.Errorf("write INT3 in shadow %v: %w", p.shadow, err)
		}
		p.slots[off] = &slot{orig: p.orig[off]}
	}
	p.slots[off].refs++
	p.refs++
	b.Armed, b.Gfn = true, gfn
	return nil
}

// shadow makes the shadow of a frame with a first INT3 at off. Each step
// is undone if a later one fails.
func (m *Manager) shadow(pk pageKey, off uint16) (p *page, err error) {
	if err := m.retryLeftovers(pk); err != nil {
		return nil, err
	}
	saved, err := m.d.GetAccess(pk.view, pk.gfn)
	if err != nil {
		return nil, fmt.Errorf("get access of %v: %w", pk.gfn, err)
	}
	orig := m.pageBuf()
	if err := m.d.ReadPhysical(pk.gfn.Pa(), orig); err != nil {
		m.spare = append(m.spare, orig)
		return nil, fmt.Errorf("copy %v: %w", pk.gfn, err)
	}
	shadow, err := m.d.AllocateFrame()
	if err != nil {
		return nil, fmt.Errorf("allocate shadow of %v: %w", pk.gfn, err)
	}
	p = &page{pageKey: pk, shadow: shadow, saved: saved, orig: orig, slots: map[uint16]*slot{off: {orig: orig[off]}}}
	undo := func(err error, steps ...func() error) error {
		errs := []error{err}
		for _, s := range steps {
			if uerr := s(); uerr != nil {
				errs = append(errs, fmt.Errorf("undo: %w", uerr))
				m.leftovers = append(m.leftovers, p)
				break
			}
		}
		return errors.Join(errs...)
	}
	free := func() error { return m.d.FreeFrame(shadow) }
	copy(m.buf, orig)
	m.buf[off] = INT3
	if err := m.d.WritePhysical(shadow.Pa(), m.buf); err != nil {
		return nil, undo(fmt.Errorf("write shadow %v: %w", shadow, err), free)
	}
	// Under Xen, change_gfn gives the remapped entry the access of the
	// target; making the shadow execute-only first means the guest never
	// sees a readable INT3, not even between the two calls below.
	if err := m.d.SetAccess(pk.view, shadow, introspect.AccessX); err != nil {
		return nil, undo(fmt.Errorf("protect shadow %v: %w", shadow, err), free)
	}
	if err := m.d.ChangeGFN(pk.view, pk.gfn, shadow); err != nil {
		return nil, undo(fmt.Errorf("remap %v to %v: %w", pk.gfn, shadow, err), free)
	}
	if err := m.d.SetAccess(pk.view, pk.gfn, introspect.AccessX); err != nil {
		return nil, undo(fmt.Errorf("protect %v: %w", pk.gfn, err), func() error {
			return m.d.ChangeGFN(pk.view, pk.gfn, pk.gfn)
		}, func() error { return m.d.SetAccess(pk.view, pk.gfn, saved) }, free)
	}
	return p, nil
}

// disarm removes b's INT3 from its frame, tearing the shadow down with the
// last one.
func (m *Manager) disarm(b *Breakpoint) error {
	pk := pageKey{b.View, b.Gfn}
	b.Armed = false
	p := m.pages[pk]
	if p == nil {
		return nil
	}
	off := uint16(b.VA.Offset())
	s := p.slots[off]
	p.refs--
	if s != nil {
		s.refs--
	}
	if p.refs <= 0 {
		delete(m.pages, pk)
		if err := m.teardown(p); err != nil {
			m.leftovers = append(m.leftovers, p)
			return err
		}
		return nil
	}
	if s != nil && s.refs <= 0 {
		delete(p.slots, off)
		if err := m.d.WritePhysical(p.shadow.Pa()+introspect.Pa(off), []byte{s.orig}); err != nil {
			return fmt.Errorf("restore byte at %v+%#x: %w", p.shadow, off, err)
		}
	}
	return nil
}

// teardown restores a frame's mapping and access and frees its shadow,
// resuming where a failed teardown stopped.
func (m *Manager) teardown(p *page) error {
	if !p.unmapped {
		if err := m.d.ChangeGFN(p.view, p.gfn, p.gfn); err != nil {
			return fmt.Errorf("restore mapping of %v: %w", p.gfn, err)
		}
		p.unmapped = true
	}
	if !p.restored {
		if err := m.d.SetAccess(p.view, p.gfn, p.saved); err != nil {
			return fmt.Errorf("restore access of %v: %w", p.gfn, err)
		}
		p.restored = true
	}
	if err := m.d.FreeFrame(p.shadow); err != nil {
		return fmt.Errorf("free shadow %v: %w", p.shadow, err)
	}
	if len(m.spare) < maxSpare {
		m.spare = append(m.spare, p.orig)
	}
	p.orig = nil
	return nil
}

// maxSpare bounds the page buffers kept for reuse: a page that is paged out
// and in repeatedly does not allocate each time.
const maxSpare = 16

func (m *Manager) pageBuf() []byte {
	if n := len(m.spare); n > 0 {
		b := m.spare[n-1]
		m.spare = m.spare[:n-1]
		return b
	}
	return make([]byte, introspect.PageSize)
}

func (m *Manager) retryLeftovers(pk pageKey) error {
	var errs []error
	m.leftovers = slices.DeleteFunc(m.leftovers, func(p *page) bool {
		if p.pageKey != pk {
			return false
		}
		err := m.teardown(p)
		errs = append(errs, err)
		return err == nil
	})
	return errors.Join(errs...)
}

// ViewGone tells the manager that view no longer exists (destroyed with
// all its mappings), so leftovers in it only need their shadows freed.
func (m *Manager) ViewGone(view introspect.View) {
	for _, p := range m.leftovers {
		if p.view == view {
			p.unmapped, p.restored = true, true
		}
	}
	for _, p := range m.pages {
		if p.view == view {
			p.unmapped, p.restored = true, true
		}
	}
}

// Close removes every breakpoint and restores every frame, continuing past
// errors; what failed is kept, and a later Close retries it.
func (m *Manager) Close() error {
	var errs []error
	for _, b := range m.Breakpoints() {
		for b.refs.Total() > 0 {
			if err := m.Remove(b.Key, b.Tag()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Pages of breakpoints whose disarm failed half-way.
	for pk, p := range m.pages {
		delete(m.pages, pk)
		m.leftovers = append(m.leftovers, p)
	}
	m.leftovers = slices.DeleteFunc(m.leftovers, func(p *page) bool {
		err := m.teardown(p)
		if err != nil {
			errs = append(errs, err)
		}
		return err == nil
	})
	return errors.Join(errs...)
}

// Pending returns the number of shadows left to restore after failures.
func (m *Manager) Pending() int { return len(m.leftovers) + len(m.pages) }
