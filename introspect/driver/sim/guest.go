package sim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// OpKind is what a scripted guest instruction does.
type OpKind uint8

// Op kinds. See the package documentation for their semantics.
const (
	OpCall OpKind = iota + 1
	OpRead
	OpWrite
	OpPageOut
	OpPageIn
	OpSetCR3
)

// Op is one scripted guest step.
type Op struct {
	Kind OpKind
	VA   introspect.Va
	// OpRead: number of bytes, within VA's page.
	N int
	// OpWrite: bytes to store, within VA's page.
	Data []byte
	// OpPageOut, OpPageIn: the level of the entry (1 = PTE, 2 = PDE, ...);
	// 0 means 1.
	Level paging.Level
	// OpPageIn: move the page (or table) to a fresh guest frame, copying its
	// content and freeing the old frame. Not supported for large pages.
	NewFrame bool
	// OpSetCR3: the new CR3.
	Root introspect.Pa
	// OpCall: sets argument registers before the call; called again when
	// the call is retried, so it must be idempotent.
	Regs func(r *amd64.Registers)
	// OpRead, OpWrite, OpPageOut, OpPageIn: RIP reported in events (the
	// address of the guest instruction); 0 leaves RIP unchanged.
	RIP introspect.Va
}

// Call makes a vCPU call the function at va; set (may be nil) sets its
// argument registers.
func Call(va introspect.Va, set func(r *amd64.Registers)) Op {
	return Op{Kind: OpCall, VA: va, Regs: set}
}

// Int3 makes a vCPU execute a breakpoint instruction of its own at va: an
// OpCall at an address whose byte the guest has set to 0xCC.
func Int3(va introspect.Va) Op { return Op{Kind: OpCall, VA: va} }

// Read makes a vCPU read n bytes at va.
func Read(va introspect.Va, n int) Op { return Op{Kind: OpRead, VA: va, N: n} }

// Write makes a vCPU store data at va.
func Write(va introspect.Va, data []byte) Op { return Op{Kind: OpWrite, VA: va, Data: data} }

// PageOut makes the guest clear the present bit of the level entry mapping va.
func PageOut(va introspect.Va, level paging.Level) Op {
	return Op{Kind: OpPageOut, VA: va, Level: level}
}

// PageIn makes the guest set the present bit of the level entry mapping va
// again, in place or (newFrame) on a fresh frame.
func PageIn(va introspect.Va, level paging.Level, newFrame bool) Op {
	return Op{Kind: OpPageIn, VA: va, Level: level, NewFrame: newFrame}
}

// SetCR3 switches the vCPU to another address space.
func SetCR3(root introspect.Pa) Op { return Op{Kind: OpSetCR3, Root: root} }

// ObsKind is a kind of guest observation.
type ObsKind uint8

// Observation kinds.
const (
	ObsCall        ObsKind = iota + 1 // a call completed (VA)
	ObsRead                           // data read (VA, Data, Mismatch)
	ObsWrite                          // data written (VA, Mismatch: went elsewhere than the guest's frame)
	ObsException                      // exception received (Vector, VA, GuestCaused, Injected)
	ObsPageOut                        // the guest paged VA out (Level)
	ObsPageIn                         // the guest paged VA in (Level)
	ObsScriptError                    // an op that cannot execute was skipped (Note)
	ObsUnmonitored                    // a violation or single-step without its monitor (Note)
)

var obsNames = [...]string{"", "call", "read", "write", "exception", "page-out", "page-in", "script-error", "unmonitored"}

func (k ObsKind) String() string {
	if int(k) < len(obsNames) {
		return obsNames[k]
	}
	return "unknown"
}

// Observation is one thing the guest saw.
type Observation struct {
	VCPU   introspect.VCPU
	Kind   ObsKind
	VA     introspect.Va
	Data   []byte
	Vector uint8
	Level  paging.Level
	// GuestCaused: for #BP, the guest's own memory holds 0xCC at VA; for
	// #PF, the guest's own tables do not map VA.
	GuestCaused bool
	// Injected: the #PF came from InjectPageFault.
	Injected bool
	// Mismatch: the bytes read differ from the guest's own memory, or a
	// write did not land in the guest's own frame.
	Mismatch bool
	Note     string
}

func (o Observation) String() string {
	return fmt.Sprintf("vcpu%d %v %v vec=%d data=%x caused=%v injected=%v mismatch=%v %s",
		o.VCPU, o.Kind, o.VA, o.Vector, o.Data, o.GuestCaused, o.Injected, o.Mismatch, o.Note)
}

type vcpu struct {
	id     introspect.VCPU
	regs   amd64.Registers
	view   introspect.View
	script []Op
	pc     int

	singleStep bool
	trap       bool // a single-step trap is due before the next op
	fast       bool
	fastRet    introspect.View
	stopped    bool // raised an event not yet answered
	queued     bool // that event is not yet delivered
	ev         driver.Event

	injected []introspect.Va
	newFrame introspect.Gfn // frame taken for the OpPageIn in progress
	hasNew   bool
}

// Script appends ops to a vCPU's script.
func (m *Machine) Script(v introspect.VCPU, ops ...Op) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(v) >= len(m.vcpus) {
		return fmt.Errorf("sim: no vCPU %d", v)
	}
	c := m.vcpus[v]
	if c.pc > 0 && c.pc >= len(c.script)/2 {
		// Drop the executed ops so that long runs stay flat in memory.
		n := copy(c.script, c.script[c.pc:])
		clear(c.script[n:])
		c.script, c.pc = c.script[:n], 0
	}
	c.script = append(c.script, ops...)
	return nil
}

// Done reports whether every script has finished and no event is pending.
func (m *Machine) Done() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.vcpus {
		if c.pc < len(c.script) || c.stopped || len(c.injected) > 0 {
			return false
		}
	}
	return true
}

// Observations returns a copy of what the guest has observed so far.
func (m *Machine) Observations() []Observation {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.obs)
}

// ResetObservations forgets past observations (benchmarks use it to keep
// memory flat).
func (m *Machine) ResetObservations() {
	m.mu.Lock()
	m.obs = m.obs[:0]
	m.mu.Unlock()
}

func (m *Machine) record(o Observation) { m.obs = append(m.obs, o) }

type status uint8

const (
	stOK    status = iota
	stEvent        // a vCPU event was raised
	stPF           // the guest takes a page fault
	stBad          // the access cannot be made at all (script error)
)

const (
	addrMask2M = 0x000f_ffff_ffe0_0000
	addrMask1G = 0x000f_ffff_c000_0000
)

func (c *vcpu) mode() paging.Mode {
	if c.regs.CR4&amd64.CR4LA57 != 0 {
		return paging.Level5
	}
	return paging.Level4
}

// violation raises a memory-access event, or records an unmonitored
// violation and lets the access proceed (returns false).
func (m *Machine) violation(c *vcpu, gpa introspect.Pa, gva introspect.Va, acc introspect.Access) bool {
	if !m.monitors[driver.MonitorMemoryAccess] {
		m.record(Observation{VCPU: c.id, Kind: ObsUnmonitored, VA: gva, Note: fmt.Sprintf("%v access to %v", acc, gpa)})
		return false
	}
	c.ev = driver.Event{VCPU: c.id, View: c.view, Reason: driver.ReasonMemoryAccess, Regs: c.regs, GPA: gpa, GVA: gva, Access: acc}
	return true
}

// translate walks va for an access as the vCPU's MMU does, in its view.
func (m *Machine) translate(c *vcpu, va introspect.Va, acc introspect.Access) (introspect.Gfn, status) {
	mode := c.mode()
	if !paging.Canonical(va, mode) {
		return 0, stBad
	}
	table := introspect.Pa(amd64.CR3Root(c.regs.CR3))
	var g introspect.Gfn
	for level := paging.Level(mode); level >= 1; level-- {
		epa := table + introspect.Pa(((uint64(va)>>(12+9*uint(level-1)))&0x1ff)*8)
		to, a := m.mapping(c.view, epa.Gfn())
		fr := m.frame(to)
		if fr == nil {
			return 0, stBad
		}
		if !a.Has(introspect.AccessR) && m.violation(c, epa, va, introspect.AccessR) {
			return 0, stEvent
		}
		e := binary.LittleEndian.Uint64(fr[epa.Offset():])
		if e&paging.PTEPresent == 0 {
			return 0, stPF
		}
		leaf := level == 1 || (level <= 3 && e&paging.PTELarge != 0)
		set := uint64(paging.PTEAccessed)
		if leaf && acc == introspect.AccessW {
			set |= paging.PTEDirty
		}
		if e&set != set {
			if !a.Has(introspect.AccessW) && m.violation(c, epa, va, introspect.AccessW) {
				return 0, stEvent
			}
			binary.LittleEndian.PutUint64(fr[epa.Offset():], e|set)
		}
		if leaf {
			switch level {
			case 1:
				g = introspect.Pa(e & paging.AddrMask).Gfn()
			case 2:
				g = introspect.Pa(e&addrMask2M | uint64(va)&(paging.Size2M-1)).Gfn()
			default:
				g = introspect.Pa(e&addrMask1G | uint64(va)&(paging.Size1G-1)).Gfn()
			}
			break
		}
		table = introspect.Pa(e & paging.AddrMask)
	}
	to, a := m.mapping(c.view, g)
	if m.frame(to) == nil || m.frame(g) == nil {
		return 0, stBad
	}
	if !a.Has(acc) && m.violation(c, g.Pa()+introspect.Pa(va.Offset()), va, acc) {
		return 0, stEvent
	}
	return g, stOK
}

// ownWalk walks va in the guest's own memory (no view, no A/D updates)
// down to the entry at level stop. When it cannot get there it returns the
// entry where it stopped (not present, or a large page) and ok false.
func (m *Machine) ownWalk(root introspect.Pa, mode paging.Mode, va introspect.Va, stop paging.Level) (epa introspect.Pa, e uint64, at paging.Level, ok bool) {
	table := introspect.Pa(uint64(root) & paging.AddrMask)
	for level := paging.Level(mode); level >= 1; level-- {
		epa = table + introspect.Pa(((uint64(va)>>(12+9*uint(level-1)))&0x1ff)*8)
		fr := m.frame(epa.Gfn())
		if fr == nil {
			return epa, 0, level, false
		}
		e = binary.LittleEndian.Uint64(fr[epa.Offset():])
		if level == stop {
			return epa, e, level, true
		}
		if e&paging.PTEPresent == 0 || (level <= 3 && e&paging.PTELarge != 0) {
			return epa, e, level, false
		}
		table = introspect.Pa(e & paging.AddrMask)
	}
	return epa, e, 0, false
}

// ownByte returns the byte at va in the guest's own memory.
func (m *Machine) ownByte(c *vcpu, va introspect.Va) (byte, bool) {
	pa, err := paging.Translate(rawReader{m}, introspect.Pa(amd64.CR3Root(c.regs.CR3)), va, c.mode())
	if err != nil {
		return 0, false
	}
	return m.frame(pa.Gfn())[pa.Offset()], true
}

// rawReader reads frames by number without locking (the caller holds mu).
type rawReader struct{ m *Machine }

func (r rawReader) ReadPhysical(pa introspect.Pa, p []byte) error {
	return r.m.physRange(pa, len(p), func(fr []byte, at, _ int) error { copy(p[at:], fr); return nil })
}

// deliverBP delivers #BP to the guest at va.
func (m *Machine) deliverBP(c *vcpu, va introspect.Va) {
	b, ok := m.ownByte(c, va)
	m.record(Observation{VCPU: c.id, Kind: ObsException, Vector: 3, VA: va, GuestCaused: ok && b == 0xcc})
}

// pageFault makes the guest handle #PF for va: it pages in the first
// not-present entry of the walk, if it knows it, by inserting an OpPageIn
// before the op it then retries. It reports false when the guest has no
// mapping to bring back.
func (m *Machine) pageFault(c *vcpu, va introspect.Va, injected bool) bool {
	mode := c.mode()
	root := introspect.Pa(amd64.CR3Root(c.regs.CR3))
	table := introspect.Pa(uint64(root) & paging.AddrMask)
	known := true
	for level := paging.Level(mode); level >= 1; level-- {
		epa := table + introspect.Pa(((uint64(va)>>(12+9*uint(level-1)))&0x1ff)*8)
		fr := m.frame(epa.Gfn())
		if fr == nil {
			known = false
			break
		}
		e := binary.LittleEndian.Uint64(fr[epa.Offset():])
		if e&paging.PTEPresent == 0 {
			if e&paging.AddrMask == 0 {
				known = false
				break
			}
			c.script = slices.Insert(c.script, c.pc, PageIn(va, level, false))
			break
		}
		if level == 1 || (level <= 3 && e&paging.PTELarge != 0) {
			break
		}
		table = introspect.Pa(e & paging.AddrMask)
	}
	m.record(Observation{VCPU: c.id, Kind: ObsException, Vector: 14, VA: va, Injected: injected, GuestCaused: !injected})
	return known
}

func (m *Machine) scriptError(c *vcpu, op *Op, note string) {
	m.record(Observation{VCPU: c.id, Kind: ObsScriptError, VA: op.VA, Note: note})
	c.pc++
}

// exec runs one step of a vCPU: an injected #PF, one op, or an idle
// instruction. It reports whether an event was raised (in c.ev).
func (m *Machine) exec(c *vcpu) bool {
	if len(c.injected) > 0 {
		va := c.injected[0]
		c.injected = c.injected[1:]
		m.pageFault(c, va, true)
		return false
	}
	if c.pc >= len(c.script) {
		return false
	}
	op := &c.script[c.pc]
	switch op.Kind {
	case OpCall:
		if op.Regs != nil {
			op.Regs(&c.regs)
		}
		c.regs.RIP = uint64(op.VA)
		g, st := m.translate(c, op.VA, introspect.AccessX)
		switch st {
		case stEvent:
			return true
		case stPF:
			if !m.pageFault(c, op.VA, false) {
				m.scriptError(c, op, "call of an unmapped address")
			}
			return false
		case stBad:
			m.scriptError(c, op, "call of an invalid address")
			return false
		}
		to, _ := m.mapping(c.view, g)
		if m.frame(to)[op.VA.Offset()] == 0xcc {
			if m.monitors[driver.MonitorBreakpoint] {
				c.ev = driver.Event{VCPU: c.id, View: c.view, Reason: driver.ReasonInterrupt, Regs: c.regs, Vector: 3, InstructionLength: 1}
				return true
			}
			m.deliverBP(c, op.VA)
		} else {
			m.record(Observation{VCPU: c.id, Kind: ObsCall, VA: op.VA})
		}
		c.regs.RIP = uint64(op.VA) + 1
		c.pc++
	case OpRead, OpWrite:
		if op.RIP != 0 {
			c.regs.RIP = uint64(op.RIP)
		}
		n, acc := op.N, introspect.AccessR
		if op.Kind == OpWrite {
			n, acc = len(op.Data), introspect.AccessW
		}
		off := int(op.VA.Offset())
		if n <= 0 || off+n > introspect.PageSize {
			m.scriptError(c, op, "access crosses a page")
			return false
		}
		g, st := m.translate(c, op.VA, acc)
		switch st {
		case stEvent:
			return true
		case stPF:
			if !m.pageFault(c, op.VA, false) {
				m.scriptError(c, op, "access to an unmapped address")
			}
			return false
		case stBad:
			m.scriptError(c, op, "access to an invalid address")
			return false
		}
		to, _ := m.mapping(c.view, g)
		mem, own := m.frame(to)[off:off+n], m.frame(g)[off:off+n]
		if op.Kind == OpRead {
			data := slices.Clone(mem)
			m.record(Observation{VCPU: c.id, Kind: ObsRead, VA: op.VA, Data: data, Mismatch: !bytes.Equal(data, own)})
		} else {
			copy(mem, op.Data)
			m.record(Observation{VCPU: c.id, Kind: ObsWrite, VA: op.VA, Data: op.Data, Mismatch: to != g})
		}
		c.pc++
	case OpPageOut, OpPageIn:
		return m.execPaging(c, op)
	case OpSetCR3:
		c.regs.CR3 = uint64(op.Root)
		c.pc++
	default:
		m.scriptError(c, op, "unknown op")
	}
	return false
}

// execPaging runs OpPageOut and OpPageIn: one store to a page-table entry
// (and, for a move, the copy of the page to its new frame).
func (m *Machine) execPaging(c *vcpu, op *Op) bool {
	if op.RIP != 0 {
		c.regs.RIP = uint64(op.RIP)
	}
	level := op.Level
	if level == 0 {
		level = 1
	}
	if level > paging.Level(c.mode()) {
		m.scriptError(c, op, "no such level")
		return false
	}
	epa, e, at, ok := m.ownWalk(introspect.Pa(amd64.CR3Root(c.regs.CR3)), c.mode(), op.VA, level)
	if !ok {
		switch {
		case e&paging.PTEPresent != 0 || e&paging.AddrMask == 0:
			m.scriptError(c, op, "entry not reachable")
		case op.Kind == OpPageOut:
			c.pc++ // an upper level is out already
		default:
			// Bring the upper level in first.
			c.script = slices.Insert(c.script, c.pc, PageIn(op.VA, at, false))
		}
		return false
	}
	var val uint64
	moved := false
	if op.Kind == OpPageOut {
		if e&paging.PTEPresent == 0 {
			c.pc++ // already out
			return false
		}
		val = e &^ paging.PTEPresent
	} else {
		if e&paging.PTEPresent != 0 {
			c.pc++ // already in (another path paged it in)
			return false
		}
		if e&paging.AddrMask == 0 {
			m.scriptError(c, op, "page-in of an entry never mapped")
			return false
		}
		val = (e | paging.PTEPresent) &^ (paging.PTEAccessed | paging.PTEDirty)
		large := level > 1 && e&paging.PTELarge != 0
		if op.NewFrame && !large {
			if !c.hasNew {
				g, err := m.allocGuest()
				if err != nil {
					m.scriptError(c, op, err.Error())
					return false
				}
				c.newFrame, c.hasNew = g, true
			}
			if _, a := m.mapping(c.view, c.newFrame); !a.Has(introspect.AccessW) &&
				m.violation(c, c.newFrame.Pa(), 0, introspect.AccessW) {
				return true
			}
			moved = true
			val = val&^paging.AddrMask | uint64(c.newFrame.Pa())
		}
	}
	to, a := m.mapping(c.view, epa.Gfn())
	if !a.Has(introspect.AccessW) && m.violation(c, epa, 0, introspect.AccessW) {
		return true
	}
	if moved {
		old := introspect.Pa(e & paging.AddrMask).Gfn()
		dst, _ := m.mapping(c.view, c.newFrame)
		copy(m.frame(dst), m.frame(old))
		m.free = append(m.free, old)
		c.hasNew = false
	}
	binary.LittleEndian.PutUint64(m.frame(to)[epa.Offset():], val)
	kind := ObsPageOut
	if op.Kind == OpPageIn {
		kind = ObsPageIn
	}
	m.record(Observation{VCPU: c.id, Kind: kind, VA: op.VA, Level: level})
	c.pc++
	return false
}
