package xen

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
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
func DecodeRequest(b *[RequestSize]byte) (Request, error) {
	q := Request{
		Version:   le.Uint32(b[offVersion:]),
		Flags:     le.Uint32(b[offFlags:]),
		Reason:    le.Uint32(b[offReason:]),
		VCPU:      le.Uint32(b[offVCPUID:]),
		Altp2mIdx: le.Uint16(b[offAltp2mIdx:]),
	}
	if q.Version != InterfaceVersion {
		return q, fmt.Errorf("%w: interface version %#x, want %#x", ErrBadRequest, q.Version, InterfaceVersion)
	}
	u := b[offU:offData]
	switch q.Reason {
	case ReasonMemAccess:
		q.GFN = le.Uint64(u[offMemAccessGFN:])
		q.Offset = le.Uint64(u[offMemAccessOffset:])
		q.GLA = le.Uint64(u[offMemAccessGLA:])
		q.AccessFlags = le.Uint32(u[offMemAccessFlags:])
	case ReasonSingleStep:
		q.GFN = le.Uint64(u[offSingleStepGFN:])
	case ReasonSoftwareBreakpoint, ReasonDebugException:
		q.GFN = le.Uint64(u[offDebugGFN:])
		q.InsnLength = le.Uint32(u[offDebugInsnLength:])
		q.TrapType = u[offDebugType]
	}
	decodeRegs(b[offData:offData+regsX86Size], &q)
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
	r.RAX, r.RCX, r.RDX, r.RBX = u64(offRegsRAX), u64(offRegsRCX), u64(offRegsRDX), u64(offRegsRBX)
	r.RSP, r.RBP, r.RSI, r.RDI = u64(offRegsRSP), u64(offRegsRBP), u64(offRegsRSI), u64(offRegsRDI)
	r.R8, r.R9, r.R10, r.R11 = u64(offRegsR8), u64(offRegsR9), u64(offRegsR10), u64(offRegsR11)
	r.R12, r.R13, r.R14, r.R15 = u64(offRegsR12), u64(offRegsR13), u64(offRegsR14), u64(offRegsR15)
	r.RFLAGS, r.RIP = u64(offRegsRFLAGS), u64(offRegsRIP)
	r.CR0, r.CR2, r.CR3, r.CR4 = u64(offRegsCR0), u64(offRegsCR2), u64(offRegsCR3), u64(offRegsCR4)
	r.SysenterEIP = u64(offRegsSysenterEIP)
	r.EFER, r.LSTAR = u64(offRegsMsrEFER), u64(offRegsMsrLSTAR)
	r.FSBase, r.GSBase, r.KernelGSBase = u64(offRegsFSBase), u64(offRegsGSBase), u64(offRegsShadowGS)
	sel := func(off int) uint16 { return le.Uint16(d[off:]) }
	ar := func(off int) uint32 { return le.Uint32(d[off:]) }
	b32 := func(off int) uint64 { return uint64(le.Uint32(d[off:])) }
	r.CS = selector(ar(offRegsCS), sel(offRegsCSSel), b32(offRegsCSBase))
	r.SS = selector(ar(offRegsSS), sel(offRegsSSSel), b32(offRegsSSBase))
	r.DS = selector(ar(offRegsDS), sel(offRegsDSSel), b32(offRegsDSBase))
	r.ES = selector(ar(offRegsES), sel(offRegsESSel), b32(offRegsESBase))
	r.FS = selector(ar(offRegsFS), sel(offRegsFSSel), r.FSBase)
	r.GS = selector(ar(offRegsGS), sel(offRegsGSSel), r.GSBase)
	q.DR6, q.DR7, q.STAR, q.GDTRBase = u64(offRegsDR6), u64(offRegsDR7), u64(offRegsMsrSTAR), u64(offRegsGDTRBase)
	q.GDTRLimit = sel(offRegsGDTRLimit)
}

// View returns the altp2m view the vCPU was in when the event happened.
func (q *Request) View() introspect.View {
	if q.Flags&FlagAlternateP2M != 0 {
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
	case ReasonMemAccess:
		if q.Offset >= PageSize {
			return nil, fmt.Errorf("%w: mem_access offset %#x", ErrBadRequest, q.Offset)
		}
		if q.GFN > maxGuestGfn {
			return nil, fmt.Errorf("%w: mem_access gfn %#x", ErrBadRequest, q.GFN)
		}
		ev.Reason = driver.ReasonMemoryAccess
		ev.GPA = introspect.Gfn(q.GFN).Pa() + introspect.Pa(q.Offset)
		if q.AccessFlags&memAccessGLAValid != 0 {
			ev.GVA = introspect.Va(q.GLA)
		}
		ev.Access = introspect.Access(q.AccessFlags & (memAccessR | memAccessW | memAccessX))
		if ev.Access == introspect.AccessNone {
			return nil, fmt.Errorf("%w: mem_access without R, W or X", ErrBadRequest)
		}
	case ReasonSoftwareBreakpoint:
		if q.InsnLength == 0 || q.InsnLength > 15 {
			return nil, fmt.Errorf("%w: breakpoint instruction length %d", ErrBadRequest, q.InsnLength)
		}
		ev.Reason = driver.ReasonInterrupt
		ev.Vector = VectorBreakpoint
		ev.InstructionLength = uint8(q.InsnLength)
	case ReasonSingleStep:
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
	if q.Reason != ReasonSoftwareBreakpoint {
		return 0, 0, 0, fmt.Errorf("reinject: event reason %d is not a software breakpoint", q.Reason)
	}
	if q.InsnLength == 0 || q.InsnLength > 15 {
		return 0, 0, 0, fmt.Errorf("%w: breakpoint instruction length %d", ErrBadRequest, q.InsnLength)
	}
	typ = q.TrapType
	if typ == 0 {
		// Xen always reports INT3 as a software exception; be explicit
		// if a request leaves it unset.
		typ = EventTypeSWException
	}
	return VectorBreakpoint, typ, uint8(q.InsnLength), nil
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
	// Regs is written to data.regs.x86 when Flags has FlagSetRegisters.
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
	w := WireResponse{Flags: q.Flags & FlagVCPUPaused, Reason: q.Reason, VCPU: q.VCPU}
	paused := q.Flags&FlagVCPUPaused != 0
	if (r.FastSingleStep || r.ToggleSingleStep || r.SetView || r.Registers != nil) && !paused {
		return w, fmt.Errorf("response to vm_event reason %d: vCPU %d was not paused by the event", q.Reason, q.VCPU)
	}
	if r.FastSingleStep && r.ToggleSingleStep {
		return w, errors.New("response: fast single-step and single-step toggle are exclusive")
	}
	if r.SetView {
		w.Flags |= FlagAlternateP2M
		w.Altp2mIdx = uint16(r.View)
	}
	if r.FastSingleStep {
		w.Flags |= FlagFastSingleStep
		w.FastSingleStepView = uint16(q.View())
	}
	if r.ToggleSingleStep {
		w.Flags |= FlagToggleSingleStep
	}
	if r.Registers != nil {
		regs := *q
		regs.Regs = *r.Registers
		w.Regs = &regs
		w.Flags |= FlagSetRegisters
	}
	return w, nil
}

// Encode writes the response in vm_event_response_t layout into b.
func (w *WireResponse) Encode(b *[ResponseSize]byte) {
	clear(b[:])
	le.PutUint32(b[offVersion:], InterfaceVersion)
	le.PutUint32(b[offFlags:], w.Flags)
	le.PutUint32(b[offReason:], w.Reason)
	le.PutUint32(b[offVCPUID:], w.VCPU)
	le.PutUint16(b[offAltp2mIdx:], w.Altp2mIdx)
	if w.Flags&FlagFastSingleStep != 0 {
		le.PutUint16(b[offU+offFastSingleStepP2MIdx:], w.FastSingleStepView)
	}
	if w.Regs != nil {
		encodeRegs(b[offData:offData+regsX86Size], w.Regs)
	}
}

func encodeRegs(d []byte, q *Request) {
	p64 := func(off int, v uint64) { le.PutUint64(d[off:], v) }
	r := &q.Regs
	p64(offRegsRAX, r.RAX)
	p64(offRegsRCX, r.RCX)
	p64(offRegsRDX, r.RDX)
	p64(offRegsRBX, r.RBX)
	p64(offRegsRSP, r.RSP)
	p64(offRegsRBP, r.RBP)
	p64(offRegsRSI, r.RSI)
	p64(offRegsRDI, r.RDI)
	p64(offRegsR8, r.R8)
	p64(offRegsR9, r.R9)
	p64(offRegsR10, r.R10)
	p64(offRegsR11, r.R11)
	p64(offRegsR12, r.R12)
	p64(offRegsR13, r.R13)
	p64(offRegsR14, r.R14)
	p64(offRegsR15, r.R15)
	p64(offRegsRFLAGS, r.RFLAGS)
	p64(offRegsDR6, q.DR6)
	p64(offRegsDR7, q.DR7)
	p64(offRegsRIP, r.RIP)
	p64(offRegsCR0, r.CR0)
	p64(offRegsCR2, r.CR2)
	p64(offRegsCR3, r.CR3)
	p64(offRegsCR4, r.CR4)
	p64(offRegsSysenterEIP, r.SysenterEIP)
	p64(offRegsMsrEFER, r.EFER)
	p64(offRegsMsrSTAR, q.STAR)
	p64(offRegsMsrLSTAR, r.LSTAR)
	p64(offRegsGDTRBase, q.GDTRBase)
	p64(offRegsFSBase, r.FSBase)
	p64(offRegsGSBase, r.GSBase)
	p64(offRegsShadowGS, r.KernelGSBase)
	segs := []struct {
		s                      amd64.Segment
		offAR, offSel, offBase int
	}{
		{r.CS, offRegsCS, offRegsCSSel, offRegsCSBase},
		{r.SS, offRegsSS, offRegsSSSel, offRegsSSBase},
		{r.DS, offRegsDS, offRegsDSSel, offRegsDSBase},
		{r.ES, offRegsES, offRegsESSel, offRegsESBase},
		{r.FS, offRegsFS, offRegsFSSel, -1},
		{r.GS, offRegsGS, offRegsGSSel, -1},
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
	le.PutUint16(d[offRegsGDTRLimit:], q.GDTRLimit)
}
