// Package ptm monitors the guest page-table entries that translate chosen
// virtual addresses, so that an introspector learns when the guest pages
// those addresses out and in.
//
// For each watched (VA, translation root, view) the monitor write-protects,
// in the view, every page-table frame of the VA's walk. A guest store to one
// of them raises a memory-access event; the event loop calls MarkDirty with
// the written GPA and lets the vCPU execute the store with a single-step in
// the default view, then calls ProcessDirty, which re-reads the dirty entries
// and walks the affected VAs again. A change of translation is reported as
// PageOut (the VA lost its frame), PageIn (it gained one), or both (the
// frame changed). Changes at an upper level are handled the same way: a
// cleared PDE removes the whole subtree, and a new table frame becomes part
// of the walk and is protected in turn. Large pages (2 MiB, 1 GiB) end the
// walk early. Stores that only set Accessed or Dirty bits (the CPU's own
// updates) produce no event. Table frames shared by several watches are
// protected once and reference-counted.
package ptm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/internal/tagref"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// Driver is what the monitor needs from a hypervisor.
type Driver interface {
	driver.PhysReader
	driver.Views
}

// Kind says what happened to a watched page.
type Kind uint8

// Kinds of events.
const (
	PageIn Kind = iota + 1
	PageOut
)

func (k Kind) String() string {
	switch k {
	case PageIn:
		return "page-in"
	case PageOut:
		return "page-out"
	}
	return "unknown"
}

// Event is a change in the translation of a watched page.
type Event struct {
	Kind Kind
	VA   introspect.Va // page base
	Root introspect.Pa
	View introspect.View
	// Gfn is the 4 KiB frame that backs VA: the new one for PageIn, the
	// old one for PageOut.
	Gfn introspect.Gfn
	// PageSize is the size of the guest page that maps VA (PageIn) or
	// mapped it (PageOut).
	PageSize uint64
	// Tags are the watch's tags; valid until the watch changes.
	Tags []string
}

type watchKey struct {
	va   introspect.Va
	root introspect.Pa
	view introspect.View
}

type watch struct {
	watchKey
	refs tagref.Counts

	path    []entryKey
	present bool
	gfn     introspect.Gfn
	size    uint64
}

type entryKey struct {
	pa   introspect.Pa
	view introspect.View
}

type entry struct {
	value   uint64
	watches []*watch
}

type tableKey struct {
	gfn  introspect.Gfn
	view introspect.View
}

type table struct {
	refs  int
	saved introspect.Access
}

// Monitor watches page-table entries. It is not safe for concurrent use:
// the event loop owns it.
type Monitor struct {
	d    Driver
	mode paging.Mode

	watches map[watchKey]*watch
	entries map[entryKey]*entry
	tables  map[tableKey]*table
	dirty   map[introspect.VCPU][]entryKey
	// unprotect failures, retried by Close
	leftovers map[tableKey]introspect.Access

	events  []Event
	scratch []*watch
}

// New returns a monitor for a guest using paging mode.
func New(d Driver, mode paging.Mode) *Monitor {
	return &Monitor{
		d:         d,
		mode:      mode,
		watches:   make(map[watchKey]*watch),
		entries:   make(map[entryKey]*entry),
		tables:    make(map[tableKey]*table),
		dirty:     make(map[introspect.VCPU][]entryKey),
		leftovers: make(map[tableKey]introspect.Access),
	}
}

// Monitor starts watching the page of va under root in view (or adds a
// reference with tag to an existing watch).
func (m *Monitor) Monitor(va introspect.Va, root introspect.Pa, view introspect.View, tag string) error {
	k := watchKey{va.PageBase(), root, view}
	if w := m.watches[k]; w != nil {
		w.refs.Add(tag)
		return nil
	}
	w := &watch{watchKey: k}
	w.refs.Add(tag)
	if _, err := m.rewalk(w, nil); err != nil {
		m.release(w)
		return fmt.Errorf("monitor %v: %w", va, err)
	}
	m.watches[k] = w
	return nil
}

// Unmonitor drops one reference with tag; the last one unprotects the
// tables no other watch needs.
func (m *Monitor) Unmonitor(va introspect.Va, root introspect.Pa, view introspect.View, tag string) error {
	k := watchKey{va.PageBase(), root, view}
	w := m.watches[k]
	if w == nil || !w.refs.Has(tag) {
		return fmt.Errorf("unmonitor %v tag %q: not monitored", va, tag)
	}
	if !w.refs.Drop(tag) {
		return nil
	}
	delete(m.watches, k)
	if err := m.release(w); err != nil {
		return fmt.Errorf("unmonitor %v: %w", va, err)
	}
	return nil
}

// Present returns the frame that currently backs a watched page.
func (m *Monitor) Present(va introspect.Va, root introspect.Pa, view introspect.View) (introspect.Gfn, bool) {
	w := m.watches[watchKey{va.PageBase(), root, view}]
	if w == nil || !w.present {
		return 0, false
	}
	return w.gfn, true
}

// Protected reports whether the monitor write-protects gfn in view.
func (m *Monitor) Protected(view introspect.View, gfn introspect.Gfn) bool {
	return m.tables[tableKey{gfn, view}] != nil
}

// Len returns the number of watched pages.
func (m *Monitor) Len() int { return len(m.watches) }

// MarkDirty records that vcpu wrote gpa in view. It reports whether gpa is
// a watched entry; other writes are ignored.
func (m *Monitor) MarkDirty(gpa introspect.Pa, view introspect.View, vcpu introspect.VCPU) bool {
	k := entryKey{gpa &^ 7, view}
	if m.entries[k] == nil {
		return false
	}
	d := m.dirty[vcpu]
	if !slices.Contains(d, k) {
		m.dirty[vcpu] = append(d, k)
	}
	return true
}

// ProcessDirty re-reads the entries vcpu wrote since its last call and
// returns the resulting page-ins and page-outs. The slice is reused by the
// next call.
func (m *Monitor) ProcessDirty(vcpu introspect.VCPU) ([]Event, error) {
	m.events = m.events[:0]
	d := m.dirty[vcpu]
	if len(d) == 0 {
		return m.events, nil
	}
	var errs []error
	var buf [8]byte
	for _, k := range d {
		e := m.entries[k]
		if e == nil {
			continue // no longer watched
		}
		if err := m.d.ReadPhysical(k.pa, buf[:]); err != nil {
			errs = append(errs, fmt.Errorf("read entry %v: %w", k.pa, err))
			continue
		}
		v := binary.LittleEndian.Uint64(buf[:])
		changed := (v ^ e.value) &^ (paging.PTEAccessed | paging.PTEDirty)
		e.value = v
		if changed == 0 {
			continue // the CPU's A/D update, or a store of the same value
		}
		m.scratch = append(m.scratch[:0], e.watches...)
		for _, w := range m.scratch {
			if m.watches[w.watchKey] != w {
				continue
			}
			if _, err := m.rewalk(w, &m.events); err != nil {
				errs = append(errs, err)
			}
		}
	}
	m.dirty[vcpu] = d[:0]
	return m.events, errors.Join(errs...)
}

// rewalk walks w's VA again, moves its protection to the tables of the new
// walk, and appends the change of translation to out (when not nil).
func (m *Monitor) rewalk(w *watch, out *[]Event) (changed bool, err error) {
	walk, werr := paging.WalkVA(m.d, w.root, w.va, m.mode)
	if werr != nil {
		if _, notPresent := paging.PageFault(werr); !notPresent {
			return false, fmt.Errorf("walk %v: %w", w.va, werr)
		}
	}
	var newPath [5]entryKey
	for i := 0; i < walk.N; i++ {
		newPath[i] = entryKey{walk.Steps[i].EntryPA, w.view}
	}
	// Protect the new tables first, so that a failure leaves the old
	// protection in place.
	var added []entryKey
	for i := 0; i < walk.N; i++ {
		k := newPath[i]
		if slices.Contains(w.path, k) {
			m.entries[k].value = walk.Steps[i].Entry
			continue
		}
		if err := m.addEntry(k, w, walk.Steps[i].Entry); err != nil {
			for _, a := range added {
				m.dropEntry(a, w)
			}
			return false, err
		}
		added = append(added, k)
	}
	var errs []error
	for _, k := range w.path {
		if !slices.Contains(newPath[:walk.N], k) {
			if err := m.dropEntry(k, w); err != nil {
				errs = append(errs, err)
			}
		}
	}
	w.path = append(w.path[:0], newPath[:walk.N]...)

	present := werr == nil
	var gfn introspect.Gfn
	if present {
		gfn = walk.PA.Gfn()
	}
	ev := Event{VA: w.va, Root: w.root, View: w.view, Tags: w.refs.Tags()}
	if w.present && (!present || gfn != w.gfn) {
		changed = true
		if out != nil {
			ev.Kind, ev.Gfn, ev.PageSize = PageOut, w.gfn, w.size
			*out = append(*out, ev)
		}
	}
	if present && (!w.present || gfn != w.gfn) {
		changed = true
		if out != nil {
			ev.Kind, ev.Gfn, ev.PageSize = PageIn, gfn, walk.PageSize
			*out = append(*out, ev)
		}
	}
	w.present, w.gfn, w.size = present, gfn, walk.PageSize
	return changed, errors.Join(errs...)
}

func (m *Monitor) addEntry(k entryKey, w *watch, value uint64) error {
	e := m.entries[k]
	if e == nil {
		if err := m.protect(tableKey{k.pa.Gfn(), k.view}); err != nil {
			return err
		}
		e = &entry{value: value}
		m.entries[k] = e
	}
	e.value = value
	e.watches = append(e.watches, w)
	return nil
}

func (m *Monitor) dropEntry(k entryKey, w *watch) error {
	e := m.entries[k]
	if e == nil {
		return nil
	}
	e.watches = slices.DeleteFunc(e.watches, func(x *watch) bool { return x == w })
	if len(e.watches) > 0 {
		return nil
	}
	delete(m.entries, k)
	return m.unprotect(tableKey{k.pa.Gfn(), k.view})
}

func (m *Monitor) protect(tk tableKey) error {
	if t := m.tables[tk]; t != nil {
		t.refs++
		return nil
	}
	saved, err := m.d.GetAccess(tk.view, tk.gfn)
	if err != nil {
		return fmt.Errorf("get access of table %v: %w", tk.gfn, err)
	}
	if s, ok := m.leftovers[tk]; ok {
		saved = s // our own protection is still in place
		delete(m.leftovers, tk)
	}
	if err := m.d.SetAccess(tk.view, tk.gfn, saved&^introspect.AccessW); err != nil {
		return fmt.Errorf("write-protect table %v: %w", tk.gfn, err)
	}
	m.tables[tk] = &table{refs: 1, saved: saved}
	return nil
}

func (m *Monitor) unprotect(tk tableKey) error {
	t := m.tables[tk]
	if t == nil {
		return nil
	}
	t.refs--
	if t.refs > 0 {
		return nil
	}
	delete(m.tables, tk)
	if err := m.d.SetAccess(tk.view, tk.gfn, t.saved); err != nil {
		m.leftovers[tk] = t.saved
		return fmt.Errorf("unprotect table %v: %w", tk.gfn, err)
	}
	return nil
}

// release drops every entry of w's path.
func (m *Monitor) release(w *watch) error {
	var errs []error
	for _, k := range w.path {
		if err := m.dropEntry(k, w); err != nil {
			errs = append(errs, err)
		}
	}
	w.path = w.path[:0]
	return errors.Join(errs...)
}

// ViewGone tells the monitor that view was destroyed: its protections went
// with it.
func (m *Monitor) ViewGone(view introspect.View) {
	for tk := range m.leftovers {
		if tk.view == view {
			delete(m.leftovers, tk)
		}
	}
}

// Close stops every watch and restores every table's access, continuing
// past errors; failed restores are retried by a later Close.
func (m *Monitor) Close() error {
	var errs []error
	for k, w := range m.watches {
		delete(m.watches, k)
		if err := m.release(w); err != nil {
			errs = append(errs, err)
		}
	}
	clear(m.dirty)
	for tk, saved := range m.leftovers {
		if err := m.d.SetAccess(tk.view, tk.gfn, saved); err != nil {
			errs = append(errs, fmt.Errorf("unprotect table %v: %w", tk.gfn, err))
			continue
		}
		delete(m.leftovers, tk)
	}
	return errors.Join(errs...)
}

// Pending returns the number of table protections left to undo.
func (m *Monitor) Pending() int { return len(m.leftovers) + len(m.tables) }
