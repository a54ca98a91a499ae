//go:build xen

package xen

// The constants of internal/abi against the C headers. The array-index
// expressions below are compile-time assertions: a constant index out of
// range (or a negative uintptr) does not compile, so `go build -tags xen`
// and `go vet -tags xen` fail if any offset, size or value differs from
// libxen-dev's headers. Macros with arguments are checked in C with
// _Static_assert. abi_xen_test.go also drives the real ring.h macros
// against BackRing.

/*
#include <stdlib.h>
#include <string.h>
#include <xenctrl.h>
#include <xen/vm_event.h>
#include <xen/hvm/save.h>

_Static_assert(__CONST_RING_SIZE(vm_event, XC_PAGE_SIZE) == 8, "vm_event ring entries");
_Static_assert(HVM_SAVE_CODE(CPU) == 2, "HVM_SAVE_CODE(CPU)");
_Static_assert(HVM_SAVE_LENGTH(CPU) == 1032, "HVM_SAVE_LENGTH(CPU)");
_Static_assert(HVM_SAVE_CODE(END) == 0, "HVM_SAVE_CODE(END)");
_Static_assert(sizeof(struct hvm_save_descriptor) == 8, "hvm_save_descriptor");
_Static_assert(XC_PAGE_SIZE == 4096, "page size");

// A front end (Xen's side) built from ring.h's macros, in C memory, for
// abi_xen_test.go.
typedef struct {
	vm_event_front_ring_t front;
	vm_event_sring_t *sring;
} vmi_front_t;

static vmi_front_t *vmi_front_new(void) {
	void *page = NULL;
	if (posix_memalign(&page, XC_PAGE_SIZE, XC_PAGE_SIZE) != 0)
		return NULL;
	memset(page, 0xee, XC_PAGE_SIZE); // garbage the init must not depend on
	vmi_front_t *f = calloc(1, sizeof(*f));
	if (!f) {
		free(page);
		return NULL;
	}
	f->sring = page;
	SHARED_RING_INIT(f->sring);
	FRONT_RING_INIT(&f->front, f->sring, XC_PAGE_SIZE);
	return f;
}

static void vmi_front_free(vmi_front_t *f) {
	free(f->sring);
	free(f);
}

// vmi_fill_request fills a request the way Xen would, with values derived
// from i that abi_xen_test.go recomputes.
static void vmi_fill_request(vm_event_request_t *r, uint32_t i) {
	memset(r, 0, sizeof(*r));
	r->version = VM_EVENT_INTERFACE_VERSION;
	r->flags = VM_EVENT_FLAG_VCPU_PAUSED | VM_EVENT_FLAG_ALTERNATE_P2M;
	r->vcpu_id = i % 4;
	r->altp2m_idx = i % 3;
	switch (i % 3) {
	case 0:
		r->reason = VM_EVENT_REASON_MEM_ACCESS;
		r->u.mem_access.gfn = 0x1000 + i;
		r->u.mem_access.offset = (i * 8) % 4096;
		r->u.mem_access.gla = 0xfffff80000000000ULL + i;
		r->u.mem_access.flags = MEM_ACCESS_R | MEM_ACCESS_W | MEM_ACCESS_GLA_VALID;
		break;
	case 1:
		r->reason = VM_EVENT_REASON_SOFTWARE_BREAKPOINT;
		r->u.software_breakpoint.gfn = 0x2000 + i;
		r->u.software_breakpoint.insn_length = 1;
		r->u.software_breakpoint.type = 6;
		break;
	default:
		r->reason = VM_EVENT_REASON_SINGLESTEP;
		r->u.singlestep.gfn = 0x3000 + i;
	}
	struct vm_event_regs_x86 *x = &r->data.regs.x86;
	uint64_t b = (uint64_t)i << 32;
	x->rax = b | 1; x->rcx = b | 2; x->rdx = b | 3; x->rbx = b | 4;
	x->rsp = b | 5; x->rbp = b | 6; x->rsi = b | 7; x->rdi = b | 8;
	x->r8 = b | 9; x->r9 = b | 10; x->r10 = b | 11; x->r11 = b | 12;
	x->r12 = b | 13; x->r13 = b | 14; x->r14 = b | 15; x->r15 = b | 16;
	x->rflags = 0x246; x->dr6 = 0xffff0ff0; x->dr7 = 0x400;
	x->rip = 0xfffff80000100000ULL + i;
	x->cr0 = 0x80050033; x->cr2 = b | 0x2222; x->cr3 = 0x1aa000 + ((uint64_t)i << 12); x->cr4 = 0x350ef8;
	x->sysenter_eip = b | 0x5e;
	x->msr_efer = 0xd01; x->msr_star = 0x23001000000000ULL; x->msr_lstar = 0xfffff80000400000ULL + i;
	x->gdtr_base = 0xfffff80000c00000ULL; x->gdtr_limit = 0x57;
	x->cs_base = 0; x->ss_base = 0; x->ds_base = 0; x->es_base = 0;
	x->fs_base = 0x7ff000 + i; x->gs_base = 0xfffff80000ab0000ULL + i; x->shadow_gs = 0x7ffe0000 + i;
	x->cs.limit = 0xfffff; x->cs.ar = 0xa9b;
	x->ss.limit = 0xfffff; x->ss.ar = 0xc93;
	x->ds.limit = 0xfffff; x->ds.ar = 0xcf3;
	x->es.limit = 0xfffff; x->es.ar = 0xcf3;
	x->fs.limit = 0x3c00; x->fs.ar = 0x4f3;
	x->gs.limit = 0xfffff; x->gs.ar = 0xcf3;
	x->cs_sel = 0x10; x->ss_sel = 0x18; x->ds_sel = 0x2b; x->es_sel = 0x2b; x->fs_sel = 0x53; x->gs_sel = 0x2b;
}

// vmi_front_push queues request i with RING_GET_REQUEST / RING_PUSH_REQUESTS.
static int vmi_front_push(vmi_front_t *f, uint32_t i) {
	if (RING_FULL(&f->front))
		return -1;
	vmi_fill_request(RING_GET_REQUEST(&f->front, f->front.req_prod_pvt), i);
	f->front.req_prod_pvt++;
	RING_PUSH_REQUESTS(&f->front);
	return 0;
}

typedef struct {
	uint32_t version, flags, reason, vcpu_id;
	uint16_t altp2m_idx, p2midx;
	uint64_t rip, rax, r15, rflags;
} vmi_rsp_t;

// vmi_front_pop takes the next response with RING_GET_RESPONSE.
static int vmi_front_pop(vmi_front_t *f, vmi_rsp_t *out) {
	if (!RING_HAS_UNCONSUMED_RESPONSES(&f->front))
		return 0;
	vm_event_response_t *r = RING_GET_RESPONSE(&f->front, f->front.rsp_cons);
	out->version = r->version; out->flags = r->flags; out->reason = r->reason; out->vcpu_id = r->vcpu_id;
	out->altp2m_idx = r->altp2m_idx; out->p2midx = r->u.fast_singlestep.p2midx;
	out->rip = r->data.regs.x86.rip; out->rax = r->data.regs.x86.rax;
	out->r15 = r->data.regs.x86.r15; out->rflags = r->data.regs.x86.rflags;
	f->front.rsp_cons++;
	return 1;
}
*/
import "C"

import (
	"unsafe"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

type (
	cRequest  = C.vm_event_request_t
	cRegs     = C.struct_vm_event_regs_x86
	cMemAcc   = C.struct_vm_event_mem_access
	cDebug    = C.struct_vm_event_debug
	cFastStep = C.struct_vm_event_fast_singlestep
	cSring    = C.struct_vm_event_sring
	cHVMCPU   = C.struct_hvm_hw_cpu
)

// Sizes.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(cRequest{})-abi.RequestSize]
	_ = [1]struct{}{}[abi.RequestSize-unsafe.Sizeof(cRequest{})]
	_ = [1]struct{}{}[unsafe.Sizeof(C.vm_event_response_t{})-abi.ResponseSize]
	_ = [1]struct{}{}[abi.ResponseSize-unsafe.Sizeof(C.vm_event_response_t{})]
	_ = [1]struct{}{}[unsafe.Sizeof(cRegs{})-abi.RegsX86Size]
	_ = [1]struct{}{}[abi.RegsX86Size-unsafe.Sizeof(cRegs{})]
	_ = [1]struct{}{}[unsafe.Sizeof(cHVMCPU{})-abi.HVMCPUSize]
	_ = [1]struct{}{}[abi.HVMCPUSize-unsafe.Sizeof(cHVMCPU{})]
	_ = [1]struct{}{}[unsafe.Sizeof(C.union_vm_event_sring_entry{})-abi.EntrySize]
	_ = [1]struct{}{}[abi.EntrySize-unsafe.Sizeof(C.union_vm_event_sring_entry{})]
)

// Header and union offsets.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.version)-abi.OffVersion]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.flags)-abi.OffFlags]
	_ = [1]struct{}{}[abi.OffFlags-unsafe.Offsetof(cRequest{}.flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.reason)-abi.OffReason]
	_ = [1]struct{}{}[abi.OffReason-unsafe.Offsetof(cRequest{}.reason)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.vcpu_id)-abi.OffVCPUID]
	_ = [1]struct{}{}[abi.OffVCPUID-unsafe.Offsetof(cRequest{}.vcpu_id)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.altp2m_idx)-abi.OffAltp2mIdx]
	_ = [1]struct{}{}[abi.OffAltp2mIdx-unsafe.Offsetof(cRequest{}.altp2m_idx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.u)-abi.OffU]
	_ = [1]struct{}{}[abi.OffU-unsafe.Offsetof(cRequest{}.u)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.data)-abi.OffData]
	_ = [1]struct{}{}[abi.OffData-unsafe.Offsetof(cRequest{}.data)]

	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.gfn)-abi.OffMemAccessGFN]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.offset)-abi.OffMemAccessOffset]
	_ = [1]struct{}{}[abi.OffMemAccessOffset-unsafe.Offsetof(cMemAcc{}.offset)]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.gla)-abi.OffMemAccessGLA]
	_ = [1]struct{}{}[abi.OffMemAccessGLA-unsafe.Offsetof(cMemAcc{}.gla)]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.flags)-abi.OffMemAccessFlags]
	_ = [1]struct{}{}[abi.OffMemAccessFlags-unsafe.Offsetof(cMemAcc{}.flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.gfn)-abi.OffDebugGFN]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.pending_dbg)-abi.OffDebugPendingDbg]
	_ = [1]struct{}{}[abi.OffDebugPendingDbg-unsafe.Offsetof(cDebug{}.pending_dbg)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.insn_length)-abi.OffDebugInsnLength]
	_ = [1]struct{}{}[abi.OffDebugInsnLength-unsafe.Offsetof(cDebug{}.insn_length)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}._type)-abi.OffDebugType]
	_ = [1]struct{}{}[abi.OffDebugType-unsafe.Offsetof(cDebug{}._type)]
	_ = [1]struct{}{}[unsafe.Offsetof(cFastStep{}.p2midx)-abi.OffFastSingleStepP2MIdx]
	_ = [1]struct{}{}[unsafe.Offsetof(C.struct_vm_event_singlestep{}.gfn)-abi.OffSingleStepGFN]

	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.req_prod)-abi.OffReqProd]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.req_event)-abi.OffReqEvent]
	_ = [1]struct{}{}[abi.OffReqEvent-unsafe.Offsetof(cSring{}.req_event)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.rsp_prod)-abi.OffRspProd]
	_ = [1]struct{}{}[abi.OffRspProd-unsafe.Offsetof(cSring{}.rsp_prod)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.rsp_event)-abi.OffRspEvent]
	_ = [1]struct{}{}[abi.OffRspEvent-unsafe.Offsetof(cSring{}.rsp_event)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.pvt)-abi.OffPvt]
	_ = [1]struct{}{}[abi.OffPvt-unsafe.Offsetof(cSring{}.pvt)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.ring)-abi.RingHdrSize]
	_ = [1]struct{}{}[abi.RingHdrSize-unsafe.Offsetof(cSring{}.ring)]
)

// struct vm_event_regs_x86.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rax)-abi.OffRegsRAX]
	_ = [1]struct{}{}[abi.OffRegsRAX-unsafe.Offsetof(cRegs{}.rax)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rcx)-abi.OffRegsRCX]
	_ = [1]struct{}{}[abi.OffRegsRCX-unsafe.Offsetof(cRegs{}.rcx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rdx)-abi.OffRegsRDX]
	_ = [1]struct{}{}[abi.OffRegsRDX-unsafe.Offsetof(cRegs{}.rdx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rbx)-abi.OffRegsRBX]
	_ = [1]struct{}{}[abi.OffRegsRBX-unsafe.Offsetof(cRegs{}.rbx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rsp)-abi.OffRegsRSP]
	_ = [1]struct{}{}[abi.OffRegsRSP-unsafe.Offsetof(cRegs{}.rsp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rbp)-abi.OffRegsRBP]
	_ = [1]struct{}{}[abi.OffRegsRBP-unsafe.Offsetof(cRegs{}.rbp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rsi)-abi.OffRegsRSI]
	_ = [1]struct{}{}[abi.OffRegsRSI-unsafe.Offsetof(cRegs{}.rsi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rdi)-abi.OffRegsRDI]
	_ = [1]struct{}{}[abi.OffRegsRDI-unsafe.Offsetof(cRegs{}.rdi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r8)-abi.OffRegsR8]
	_ = [1]struct{}{}[abi.OffRegsR8-unsafe.Offsetof(cRegs{}.r8)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r9)-abi.OffRegsR9]
	_ = [1]struct{}{}[abi.OffRegsR9-unsafe.Offsetof(cRegs{}.r9)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r10)-abi.OffRegsR10]
	_ = [1]struct{}{}[abi.OffRegsR10-unsafe.Offsetof(cRegs{}.r10)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r11)-abi.OffRegsR11]
	_ = [1]struct{}{}[abi.OffRegsR11-unsafe.Offsetof(cRegs{}.r11)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r12)-abi.OffRegsR12]
	_ = [1]struct{}{}[abi.OffRegsR12-unsafe.Offsetof(cRegs{}.r12)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r13)-abi.OffRegsR13]
	_ = [1]struct{}{}[abi.OffRegsR13-unsafe.Offsetof(cRegs{}.r13)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r14)-abi.OffRegsR14]
	_ = [1]struct{}{}[abi.OffRegsR14-unsafe.Offsetof(cRegs{}.r14)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r15)-abi.OffRegsR15]
	_ = [1]struct{}{}[abi.OffRegsR15-unsafe.Offsetof(cRegs{}.r15)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rflags)-abi.OffRegsRFLAGS]
	_ = [1]struct{}{}[abi.OffRegsRFLAGS-unsafe.Offsetof(cRegs{}.rflags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.dr6)-abi.OffRegsDR6]
	_ = [1]struct{}{}[abi.OffRegsDR6-unsafe.Offsetof(cRegs{}.dr6)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.dr7)-abi.OffRegsDR7]
	_ = [1]struct{}{}[abi.OffRegsDR7-unsafe.Offsetof(cRegs{}.dr7)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rip)-abi.OffRegsRIP]
	_ = [1]struct{}{}[abi.OffRegsRIP-unsafe.Offsetof(cRegs{}.rip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr0)-abi.OffRegsCR0]
	_ = [1]struct{}{}[abi.OffRegsCR0-unsafe.Offsetof(cRegs{}.cr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr2)-abi.OffRegsCR2]
	_ = [1]struct{}{}[abi.OffRegsCR2-unsafe.Offsetof(cRegs{}.cr2)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr3)-abi.OffRegsCR3]
	_ = [1]struct{}{}[abi.OffRegsCR3-unsafe.Offsetof(cRegs{}.cr3)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr4)-abi.OffRegsCR4]
	_ = [1]struct{}{}[abi.OffRegsCR4-unsafe.Offsetof(cRegs{}.cr4)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_cs)-abi.OffRegsSysenterCS]
	_ = [1]struct{}{}[abi.OffRegsSysenterCS-unsafe.Offsetof(cRegs{}.sysenter_cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_esp)-abi.OffRegsSysenterESP]
	_ = [1]struct{}{}[abi.OffRegsSysenterESP-unsafe.Offsetof(cRegs{}.sysenter_esp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_eip)-abi.OffRegsSysenterEIP]
	_ = [1]struct{}{}[abi.OffRegsSysenterEIP-unsafe.Offsetof(cRegs{}.sysenter_eip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_efer)-abi.OffRegsMsrEFER]
	_ = [1]struct{}{}[abi.OffRegsMsrEFER-unsafe.Offsetof(cRegs{}.msr_efer)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_star)-abi.OffRegsMsrSTAR]
	_ = [1]struct{}{}[abi.OffRegsMsrSTAR-unsafe.Offsetof(cRegs{}.msr_star)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_lstar)-abi.OffRegsMsrLSTAR]
	_ = [1]struct{}{}[abi.OffRegsMsrLSTAR-unsafe.Offsetof(cRegs{}.msr_lstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gdtr_base)-abi.OffRegsGDTRBase]
	_ = [1]struct{}{}[abi.OffRegsGDTRBase-unsafe.Offsetof(cRegs{}.gdtr_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.npt_base)-abi.OffRegsNptBase]
	_ = [1]struct{}{}[abi.OffRegsNptBase-unsafe.Offsetof(cRegs{}.npt_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.vmtrace_pos)-abi.OffRegsVmtracePos]
	_ = [1]struct{}{}[abi.OffRegsVmtracePos-unsafe.Offsetof(cRegs{}.vmtrace_pos)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs_base)-abi.OffRegsCSBase]
	_ = [1]struct{}{}[abi.OffRegsCSBase-unsafe.Offsetof(cRegs{}.cs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss_base)-abi.OffRegsSSBase]
	_ = [1]struct{}{}[abi.OffRegsSSBase-unsafe.Offsetof(cRegs{}.ss_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds_base)-abi.OffRegsDSBase]
	_ = [1]struct{}{}[abi.OffRegsDSBase-unsafe.Offsetof(cRegs{}.ds_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es_base)-abi.OffRegsESBase]
	_ = [1]struct{}{}[abi.OffRegsESBase-unsafe.Offsetof(cRegs{}.es_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs_base)-abi.OffRegsFSBase]
	_ = [1]struct{}{}[abi.OffRegsFSBase-unsafe.Offsetof(cRegs{}.fs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs_base)-abi.OffRegsGSBase]
	_ = [1]struct{}{}[abi.OffRegsGSBase-unsafe.Offsetof(cRegs{}.gs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs)-abi.OffRegsCS]
	_ = [1]struct{}{}[abi.OffRegsCS-unsafe.Offsetof(cRegs{}.cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss)-abi.OffRegsSS]
	_ = [1]struct{}{}[abi.OffRegsSS-unsafe.Offsetof(cRegs{}.ss)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds)-abi.OffRegsDS]
	_ = [1]struct{}{}[abi.OffRegsDS-unsafe.Offsetof(cRegs{}.ds)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es)-abi.OffRegsES]
	_ = [1]struct{}{}[abi.OffRegsES-unsafe.Offsetof(cRegs{}.es)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs)-abi.OffRegsFS]
	_ = [1]struct{}{}[abi.OffRegsFS-unsafe.Offsetof(cRegs{}.fs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs)-abi.OffRegsGS]
	_ = [1]struct{}{}[abi.OffRegsGS-unsafe.Offsetof(cRegs{}.gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.shadow_gs)-abi.OffRegsShadowGS]
	_ = [1]struct{}{}[abi.OffRegsShadowGS-unsafe.Offsetof(cRegs{}.shadow_gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gdtr_limit)-abi.OffRegsGDTRLimit]
	_ = [1]struct{}{}[abi.OffRegsGDTRLimit-unsafe.Offsetof(cRegs{}.gdtr_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs_sel)-abi.OffRegsCSSel]
	_ = [1]struct{}{}[abi.OffRegsCSSel-unsafe.Offsetof(cRegs{}.cs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss_sel)-abi.OffRegsSSSel]
	_ = [1]struct{}{}[abi.OffRegsSSSel-unsafe.Offsetof(cRegs{}.ss_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds_sel)-abi.OffRegsDSSel]
	_ = [1]struct{}{}[abi.OffRegsDSSel-unsafe.Offsetof(cRegs{}.ds_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es_sel)-abi.OffRegsESSel]
	_ = [1]struct{}{}[abi.OffRegsESSel-unsafe.Offsetof(cRegs{}.es_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs_sel)-abi.OffRegsFSSel]
	_ = [1]struct{}{}[abi.OffRegsFSSel-unsafe.Offsetof(cRegs{}.fs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs_sel)-abi.OffRegsGSSel]
	_ = [1]struct{}{}[abi.OffRegsGSSel-unsafe.Offsetof(cRegs{}.gs_sel)]
)

// struct hvm_hw_cpu, including the order of its per-register arrays.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rax)-abi.OffCPURAX]
	_ = [1]struct{}{}[abi.OffCPURAX-unsafe.Offsetof(cHVMCPU{}.rax)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rbx)-abi.OffCPURBX]
	_ = [1]struct{}{}[abi.OffCPURBX-unsafe.Offsetof(cHVMCPU{}.rbx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rcx)-abi.OffCPURCX]
	_ = [1]struct{}{}[abi.OffCPURCX-unsafe.Offsetof(cHVMCPU{}.rcx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rdx)-abi.OffCPURDX]
	_ = [1]struct{}{}[abi.OffCPURDX-unsafe.Offsetof(cHVMCPU{}.rdx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rbp)-abi.OffCPURBP]
	_ = [1]struct{}{}[abi.OffCPURBP-unsafe.Offsetof(cHVMCPU{}.rbp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rsi)-abi.OffCPURSI]
	_ = [1]struct{}{}[abi.OffCPURSI-unsafe.Offsetof(cHVMCPU{}.rsi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rdi)-abi.OffCPURDI]
	_ = [1]struct{}{}[abi.OffCPURDI-unsafe.Offsetof(cHVMCPU{}.rdi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rsp)-abi.OffCPURSP]
	_ = [1]struct{}{}[abi.OffCPURSP-unsafe.Offsetof(cHVMCPU{}.rsp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r8)-abi.OffCPUR8]
	_ = [1]struct{}{}[abi.OffCPUR8-unsafe.Offsetof(cHVMCPU{}.r8)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rip)-abi.OffCPURIP]
	_ = [1]struct{}{}[abi.OffCPURIP-unsafe.Offsetof(cHVMCPU{}.rip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rflags)-abi.OffCPURFLAGS]
	_ = [1]struct{}{}[abi.OffCPURFLAGS-unsafe.Offsetof(cHVMCPU{}.rflags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr0)-abi.OffCPUCR0]
	_ = [1]struct{}{}[abi.OffCPUCR0-unsafe.Offsetof(cHVMCPU{}.cr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr2)-abi.OffCPUCR2]
	_ = [1]struct{}{}[abi.OffCPUCR2-unsafe.Offsetof(cHVMCPU{}.cr2)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr3)-abi.OffCPUCR3]
	_ = [1]struct{}{}[abi.OffCPUCR3-unsafe.Offsetof(cHVMCPU{}.cr3)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr4)-abi.OffCPUCR4]
	_ = [1]struct{}{}[abi.OffCPUCR4-unsafe.Offsetof(cHVMCPU{}.cr4)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.dr0)-abi.OffCPUDR0]
	_ = [1]struct{}{}[abi.OffCPUDR0-unsafe.Offsetof(cHVMCPU{}.dr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_sel)-abi.OffCPUCSSel]
	_ = [1]struct{}{}[abi.OffCPUCSSel-unsafe.Offsetof(cHVMCPU{}.cs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_limit)-abi.OffCPUCSLimit]
	_ = [1]struct{}{}[abi.OffCPUCSLimit-unsafe.Offsetof(cHVMCPU{}.cs_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_base)-abi.OffCPUCSBase]
	_ = [1]struct{}{}[abi.OffCPUCSBase-unsafe.Offsetof(cHVMCPU{}.cs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_arbytes)-abi.OffCPUCSAR]
	_ = [1]struct{}{}[abi.OffCPUCSAR-unsafe.Offsetof(cHVMCPU{}.cs_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_cs)-abi.OffCPUSysCS]
	_ = [1]struct{}{}[abi.OffCPUSysCS-unsafe.Offsetof(cHVMCPU{}.sysenter_cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_esp)-abi.OffCPUSysESP]
	_ = [1]struct{}{}[abi.OffCPUSysESP-unsafe.Offsetof(cHVMCPU{}.sysenter_esp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_eip)-abi.OffCPUSysEIP]
	_ = [1]struct{}{}[abi.OffCPUSysEIP-unsafe.Offsetof(cHVMCPU{}.sysenter_eip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.shadow_gs)-abi.OffCPUShadowGS]
	_ = [1]struct{}{}[abi.OffCPUShadowGS-unsafe.Offsetof(cHVMCPU{}.shadow_gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_flags)-abi.OffCPUMsrFlags]
	_ = [1]struct{}{}[abi.OffCPUMsrFlags-unsafe.Offsetof(cHVMCPU{}.msr_flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_lstar)-abi.OffCPUMsrLSTAR]
	_ = [1]struct{}{}[abi.OffCPUMsrLSTAR-unsafe.Offsetof(cHVMCPU{}.msr_lstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_star)-abi.OffCPUMsrSTAR]
	_ = [1]struct{}{}[abi.OffCPUMsrSTAR-unsafe.Offsetof(cHVMCPU{}.msr_star)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_cstar)-abi.OffCPUMsrCSTAR]
	_ = [1]struct{}{}[abi.OffCPUMsrCSTAR-unsafe.Offsetof(cHVMCPU{}.msr_cstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_syscall_mask)-abi.OffCPUMsrSFMASK]
	_ = [1]struct{}{}[abi.OffCPUMsrSFMASK-unsafe.Offsetof(cHVMCPU{}.msr_syscall_mask)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_efer)-abi.OffCPUMsrEFER]
	_ = [1]struct{}{}[abi.OffCPUMsrEFER-unsafe.Offsetof(cHVMCPU{}.msr_efer)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_sel)-(abi.OffCPUCSSel+4*1)]
	_ = [1]struct{}{}[(abi.OffCPUCSSel+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.fs_sel)-(abi.OffCPUCSSel+4*3)]
	_ = [1]struct{}{}[(abi.OffCPUCSSel+4*3)-unsafe.Offsetof(cHVMCPU{}.fs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.gs_sel)-(abi.OffCPUCSSel+4*4)]
	_ = [1]struct{}{}[(abi.OffCPUCSSel+4*4)-unsafe.Offsetof(cHVMCPU{}.gs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_sel)-(abi.OffCPUCSSel+4*5)]
	_ = [1]struct{}{}[(abi.OffCPUCSSel+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_limit)-(abi.OffCPUCSLimit+4*1)]
	_ = [1]struct{}{}[(abi.OffCPUCSLimit+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_limit)-(abi.OffCPUCSLimit+4*5)]
	_ = [1]struct{}{}[(abi.OffCPUCSLimit+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.fs_base)-(abi.OffCPUCSBase+8*3)]
	_ = [1]struct{}{}[(abi.OffCPUCSBase+8*3)-unsafe.Offsetof(cHVMCPU{}.fs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.gs_base)-(abi.OffCPUCSBase+8*4)]
	_ = [1]struct{}{}[(abi.OffCPUCSBase+8*4)-unsafe.Offsetof(cHVMCPU{}.gs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_base)-(abi.OffCPUCSBase+8*5)]
	_ = [1]struct{}{}[(abi.OffCPUCSBase+8*5)-unsafe.Offsetof(cHVMCPU{}.ss_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_arbytes)-(abi.OffCPUCSAR+4*1)]
	_ = [1]struct{}{}[(abi.OffCPUCSAR+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_arbytes)-(abi.OffCPUCSAR+4*5)]
	_ = [1]struct{}{}[(abi.OffCPUCSAR+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r15)-(abi.OffCPURAX+8*15)]
	_ = [1]struct{}{}[(abi.OffCPURAX+8*15)-unsafe.Offsetof(cHVMCPU{}.r15)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r12)-(abi.OffCPURAX+8*12)]
	_ = [1]struct{}{}[(abi.OffCPURAX+8*12)-unsafe.Offsetof(cHVMCPU{}.r12)]
)

// Flag, reason, event-type and access values.
var (
	_ = [1]struct{}{}[C.VM_EVENT_INTERFACE_VERSION-abi.InterfaceVersion]
	_ = [1]struct{}{}[abi.InterfaceVersion-C.VM_EVENT_INTERFACE_VERSION]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_VCPU_PAUSED-abi.FlagVCPUPaused]
	_ = [1]struct{}{}[abi.FlagVCPUPaused-C.VM_EVENT_FLAG_VCPU_PAUSED]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_FOREIGN-abi.FlagForeign]
	_ = [1]struct{}{}[abi.FlagForeign-C.VM_EVENT_FLAG_FOREIGN]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_EMULATE-abi.FlagEmulate]
	_ = [1]struct{}{}[abi.FlagEmulate-C.VM_EVENT_FLAG_EMULATE]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_EMULATE_NOWRITE-abi.FlagEmulateNoWrite]
	_ = [1]struct{}{}[abi.FlagEmulateNoWrite-C.VM_EVENT_FLAG_EMULATE_NOWRITE]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_TOGGLE_SINGLESTEP-abi.FlagToggleSingleStep]
	_ = [1]struct{}{}[abi.FlagToggleSingleStep-C.VM_EVENT_FLAG_TOGGLE_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_EMUL_READ_DATA-abi.FlagSetEmulReadData]
	_ = [1]struct{}{}[abi.FlagSetEmulReadData-C.VM_EVENT_FLAG_SET_EMUL_READ_DATA]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_DENY-abi.FlagDeny]
	_ = [1]struct{}{}[abi.FlagDeny-C.VM_EVENT_FLAG_DENY]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_ALTERNATE_P2M-abi.FlagAlternateP2M]
	_ = [1]struct{}{}[abi.FlagAlternateP2M-C.VM_EVENT_FLAG_ALTERNATE_P2M]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_REGISTERS-abi.FlagSetRegisters]
	_ = [1]struct{}{}[abi.FlagSetRegisters-C.VM_EVENT_FLAG_SET_REGISTERS]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_EMUL_INSN_DATA-abi.FlagSetEmulInsnData]
	_ = [1]struct{}{}[abi.FlagSetEmulInsnData-C.VM_EVENT_FLAG_SET_EMUL_INSN_DATA]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_GET_NEXT_INTERRUPT-abi.FlagGetNextInterrupt]
	_ = [1]struct{}{}[abi.FlagGetNextInterrupt-C.VM_EVENT_FLAG_GET_NEXT_INTERRUPT]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_FAST_SINGLESTEP-abi.FlagFastSingleStep]
	_ = [1]struct{}{}[abi.FlagFastSingleStep-C.VM_EVENT_FLAG_FAST_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_NESTED_P2M-abi.FlagNestedP2M]
	_ = [1]struct{}{}[abi.FlagNestedP2M-C.VM_EVENT_FLAG_NESTED_P2M]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_UNKNOWN-abi.ReasonUnknown]
	_ = [1]struct{}{}[abi.ReasonUnknown-C.VM_EVENT_REASON_UNKNOWN]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_ACCESS-abi.ReasonMemAccess]
	_ = [1]struct{}{}[abi.ReasonMemAccess-C.VM_EVENT_REASON_MEM_ACCESS]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_SHARING-abi.ReasonMemSharing]
	_ = [1]struct{}{}[abi.ReasonMemSharing-C.VM_EVENT_REASON_MEM_SHARING]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_PAGING-abi.ReasonMemPaging]
	_ = [1]struct{}{}[abi.ReasonMemPaging-C.VM_EVENT_REASON_MEM_PAGING]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_WRITE_CTRLREG-abi.ReasonWriteCtrlReg]
	_ = [1]struct{}{}[abi.ReasonWriteCtrlReg-C.VM_EVENT_REASON_WRITE_CTRLREG]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MOV_TO_MSR-abi.ReasonMovToMSR]
	_ = [1]struct{}{}[abi.ReasonMovToMSR-C.VM_EVENT_REASON_MOV_TO_MSR]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_SOFTWARE_BREAKPOINT-abi.ReasonSoftwareBreakpoint]
	_ = [1]struct{}{}[abi.ReasonSoftwareBreakpoint-C.VM_EVENT_REASON_SOFTWARE_BREAKPOINT]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_SINGLESTEP-abi.ReasonSingleStep]
	_ = [1]struct{}{}[abi.ReasonSingleStep-C.VM_EVENT_REASON_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_GUEST_REQUEST-abi.ReasonGuestRequest]
	_ = [1]struct{}{}[abi.ReasonGuestRequest-C.VM_EVENT_REASON_GUEST_REQUEST]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_DEBUG_EXCEPTION-abi.ReasonDebugException]
	_ = [1]struct{}{}[abi.ReasonDebugException-C.VM_EVENT_REASON_DEBUG_EXCEPTION]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_CPUID-abi.ReasonCPUID]
	_ = [1]struct{}{}[abi.ReasonCPUID-C.VM_EVENT_REASON_CPUID]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_PRIVILEGED_CALL-abi.ReasonPrivilegedCall]
	_ = [1]struct{}{}[abi.ReasonPrivilegedCall-C.VM_EVENT_REASON_PRIVILEGED_CALL]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_INTERRUPT-abi.ReasonInterrupt]
	_ = [1]struct{}{}[abi.ReasonInterrupt-C.VM_EVENT_REASON_INTERRUPT]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_DESCRIPTOR_ACCESS-abi.ReasonDescriptorAccess]
	_ = [1]struct{}{}[abi.ReasonDescriptorAccess-C.VM_EVENT_REASON_DESCRIPTOR_ACCESS]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_EMUL_UNIMPLEMENTED-abi.ReasonEmulUnimplemented]
	_ = [1]struct{}{}[abi.ReasonEmulUnimplemented-C.VM_EVENT_REASON_EMUL_UNIMPLEMENTED]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_VMEXIT-abi.ReasonVMExit]
	_ = [1]struct{}{}[abi.ReasonVMExit-C.VM_EVENT_REASON_VMEXIT]
	_ = [1]struct{}{}[C.MEM_ACCESS_R-abi.MemAccessR]
	_ = [1]struct{}{}[abi.MemAccessR-C.MEM_ACCESS_R]
	_ = [1]struct{}{}[C.MEM_ACCESS_W-abi.MemAccessW]
	_ = [1]struct{}{}[abi.MemAccessW-C.MEM_ACCESS_W]
	_ = [1]struct{}{}[C.MEM_ACCESS_X-abi.MemAccessX]
	_ = [1]struct{}{}[abi.MemAccessX-C.MEM_ACCESS_X]
	_ = [1]struct{}{}[C.MEM_ACCESS_GLA_VALID-abi.MemAccessGLAValid]
	_ = [1]struct{}{}[abi.MemAccessGLAValid-C.MEM_ACCESS_GLA_VALID]
	_ = [1]struct{}{}[C.MEM_ACCESS_FAULT_WITH_GLA-abi.MemAccessFaultWithGLA]
	_ = [1]struct{}{}[abi.MemAccessFaultWithGLA-C.MEM_ACCESS_FAULT_WITH_GLA]
	_ = [1]struct{}{}[C.MEM_ACCESS_FAULT_IN_GPT-abi.MemAccessFaultInGPT]
	_ = [1]struct{}{}[abi.MemAccessFaultInGPT-C.MEM_ACCESS_FAULT_IN_GPT]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_hw_exc-abi.EventTypeHWException]
	_ = [1]struct{}{}[abi.EventTypeHWException-C.XEN_DMOP_EVENT_hw_exc]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_sw_int-abi.EventTypeSWInterrupt]
	_ = [1]struct{}{}[abi.EventTypeSWInterrupt-C.XEN_DMOP_EVENT_sw_int]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_pri_sw_exc-abi.EventTypePrivSWExc]
	_ = [1]struct{}{}[abi.EventTypePrivSWExc-C.XEN_DMOP_EVENT_pri_sw_exc]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_sw_exc-abi.EventTypeSWException]
	_ = [1]struct{}{}[abi.EventTypeSWException-C.XEN_DMOP_EVENT_sw_exc]
	_ = [1]struct{}{}[C.XENMEM_access_n-xenmemAccessN]
	_ = [1]struct{}{}[xenmemAccessN-C.XENMEM_access_n]
	_ = [1]struct{}{}[C.XENMEM_access_r-xenmemAccessR]
	_ = [1]struct{}{}[xenmemAccessR-C.XENMEM_access_r]
	_ = [1]struct{}{}[C.XENMEM_access_w-xenmemAccessW]
	_ = [1]struct{}{}[xenmemAccessW-C.XENMEM_access_w]
	_ = [1]struct{}{}[C.XENMEM_access_rw-xenmemAccessRW]
	_ = [1]struct{}{}[xenmemAccessRW-C.XENMEM_access_rw]
	_ = [1]struct{}{}[C.XENMEM_access_x-xenmemAccessX]
	_ = [1]struct{}{}[xenmemAccessX-C.XENMEM_access_x]
	_ = [1]struct{}{}[C.XENMEM_access_rx-xenmemAccessRX]
	_ = [1]struct{}{}[xenmemAccessRX-C.XENMEM_access_rx]
	_ = [1]struct{}{}[C.XENMEM_access_wx-xenmemAccessWX]
	_ = [1]struct{}{}[xenmemAccessWX-C.XENMEM_access_wx]
	_ = [1]struct{}{}[C.XENMEM_access_rwx-xenmemAccessRWX]
	_ = [1]struct{}{}[xenmemAccessRWX-C.XENMEM_access_rwx]
	_ = [1]struct{}{}[C.XENMEM_access_rx2rw-xenmemAccessRX2RW]
	_ = [1]struct{}{}[xenmemAccessRX2RW-C.XENMEM_access_rx2rw]
	_ = [1]struct{}{}[C.XENMEM_access_n2rwx-xenmemAccessN2RWX]
	_ = [1]struct{}{}[xenmemAccessN2RWX-C.XENMEM_access_n2rwx]
	_ = [1]struct{}{}[C.XENMEM_access_default-xenmemAccessDefault]
	_ = [1]struct{}{}[xenmemAccessDefault-C.XENMEM_access_default]
	_ = [1]struct{}{}[C.XC_PAGE_SIZE-abi.PageSize]
	_ = [1]struct{}{}[abi.PageSize-C.XC_PAGE_SIZE]
)

// cFront is a C front end built from ring.h's macros (Xen's side of the
// ring), for tests.
type cFront struct{ f *C.vmi_front_t }

func newCFront() *cFront {
	f := C.vmi_front_new()
	if f == nil {
		return nil
	}
	return &cFront{f}
}

func (c *cFront) free() { C.vmi_front_free(c.f) }

// page is the shared ring page, in C memory.
func (c *cFront) page() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(c.f.sring)), abi.PageSize) }

// push queues the request vmi_fill_request makes for i; false when full.
func (c *cFront) push(i uint32) bool { return C.vmi_front_push(c.f, C.uint32_t(i)) == 0 }

// cResponse is what the C front end reads back from a response.
type cResponse struct {
	Version, Flags, Reason, VCPU uint32
	Altp2mIdx, P2MIdx            uint16
	RIP, RAX, R15, RFLAGS        uint64
}

func (c *cFront) pop() (cResponse, bool) {
	var r C.vmi_rsp_t
	if C.vmi_front_pop(c.f, &r) == 0 {
		return cResponse{}, false
	}
	return cResponse{uint32(r.version), uint32(r.flags), uint32(r.reason), uint32(r.vcpu_id),
		uint16(r.altp2m_idx), uint16(r.p2midx), uint64(r.rip), uint64(r.rax), uint64(r.r15), uint64(r.rflags)}, true
}

// cRequestBytes returns vmi_fill_request(i) as raw bytes.
func cRequestBytes(i uint32) (b [abi.RequestSize]byte) {
	var r cRequest
	C.vmi_fill_request(&r, C.uint32_t(i))
	copy(b[:], unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r)))
	return b
}

// cHVMCPURecord returns an hvm_hw_cpu filled through the C struct's
// fields with values derived from seed, for comparing DecodeHVMCPU with
// the header's layout.
func cHVMCPURecord(seed uint64) (b [abi.HVMCPUSize]byte) {
	var c cHVMCPU
	c.rax, c.rbx, c.rcx, c.rdx = C.uint64_t(seed+1), C.uint64_t(seed+2), C.uint64_t(seed+3), C.uint64_t(seed+4)
	c.rbp, c.rsi, c.rdi, c.rsp = C.uint64_t(seed+5), C.uint64_t(seed+6), C.uint64_t(seed+7), C.uint64_t(seed+8)
	c.r8, c.r15 = C.uint64_t(seed+9), C.uint64_t(seed+16)
	c.rip, c.rflags = C.uint64_t(seed+0x100), 0x246
	c.cr0, c.cr2, c.cr3, c.cr4 = 0x80050033, C.uint64_t(seed+0x200), C.uint64_t(seed<<12), 0x350ef8
	c.cs_sel, c.ss_sel, c.fs_sel, c.gs_sel = 0x10, 0x18, 0x53, 0x2b
	c.cs_limit, c.gs_limit = 0xffffffff, 0xfffff
	c.fs_base, c.gs_base = C.uint64_t(seed+0x300), C.uint64_t(seed+0x400)
	c.cs_arbytes, c.ss_arbytes = 0xa9b, 0xc93
	c.sysenter_eip, c.shadow_gs = C.uint64_t(seed+0x500), C.uint64_t(seed+0x600)
	c.msr_lstar, c.msr_efer = C.uint64_t(seed+0x700), 0xd01
	copy(b[:], unsafe.Slice((*byte)(unsafe.Pointer(&c)), unsafe.Sizeof(c)))
	return b
}

// Shutdown reasons: shutdownReasons is indexed by SHUTDOWN_*.
var (
	_ = [1]struct{}{}[C.SHUTDOWN_poweroff]
	_ = [1]struct{}{}[C.SHUTDOWN_reboot-1]
	_ = [1]struct{}{}[C.SHUTDOWN_suspend-2]
	_ = [1]struct{}{}[C.SHUTDOWN_crash-3]
	_ = [1]struct{}{}[C.SHUTDOWN_watchdog-4]
	_ = [1]struct{}{}[C.SHUTDOWN_soft_reset-5]
	_ = [1]struct{}{}[len(shutdownReasons)-C.SHUTDOWN_MAX-1]
)
