package xen

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

var le = binary.LittleEndian

// ErrBadRequest is returned (wrapped) for a ring request that is not a
// valid vm_event request of this interface version.
var ErrBadRequest = errors.New("bad vm_event request")

// ErrUnhandledReason is returned (wrapped) for a well-formed request whose
// reason this driver does not turn into a driver.Event. The vCPU must still
// be answered.
var ErrUnhandledReason = errors.New("unhandled vm_event reason")

// Request is a decoded vm_event request (vm_event_request_t): the header,
// the reason-specific fields this driver uses, and the x86 registers.
type Request struct {
	Version   uint32
	Flags     uint32
	Reason    uint32
	VCPU      uint32
	Altp2mIdx uint16

	// MEM_ACCESS.
	GFN         uint64
	Offset      uint64
	GLA         uint64
	AccessFlags uint32
	// SOFTWARE_BREAKPOINT and DEBUG_EXCEPTION (struct vm_event_debug);
	// SINGLESTEP sets GFN only.
	InsnLength uint32
	TrapType   uint8

	Regs amd64.Registers
	// Registers of vm_event_regs_x86 that amd64.Registers lacks; kept so
	// a response with new registers echoes them.
	DR6, DR7, STAR, GDTRBase uint64
	GDTRLimit                uint16
}

// DecodeRequest decodes one ring entry. It checks the interface version and
// nothing else; Event validates the rest.
func DecodeRequest(b *[abi.RequestSize]byte) (Request, error) {
	q := Request{
		Version:   le.Uint32(b[abi.OffVersion:]),
		Flags:     le.Uint32(b[abi.OffFlags:]),
		Reason:    le.Uint32(b[abi.OffReason:]),
		VCPU:      le.Uint32(b[abi.OffVCPUID:]),
		Altp2mIdx: le.Uint16(b[abi.OffAltp2mIdx:]),
	}
	if q.Version != abi.InterfaceVersion {
		return q, fmt.Errorf("%w: interface version %#x, want %#x", ErrBadRequest, q.Version, abi.InterfaceVersion)
	}
	u := b[abi.OffU:abi.OffData]
	switch q.Reason {
	case abi.ReasonMemAccess:
		q.GFN = le.Uint64(u[abi.OffMemAccessGFN:])
		q.Offset = le.Uint64(u[abi.OffMemAccessOffset:])
		q.GLA = le.Uint64(u[abi.OffMemAccessGLA:])
		q.AccessFlags = le.Uint32(u[abi.OffMemAccessFlags:])
	case abi.ReasonSingleStep:
		q.GFN = le.Uint64(u[abi.OffSingleStepGFN:])
	case abi.ReasonSoftwareBreakpoint, abi.ReasonDebugException:
		q.GFN = le.Uint64(u[abi.OffDebugGFN:])
		q.InsnLength = le.Uint32(u[abi.OffDebugInsnLength:])
		q.TrapType = u[abi.OffDebugType]
	}
	decodeRegs(b[abi.OffData:abi.OffData+abi.RegsX86Size], &q)
	return q, nil
}

// selector decodes struct vm_event_x86_selector_reg (limit:20, ar:12; the
// limit is in 4 KiB units when the granularity bit is set) into a Segment
// with the access rights in VMX layout.
func selector(v uint32, sel uint16, base uint64) amd64.Segment {
	limit := v & 0xfffff
	ar := v >> 20
	if ar&(1<<11) != 0 { // G
		limit = limit<<12 | 0xfff
	}
	return amd64.Segment{Selector: sel, Base: base, Limit: limit, Attr: ARToVMX(ar)}
}

// ARToVMX converts Xen's 12-bit segment attributes (type, S, DPL, P in bits
// 0-7; AVL, L, D/B, G in bits 8-11) to the VMX access-rights layout that
// amd64.Segment uses (the upper four in bits 12-15).
func ARToVMX(ar uint32) uint32 { return ar&0xff | (ar&0xf00)<<4 }

// ARFromVMX is the inverse of ARToVMX.
func ARFromVMX(vmx uint32) uint32 { return vmx&0xff | (vmx>>4)&0xf00 }

func decodeRegs(d []byte, q *Request) {
	u64 := func(off int) uint64 { return le.Uint64(d[off:]) }
	r := &q.Regs
	r.RAX, r.RCX, r.RDX, r.RBX = u64(abi.OffRegsRAX), u64(abi.OffRegsRCX), u64(abi.OffRegsRDX), u64(abi.OffRegsRBX)
	r.RSP, r.RBP, r.RSI, r.RDI = u64(abi.OffRegsRSP), u64(abi.OffRegsRBP), u64(abi.OffRegsRSI), u64(abi.OffRegsRDI)
	r.R8, r.R9, r.R10, r.R11 = u64(abi.OffRegsR8), u64(abi.OffRegsR9), u64(abi.OffRegsR10), u64(abi.OffRegsR11)
	r.R12, r.R13, r.R14, r.R15 = u64(abi.OffRegsR12), u64(abi.OffRegsR13), u64(abi.OffRegsR14), u64(abi.OffRegsR15)
	r.RFLAGS, r.RIP = u64(abi.OffRegsRFLAGS), u64(abi.OffRegsRIP)
	r.CR0, r.CR2, r.CR3, r.CR4 = u64(abi.OffRegsCR0), u64(abi.OffRegsCR2), u64(abi.OffRegsCR3), u64(abi.OffRegsCR4)
	r.SysenterEIP = u64(abi.OffRegsSysenterEIP)
	r.EFER, r.LSTAR = u64(abi.OffRegsMsrEFER), u64(abi.OffRegsMsrLSTAR)
	r.FSBase, r.GSBase, r.KernelGSBase = u64(abi.OffRegsFSBase), u64(abi.OffRegsGSBase), u64(abi.OffRegsShadowGS)
	sel := func(off int) uint16 { return le.Uint16(d[off:]) }
	ar := func(off int) uint32 { return le.Uint32(d[off:]) }
	b32 := func(off int) uint64 { return uint64(le.Uint32(d[off:])) }
	r.CS = selector(ar(abi.OffRegsCS), sel(abi.OffRegsCSSel), b32(abi.OffRegsCSBase))
	r.SS = selector(ar(abi.OffRegsSS), sel(abi.OffRegsSSSel), b32(abi.OffRegsSSBase))
	r.DS = selector(ar(abi.OffRegsDS), sel(abi.OffRegsDSSel), b32(abi.OffRegsDSBase))
	r.ES = selector(ar(abi.OffRegsES), sel(abi.OffRegsESSel), b32(abi.OffRegsESBase))
	r.FS = selector(ar(abi.OffRegsFS), sel(abi.OffRegsFSSel), r.FSBase)
	r.GS = selector(ar(abi.OffRegsGS), sel(abi.OffRegsGSSel), r.GSBase)
	q.DR6, q.DR7, q.STAR, q.GDTRBase = u64(abi.OffRegsDR6), u64(abi.OffRegsDR7), u64(abi.OffRegsMsrSTAR), u64(abi.OffRegsGDTRBase)
	q.GDTRLimit = sel(abi.OffRegsGDTRLimit)
}

// View returns the altp2m view the vCPU was in when the event happened.
func (q *Request) View() introspect.View {
	if q.Flags&abi.FlagAlternateP2M != 0 {
		return introspect.View(q.Altp2mIdx)
	}
	return introspect.DefaultView
}

// Event converts a request into a driver.Event for a domain with nvcpus
// vCPUs. A vCPU id out of range or an impossible field is ErrBadRequest; a
// reason the driver does not report is ErrUnhandledReason.
func (q *Request) Event(nvcpus int) (*driver.Event, error) {
	if q.VCPU >= uint32(nvcpus) {
		return nil, fmt.Errorf("%w: vCPU %d of %d", ErrBadRequest, q.VCPU, nvcpus)
	}
	ev := &driver.Event{VCPU: introspect.VCPU(q.VCPU), View: q.View(), Regs: q.Regs}
	switch q.Reason {
	case abi.ReasonMemAccess:
		if q.Offset >= abi.PageSize {
			return nil, fmt.Errorf("%w: mem_access offset %#x", ErrBadRequest, q.Offset)
		}
		if q.GFN > maxGuestGfn {
			return nil, fmt.Errorf("%w: mem_access gfn %#x", ErrBadRequest, q.GFN)
		}
		ev.Reason = driver.ReasonMemoryAccess
		ev.GPA = introspect.Gfn(q.GFN).Pa() + introspect.Pa(q.Offset)
		if q.AccessFlags&abi.MemAccessGLAValid != 0 {
			ev.GVA = introspect.Va(q.GLA)
		}
		ev.Access = introspect.Access(q.AccessFlags & (abi.MemAccessR | abi.MemAccessW | abi.MemAccessX))
		if ev.Access == introspect.AccessNone {
			return nil, fmt.Errorf("%w: mem_access without R, W or X", ErrBadRequest)
		}
	case abi.ReasonSoftwareBreakpoint:
		if q.InsnLength == 0 || q.InsnLength > 15 {
			return nil, fmt.Errorf("%w: breakpoint instruction length %d", ErrBadRequest, q.InsnLength)
		}
		ev.Reason = driver.ReasonInterrupt
		ev.Vector = abi.VectorBreakpoint
		ev.InstructionLength = uint8(q.InsnLength)
	case abi.ReasonSingleStep:
		ev.Reason = driver.ReasonSingleStep
	default:
		return nil, fmt.Errorf("%w: reason %d", ErrUnhandledReason, q.Reason)
	}
	return ev, nil
}

// Reinjection returns the arguments of xendevicemodel_inject_event that
// deliver the request's software breakpoint to the guest: vector, event
// type and instruction length.
func (q *Request) Reinjection() (vector, typ, insnLen uint8, err error) {
	if q.Reason != abi.ReasonSoftwareBreakpoint {
		return 0, 0, 0, fmt.Errorf("reinject: event reason %d is not a software breakpoint", q.Reason)
	}
	if q.InsnLength == 0 || q.InsnLength > 15 {
		return 0, 0, 0, fmt.Errorf("%w: breakpoint instruction length %d", ErrBadRequest, q.InsnLength)
	}
	typ = q.TrapType
	if typ == 0 {
		// Xen always reports INT3 as a software exception; be explicit
		// if a request leaves it unset.
		typ = abi.EventTypeSWException
	}
	return abi.VectorBreakpoint, typ, uint8(q.InsnLength), nil
}

// WireResponse is a vm_event response before encoding.
type WireResponse struct {
	Flags     uint32
	Reason    uint32
	VCPU      uint32
	Altp2mIdx uint16
	// FastSingleStepView is u.fast_singlestep.p2midx: the view Xen switches
	// the vCPU to after the fast single-step.
	FastSingleStepView uint16
	// Regs is written to data.regs.x86 when Flags has abi.FlagSetRegisters.
	Regs *Request
}

// BuildResponse turns a driver.Response to request q into the wire
// response. The vCPU-paused flag is echoed so Xen unpauses the vCPU.
//
// SetView switches the vCPU to r.View (ALTERNATE_P2M with altp2m_idx).
// FastSingleStep runs one instruction in the vCPU's view after that switch
// and then returns to the view of the event (fast_singlestep.p2midx), so
// {FastSingleStep, SetView, View: 0} is the seed's "fast single-step in the
// default view" (Xen runs the view switch, then hvm_fast_singlestep, in
// vm_event_resume). Single-step toggles, fast single-steps, view switches
// and new registers all need a synchronous (vCPU-paused) event; Xen
// ignores them otherwise, so asking for them on an asynchronous event is an
// error here.
func BuildResponse(q *Request, r driver.Response) (WireResponse, error) {
	w := WireResponse{Flags: q.Flags & abi.FlagVCPUPaused, Reason: q.Reason, VCPU: q.VCPU}
	paused := q.Flags&abi.FlagVCPUPaused != 0
	if (r.FastSingleStep || r.ToggleSingleStep || r.SetView || r.Registers != nil) && !paused {
		return w, fmt.Errorf("response to vm_event reason %d: vCPU %d was not paused by the event", q.Reason, q.VCPU)
	}
	if r.FastSingleStep && r.ToggleSingleStep {
		return w, errors.New("response: fast single-step and single-step toggle are exclusive")
	}
	if r.SetView {
		w.Flags |= abi.FlagAlternateP2M
		w.Altp2mIdx = uint16(r.View)
	}
	if r.FastSingleStep {
		w.Flags |= abi.FlagFastSingleStep
		w.FastSingleStepView = uint16(q.View())
	}
	if r.ToggleSingleStep {
		w.Flags |= abi.FlagToggleSingleStep
	}
	if r.Registers != nil {
		regs := *q
		regs.Regs = *r.Registers
		w.Regs = &regs
		w.Flags |= abi.FlagSetRegisters
	}
	return w, nil
}

// Encode writes the response in vm_event_response_t layout into b.
func (w *WireResponse) Encode(b *[abi.ResponseSize]byte) {
	clear(b[:])
	le.PutUint32(b[abi.OffVersion:], abi.InterfaceVersion)
	le.PutUint32(b[abi.OffFlags:], w.Flags)
	le.PutUint32(b[abi.OffReason:], w.Reason)
	le.PutUint32(b[abi.OffVCPUID:], w.VCPU)
	le.PutUint16(b[abi.OffAltp2mIdx:], w.Altp2mIdx)
	if w.Flags&abi.FlagFastSingleStep != 0 {
		le.PutUint16(b[abi.OffU+abi.OffFastSingleStepP2MIdx:], w.FastSingleStepView)
	}
	if w.Regs != nil {
		encodeRegs(b[abi.OffData:abi.OffData+abi.RegsX86Size], w.Regs)
	}
}

func encodeRegs(d []byte, q *Request) {
	p64 := func(off int, v uint64) { le.PutUint64(d[off:], v) }
	r := &q.Regs
	p64(abi.OffRegsRAX, r.RAX)
	p64(abi.OffRegsRCX, r.RCX)
	p64(abi.OffRegsRDX, r.RDX)
	p64(abi.OffRegsRBX, r.RBX)
	p64(abi.OffRegsRSP, r.RSP)
	p64(abi.OffRegsRBP, r.RBP)
	p64(abi.OffRegsRSI, r.RSI)
	p64(abi.OffRegsRDI, r.RDI)
	p64(abi.OffRegsR8, r.R8)
	p64(abi.OffRegsR9, r.R9)
	p64(abi.OffRegsR10, r.R10)
	p64(abi.OffRegsR11, r.R11)
	p64(abi.OffRegsR12, r.R12)
	p64(abi.OffRegsR13, r.R13)
	p64(abi.OffRegsR14, r.R14)
	p64(abi.OffRegsR15, r.R15)
	p64(abi.OffRegsRFLAGS, r.RFLAGS)
	p64(abi.OffRegsDR6, q.DR6)
	p64(abi.OffRegsDR7, q.DR7)
	p64(abi.OffRegsRIP, r.RIP)
	p64(abi.OffRegsCR0, r.CR0)
	p64(abi.OffRegsCR2, r.CR2)
	p64(abi.OffRegsCR3, r.CR3)
	p64(abi.OffRegsCR4, r.CR4)
	p64(abi.OffRegsSysenterEIP, r.SysenterEIP)
	p64(abi.OffRegsMsrEFER, r.EFER)
	p64(abi.OffRegsMsrSTAR, q.STAR)
	p64(abi.OffRegsMsrLSTAR, r.LSTAR)
	p64(abi.OffRegsGDTRBase, q.GDTRBase)
	p64(abi.OffRegsFSBase, r.FSBase)
	p64(abi.OffRegsGSBase, r.GSBase)
	p64(abi.OffRegsShadowGS, r.KernelGSBase)
	segs := []struct {
		s                      amd64.Segment
		offAR, offSel, offBase int
	}{
		{r.CS, abi.OffRegsCS, abi.OffRegsCSSel, abi.OffRegsCSBase},
		{r.SS, abi.OffRegsSS, abi.OffRegsSSSel, abi.OffRegsSSBase},
		{r.DS, abi.OffRegsDS, abi.OffRegsDSSel, abi.OffRegsDSBase},
		{r.ES, abi.OffRegsES, abi.OffRegsESSel, abi.OffRegsESBase},
		{r.FS, abi.OffRegsFS, abi.OffRegsFSSel, -1},
		{r.GS, abi.OffRegsGS, abi.OffRegsGSSel, -1},
	}
	for _, s := range segs {
		ar := ARFromVMX(s.s.Attr)
		limit := s.s.Limit
		if ar&(1<<11) != 0 {
			limit >>= 12
		}
		le.PutUint32(d[s.offAR:], limit&0xfffff|ar<<20)
		le.PutUint16(d[s.offSel:], s.s.Selector)
		if s.offBase >= 0 {
			le.PutUint32(d[s.offBase:], uint32(s.s.Base))
		}
	}
	le.PutUint16(d[abi.OffRegsGDTRLimit:], q.GDTRLimit)
}
