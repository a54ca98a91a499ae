package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// ErrIdle is returned by WaitEvent when no vCPU can make progress: every
// script has finished, or the guest is paused and no event is queued.
var ErrIdle = errors.New("sim: guest idle")

// ErrInjected is the error returned by a driver call that Fail selected.
var ErrInjected = errors.New("sim: injected failure")

// DriverCalls names the driver methods whose failure Fail can inject.
var DriverCalls = []string{
	"ReadPhysical", "WritePhysical", "Registers", "SetRegisters",
	"Pause", "Resume",
	"CreateView", "DestroyView", "SwitchView", "ChangeGFN", "SetAccess", "GetAccess",
	"AllocateFrame", "FreeFrame", "InjectPageFault",
	"EnableMonitor", "DisableMonitor", "WaitEvent", "Respond", "Close",
}

// Config sizes and seeds a Machine.
type Config struct {
	// Frames is the size of guest RAM in 4 KiB frames (default 1024).
	Frames int
	// VCPUs is the number of vCPUs (default 1).
	VCPUs int
	// Seed seeds the scheduler.
	Seed uint64
	// Latency is the probability, at each scheduling decision, that a
	// raised event stays queued while another vCPU runs (0: deliver at once).
	Latency float64
	// MaxSteps bounds the steps one WaitEvent may run (default 1<<20), so a
	// guest that loops without events cannot hang a test.
	MaxSteps int
}

type view struct {
	def   introspect.Access
	remap map[introspect.Gfn]introspect.Gfn
	acc   map[introspect.Gfn]introspect.Access
}

type failure struct {
	nth int
	err error
}

// Machine is the modelled hypervisor and guest. Its methods are safe for
// concurrent use.
type Machine struct {
	mu  sync.Mutex
	cfg Config
	rng *rand.Rand

	ram    []byte
	frames int
	extra  map[introspect.Gfn][]byte
	nextX  introspect.Gfn
	// guest frame pool
	nextFree introspect.Gfn
	free     []introspect.Gfn

	views    map[introspect.View]*view
	nextView introspect.View

	vcpus    []*vcpu
	queue    []*vcpu // vCPUs whose raised event awaits delivery, in order
	monitors [3]bool
	paused   int
	closed   bool

	calls         map[string]int
	fail          map[string]failure
	obs           []Observation
	foreignWrites int
	steps         uint64
}

// New returns a machine with zeroed RAM, vCPUs with zero registers in the
// default view and empty scripts.
func New(cfg Config) *Machine {
	if cfg.Frames <= 0 {
		cfg.Frames = 1024
	}
	if cfg.VCPUs <= 0 {
		cfg.VCPUs = 1
	}
	if cfg.MaxSteps <= 0 {
		cfg.MaxSteps = 1 << 20
	}
	m := &Machine{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		ram:      make([]byte, cfg.Frames*introspect.PageSize),
		frames:   cfg.Frames,
		extra:    make(map[introspect.Gfn][]byte),
		nextX:    introspect.Gfn(cfg.Frames),
		nextFree: 1, // frame 0 stays unused, like real-mode memory
		views:    make(map[introspect.View]*view),
		nextView: 1,
		calls:    make(map[string]int),
		fail:     make(map[string]failure),
	}
	for i := 0; i < cfg.VCPUs; i++ {
		c := &vcpu{id: introspect.VCPU(i)}
		c.regs.CR0 = amd64.CR0PG | amd64.CR0WP
		c.regs.CR4 = amd64.CR4PAE
		c.regs.EFER = amd64.EFERLME | amd64.EFERLMA
		m.vcpus = append(m.vcpus, c)
	}
	return m
}

// Fail makes the nth call (counted from 1, from now) of the driver method
// name return ErrInjected. Other calls succeed.
func (m *Machine) Fail(name string, nth int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[name] = failure{nth: m.calls[name] + nth, err: fmt.Errorf("%s call %d: %w", name, m.calls[name]+nth, ErrInjected)}
}

// Calls returns how many times the driver method name was called.
func (m *Machine) Calls(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[name]
}

// call counts a driver call and returns the injected failure, if any.
// The caller holds mu.
func (m *Machine) call(name string) error {
	m.calls[name]++
	if f, ok := m.fail[name]; ok && f.nth == m.calls[name] {
		delete(m.fail, name)
		return f.err
	}
	return nil
}

// frame returns the memory of a frame, guest RAM or allocated.
func (m *Machine) frame(g introspect.Gfn) []byte {
	if uint64(g) < uint64(m.frames) {
		off := int(g) * introspect.PageSize
		return m.ram[off : off+introspect.PageSize : off+introspect.PageSize]
	}
	return m.extra[g]
}

// mapping returns the frame that gfn resolves to in view v and its access.
func (m *Machine) mapping(v introspect.View, g introspect.Gfn) (introspect.Gfn, introspect.Access) {
	if v == introspect.DefaultView {
		return g, introspect.AccessRWX
	}
	vw := m.views[v]
	if vw == nil {
		return g, introspect.AccessRWX
	}
	to, ok := vw.remap[g]
	if !ok {
		to = g
	}
	a, ok := vw.acc[g]
	if !ok {
		a = vw.def
	}
	return to, a
}

// physRange checks that [pa, pa+n) lies in existing frames and calls f per
// page chunk.
func (m *Machine) physRange(pa introspect.Pa, n int, f func(fr []byte, p int, off int) error) error {
	done := 0
	for done < n {
		cur := pa + introspect.Pa(done)
		fr := m.frame(cur.Gfn())
		if fr == nil {
			return fmt.Errorf("sim: physical %v: %w", cur, driver.ErrOutOfRange)
		}
		off := int(cur.Offset())
		k := introspect.PageSize - off
		if k > n-done {
			k = n - done
		}
		if err := f(fr[off:off+k], done, k); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// ReadPhysical reads guest physical memory in the default view.
func (m *Machine) ReadPhysical(pa introspect.Pa, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("ReadPhysical"); err != nil {
		return err
	}
	return m.physRange(pa, len(p), func(fr []byte, at, _ int) error { copy(p[at:], fr); return nil })
}

// WritePhysical writes guest physical memory in the default view. Writes
// that touch guest RAM (not frames from AllocateFrame) are counted by
// ForeignWrites.
func (m *Machine) WritePhysical(pa introspect.Pa, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("WritePhysical"); err != nil {
		return err
	}
	if uint64(pa.Gfn()) < uint64(m.frames) || uint64((pa+introspect.Pa(len(p))-1).Gfn()) < uint64(m.frames) {
		m.foreignWrites++
	}
	return m.physRange(pa, len(p), func(fr []byte, at, k int) error { copy(fr, p[at:at+k]); return nil })
}

// Poke writes guest physical memory without counting it as a driver call
// or foreign write: it is how a test builds the guest.
func (m *Machine) Poke(pa introspect.Pa, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.physRange(pa, len(p), func(fr []byte, at, k int) error { copy(fr, p[at:at+k]); return nil })
}

// Peek reads guest physical memory without counting a driver call.
func (m *Machine) Peek(pa introspect.Pa, p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.physRange(pa, len(p), func(fr []byte, at, _ int) error { copy(p[at:], fr); return nil })
}

// GuestRAM returns a copy of guest RAM (without allocated frames).
func (m *Machine) GuestRAM() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.ram...)
}

// ForeignWrites counts WritePhysical calls that touched guest RAM.
func (m *Machine) ForeignWrites() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.foreignWrites
}

// AllocGuestFrame takes a zeroed frame from the guest's own pool (for page
// tables and pages a test lays out, and for the guest's page-ins).
func (m *Machine) AllocGuestFrame() (introspect.Gfn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allocGuest()
}

func (m *Machine) allocGuest() (introspect.Gfn, error) {
	var g introspect.Gfn
	switch {
	case len(m.free) > 0:
		g = m.free[len(m.free)-1]
		m.free = m.free[:len(m.free)-1]
	case uint64(m.nextFree) < uint64(m.frames):
		g = m.nextFree
		m.nextFree++
	default:
		return 0, fmt.Errorf("sim: guest RAM exhausted (%d frames)", m.frames)
	}
	clear(m.frame(g))
	return g, nil
}

// AllocGuestFrames takes n contiguous zeroed frames aligned to align frames
// from the never-used part of the pool (for large pages).
func (m *Machine) AllocGuestFrames(n, align int) (introspect.Gfn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if align < 1 {
		align = 1
	}
	start := (uint64(m.nextFree) + uint64(align) - 1) / uint64(align) * uint64(align)
	if start+uint64(n) > uint64(m.frames) {
		return 0, fmt.Errorf("sim: no %d aligned frames left", n)
	}
	for g := uint64(m.nextFree); g < start; g++ {
		m.free = append(m.free, introspect.Gfn(g))
	}
	m.nextFree = introspect.Gfn(start + uint64(n))
	return introspect.Gfn(start), nil
}

// VCPUs returns the number of vCPUs.
func (m *Machine) VCPUs() int { return len(m.vcpus) }

// Registers returns a vCPU's registers.
func (m *Machine) Registers(v introspect.VCPU) (amd64.Registers, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Registers"); err != nil {
		return amd64.Registers{}, err
	}
	if int(v) >= len(m.vcpus) {
		return amd64.Registers{}, fmt.Errorf("sim: no vCPU %d", v)
	}
	return m.vcpus[v].regs, nil
}

// SetRegisters replaces a vCPU's registers.
func (m *Machine) SetRegisters(v introspect.VCPU, r *amd64.Registers) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("SetRegisters"); err != nil {
		return err
	}
	if int(v) >= len(m.vcpus) {
		return fmt.Errorf("sim: no vCPU %d", v)
	}
	m.vcpus[v].regs = *r
	return nil
}

// Pause stops all vCPUs; pauses nest.
func (m *Machine) Pause() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Pause"); err != nil {
		return err
	}
	m.paused++
	return nil
}

// Resume undoes one Pause.
func (m *Machine) Resume() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Resume"); err != nil {
		return err
	}
	if m.paused == 0 {
		return errors.New("sim: resume of a running guest")
	}
	m.paused--
	return nil
}

// CreateView makes a view in which every frame maps to itself with def.
func (m *Machine) CreateView(def introspect.Access) (introspect.View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("CreateView"); err != nil {
		return 0, err
	}
	v := m.nextView
	m.nextView++
	m.views[v] = &view{def: def, remap: make(map[introspect.Gfn]introspect.Gfn), acc: make(map[introspect.Gfn]introspect.Access)}
	return v, nil
}

// DestroyView removes a view; vCPUs in it go back to the default view.
func (m *Machine) DestroyView(v introspect.View) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("DestroyView"); err != nil {
		return err
	}
	if m.views[v] == nil {
		return fmt.Errorf("sim: destroy view %d: no such view", v)
	}
	delete(m.views, v)
	for _, c := range m.vcpus {
		if c.view == v {
			c.view = introspect.DefaultView
		}
		if c.fast && c.fastRet == v {
			c.fastRet = introspect.DefaultView
		}
	}
	return nil
}

// SwitchView moves every vCPU to view v.
func (m *Machine) SwitchView(v introspect.View) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("SwitchView"); err != nil {
		return err
	}
	if v != introspect.DefaultView && m.views[v] == nil {
		return fmt.Errorf("sim: switch to view %d: no such view", v)
	}
	for _, c := range m.vcpus {
		c.view = v
	}
	return nil
}

func (m *Machine) changeable(v introspect.View, gs ...introspect.Gfn) (*view, error) {
	vw := m.views[v]
	if vw == nil {
		return nil, fmt.Errorf("sim: view %d: no such view (the default view cannot be changed)", v)
	}
	for _, g := range gs {
		if m.frame(g) == nil {
			return nil, fmt.Errorf("sim: %v: %w", g, driver.ErrOutOfRange)
		}
	}
	return vw, nil
}

// ChangeGFN makes from resolve to the memory of to in view v, with the
// access to has in v (Xen semantics). to == from removes the remap.
func (m *Machine) ChangeGFN(v introspect.View, from, to introspect.Gfn) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("ChangeGFN"); err != nil {
		return err
	}
	vw, err := m.changeable(v, from, to)
	if err != nil {
		return err
	}
	if from == to {
		delete(vw.remap, from)
		return nil
	}
	_, a := m.mapping(v, to)
	vw.remap[from] = to
	vw.acc[from] = a
	return nil
}

// SetAccess sets the access of gfn's entry in view v.
func (m *Machine) SetAccess(v introspect.View, g introspect.Gfn, a introspect.Access) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("SetAccess"); err != nil {
		return err
	}
	vw, err := m.changeable(v, g)
	if err != nil {
		return err
	}
	vw.acc[g] = a
	return nil
}

// GetAccess returns the access of gfn's entry in view v.
func (m *Machine) GetAccess(v introspect.View, g introspect.Gfn) (introspect.Access, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("GetAccess"); err != nil {
		return 0, err
	}
	if v != introspect.DefaultView {
		if _, err := m.changeable(v, g); err != nil {
			return 0, err
		}
	}
	_, a := m.mapping(v, g)
	return a, nil
}

// Mapping returns the frame gfn resolves to in view v and its access (for
// tests; not a driver call).
func (m *Machine) Mapping(v introspect.View, g introspect.Gfn) (introspect.Gfn, introspect.Access) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mapping(v, g)
}

// AllocateFrame adds a zeroed frame above guest RAM.
func (m *Machine) AllocateFrame() (introspect.Gfn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("AllocateFrame"); err != nil {
		return 0, err
	}
	g := m.nextX
	m.nextX++
	m.extra[g] = make([]byte, introspect.PageSize)
	return g, nil
}

// FreeFrame releases a frame from AllocateFrame. It fails while a view
// still maps a frame to it.
func (m *Machine) FreeFrame(g introspect.Gfn) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("FreeFrame"); err != nil {
		return err
	}
	if m.extra[g] == nil {
		return fmt.Errorf("sim: free %v: not an allocated frame", g)
	}
	for id, vw := range m.views {
		for from, to := range vw.remap {
			if to == g {
				return fmt.Errorf("sim: free %v: view %d still maps %v to it", g, id, from)
			}
		}
	}
	delete(m.extra, g)
	for _, vw := range m.views {
		delete(vw.acc, g) // the frame's entries go with it
	}
	return nil
}

// InjectPageFault queues #PF for va on a vCPU; the guest handles it at the
// vCPU's next step.
func (m *Machine) InjectPageFault(v introspect.VCPU, va introspect.Va, code uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("InjectPageFault"); err != nil {
		return err
	}
	if int(v) >= len(m.vcpus) {
		return fmt.Errorf("sim: no vCPU %d", v)
	}
	c := m.vcpus[v]
	c.injected = append(c.injected, va)
	return nil
}

// Close detaches. The model has nothing to release; it records the call.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Close"); err != nil {
		return err
	}
	m.closed = true
	return nil
}

// Pristine returns an error describing everything an introspector left
// changed: views other than the default, allocated frames, monitors, vCPUs
// outside the default view or single-stepping, queued events, pauses.
func (m *Machine) Pristine() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	var ids []int
	for id := range m.views {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, id := range ids {
		errs = append(errs, fmt.Errorf("view %d still exists (%d remaps, %d access entries)", id, len(m.views[introspect.View(id)].remap), len(m.views[introspect.View(id)].acc)))
	}
	if len(m.extra) > 0 {
		errs = append(errs, fmt.Errorf("%d allocated frames not freed", len(m.extra)))
	}
	for i, on := range m.monitors {
		if on {
			errs = append(errs, fmt.Errorf("monitor %d still enabled", i))
		}
	}
	for _, c := range m.vcpus {
		if c.view != introspect.DefaultView {
			errs = append(errs, fmt.Errorf("vCPU %d in view %d", c.id, c.view))
		}
		if c.singleStep || c.fast {
			errs = append(errs, fmt.Errorf("vCPU %d still single-stepping", c.id))
		}
		if c.stopped {
			errs = append(errs, fmt.Errorf("vCPU %d stopped at an unanswered event", c.id))
		}
	}
	if m.paused != 0 {
		errs = append(errs, fmt.Errorf("guest paused (%d)", m.paused))
	}
	return errors.Join(errs...)
}

// Steps returns the number of guest steps executed so far.
func (m *Machine) Steps() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.steps
}
