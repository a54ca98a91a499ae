//go:build xen

package xen

// The constants of layout.go against the C headers. The array-index
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

import "unsafe"

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
	_ = [1]struct{}{}[unsafe.Sizeof(cRequest{})-RequestSize]
	_ = [1]struct{}{}[RequestSize-unsafe.Sizeof(cRequest{})]
	_ = [1]struct{}{}[unsafe.Sizeof(C.vm_event_response_t{})-ResponseSize]
	_ = [1]struct{}{}[ResponseSize-unsafe.Sizeof(C.vm_event_response_t{})]
	_ = [1]struct{}{}[unsafe.Sizeof(cRegs{})-regsX86Size]
	_ = [1]struct{}{}[regsX86Size-unsafe.Sizeof(cRegs{})]
	_ = [1]struct{}{}[unsafe.Sizeof(cHVMCPU{})-hvmCPUSize]
	_ = [1]struct{}{}[hvmCPUSize-unsafe.Sizeof(cHVMCPU{})]
	_ = [1]struct{}{}[unsafe.Sizeof(C.union_vm_event_sring_entry{})-EntrySize]
	_ = [1]struct{}{}[EntrySize-unsafe.Sizeof(C.union_vm_event_sring_entry{})]
)

// Header and union offsets.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.version)-offVersion]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.flags)-offFlags]
	_ = [1]struct{}{}[offFlags-unsafe.Offsetof(cRequest{}.flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.reason)-offReason]
	_ = [1]struct{}{}[offReason-unsafe.Offsetof(cRequest{}.reason)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.vcpu_id)-offVCPUID]
	_ = [1]struct{}{}[offVCPUID-unsafe.Offsetof(cRequest{}.vcpu_id)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.altp2m_idx)-offAltp2mIdx]
	_ = [1]struct{}{}[offAltp2mIdx-unsafe.Offsetof(cRequest{}.altp2m_idx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.u)-offU]
	_ = [1]struct{}{}[offU-unsafe.Offsetof(cRequest{}.u)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRequest{}.data)-offData]
	_ = [1]struct{}{}[offData-unsafe.Offsetof(cRequest{}.data)]

	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.gfn)-offMemAccessGFN]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.offset)-offMemAccessOffset]
	_ = [1]struct{}{}[offMemAccessOffset-unsafe.Offsetof(cMemAcc{}.offset)]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.gla)-offMemAccessGLA]
	_ = [1]struct{}{}[offMemAccessGLA-unsafe.Offsetof(cMemAcc{}.gla)]
	_ = [1]struct{}{}[unsafe.Offsetof(cMemAcc{}.flags)-offMemAccessFlags]
	_ = [1]struct{}{}[offMemAccessFlags-unsafe.Offsetof(cMemAcc{}.flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.gfn)-offDebugGFN]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.pending_dbg)-offDebugPendingDbg]
	_ = [1]struct{}{}[offDebugPendingDbg-unsafe.Offsetof(cDebug{}.pending_dbg)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}.insn_length)-offDebugInsnLength]
	_ = [1]struct{}{}[offDebugInsnLength-unsafe.Offsetof(cDebug{}.insn_length)]
	_ = [1]struct{}{}[unsafe.Offsetof(cDebug{}._type)-offDebugType]
	_ = [1]struct{}{}[offDebugType-unsafe.Offsetof(cDebug{}._type)]
	_ = [1]struct{}{}[unsafe.Offsetof(cFastStep{}.p2midx)-offFastSingleStepP2MIdx]
	_ = [1]struct{}{}[unsafe.Offsetof(C.struct_vm_event_singlestep{}.gfn)-offSingleStepGFN]

	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.req_prod)-offReqProd]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.req_event)-offReqEvent]
	_ = [1]struct{}{}[offReqEvent-unsafe.Offsetof(cSring{}.req_event)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.rsp_prod)-offRspProd]
	_ = [1]struct{}{}[offRspProd-unsafe.Offsetof(cSring{}.rsp_prod)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.rsp_event)-offRspEvent]
	_ = [1]struct{}{}[offRspEvent-unsafe.Offsetof(cSring{}.rsp_event)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.pvt)-offPvt]
	_ = [1]struct{}{}[offPvt-unsafe.Offsetof(cSring{}.pvt)]
	_ = [1]struct{}{}[unsafe.Offsetof(cSring{}.ring)-ringHdrSize]
	_ = [1]struct{}{}[ringHdrSize-unsafe.Offsetof(cSring{}.ring)]
)

// struct vm_event_regs_x86.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rax)-offRegsRAX]
	_ = [1]struct{}{}[offRegsRAX-unsafe.Offsetof(cRegs{}.rax)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rcx)-offRegsRCX]
	_ = [1]struct{}{}[offRegsRCX-unsafe.Offsetof(cRegs{}.rcx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rdx)-offRegsRDX]
	_ = [1]struct{}{}[offRegsRDX-unsafe.Offsetof(cRegs{}.rdx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rbx)-offRegsRBX]
	_ = [1]struct{}{}[offRegsRBX-unsafe.Offsetof(cRegs{}.rbx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rsp)-offRegsRSP]
	_ = [1]struct{}{}[offRegsRSP-unsafe.Offsetof(cRegs{}.rsp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rbp)-offRegsRBP]
	_ = [1]struct{}{}[offRegsRBP-unsafe.Offsetof(cRegs{}.rbp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rsi)-offRegsRSI]
	_ = [1]struct{}{}[offRegsRSI-unsafe.Offsetof(cRegs{}.rsi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rdi)-offRegsRDI]
	_ = [1]struct{}{}[offRegsRDI-unsafe.Offsetof(cRegs{}.rdi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r8)-offRegsR8]
	_ = [1]struct{}{}[offRegsR8-unsafe.Offsetof(cRegs{}.r8)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r9)-offRegsR9]
	_ = [1]struct{}{}[offRegsR9-unsafe.Offsetof(cRegs{}.r9)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r10)-offRegsR10]
	_ = [1]struct{}{}[offRegsR10-unsafe.Offsetof(cRegs{}.r10)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r11)-offRegsR11]
	_ = [1]struct{}{}[offRegsR11-unsafe.Offsetof(cRegs{}.r11)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r12)-offRegsR12]
	_ = [1]struct{}{}[offRegsR12-unsafe.Offsetof(cRegs{}.r12)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r13)-offRegsR13]
	_ = [1]struct{}{}[offRegsR13-unsafe.Offsetof(cRegs{}.r13)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r14)-offRegsR14]
	_ = [1]struct{}{}[offRegsR14-unsafe.Offsetof(cRegs{}.r14)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.r15)-offRegsR15]
	_ = [1]struct{}{}[offRegsR15-unsafe.Offsetof(cRegs{}.r15)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rflags)-offRegsRFLAGS]
	_ = [1]struct{}{}[offRegsRFLAGS-unsafe.Offsetof(cRegs{}.rflags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.dr6)-offRegsDR6]
	_ = [1]struct{}{}[offRegsDR6-unsafe.Offsetof(cRegs{}.dr6)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.dr7)-offRegsDR7]
	_ = [1]struct{}{}[offRegsDR7-unsafe.Offsetof(cRegs{}.dr7)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.rip)-offRegsRIP]
	_ = [1]struct{}{}[offRegsRIP-unsafe.Offsetof(cRegs{}.rip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr0)-offRegsCR0]
	_ = [1]struct{}{}[offRegsCR0-unsafe.Offsetof(cRegs{}.cr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr2)-offRegsCR2]
	_ = [1]struct{}{}[offRegsCR2-unsafe.Offsetof(cRegs{}.cr2)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr3)-offRegsCR3]
	_ = [1]struct{}{}[offRegsCR3-unsafe.Offsetof(cRegs{}.cr3)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cr4)-offRegsCR4]
	_ = [1]struct{}{}[offRegsCR4-unsafe.Offsetof(cRegs{}.cr4)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_cs)-offRegsSysenterCS]
	_ = [1]struct{}{}[offRegsSysenterCS-unsafe.Offsetof(cRegs{}.sysenter_cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_esp)-offRegsSysenterESP]
	_ = [1]struct{}{}[offRegsSysenterESP-unsafe.Offsetof(cRegs{}.sysenter_esp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.sysenter_eip)-offRegsSysenterEIP]
	_ = [1]struct{}{}[offRegsSysenterEIP-unsafe.Offsetof(cRegs{}.sysenter_eip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_efer)-offRegsMsrEFER]
	_ = [1]struct{}{}[offRegsMsrEFER-unsafe.Offsetof(cRegs{}.msr_efer)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_star)-offRegsMsrSTAR]
	_ = [1]struct{}{}[offRegsMsrSTAR-unsafe.Offsetof(cRegs{}.msr_star)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.msr_lstar)-offRegsMsrLSTAR]
	_ = [1]struct{}{}[offRegsMsrLSTAR-unsafe.Offsetof(cRegs{}.msr_lstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gdtr_base)-offRegsGDTRBase]
	_ = [1]struct{}{}[offRegsGDTRBase-unsafe.Offsetof(cRegs{}.gdtr_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.npt_base)-offRegsNptBase]
	_ = [1]struct{}{}[offRegsNptBase-unsafe.Offsetof(cRegs{}.npt_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.vmtrace_pos)-offRegsVmtracePos]
	_ = [1]struct{}{}[offRegsVmtracePos-unsafe.Offsetof(cRegs{}.vmtrace_pos)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs_base)-offRegsCSBase]
	_ = [1]struct{}{}[offRegsCSBase-unsafe.Offsetof(cRegs{}.cs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss_base)-offRegsSSBase]
	_ = [1]struct{}{}[offRegsSSBase-unsafe.Offsetof(cRegs{}.ss_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds_base)-offRegsDSBase]
	_ = [1]struct{}{}[offRegsDSBase-unsafe.Offsetof(cRegs{}.ds_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es_base)-offRegsESBase]
	_ = [1]struct{}{}[offRegsESBase-unsafe.Offsetof(cRegs{}.es_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs_base)-offRegsFSBase]
	_ = [1]struct{}{}[offRegsFSBase-unsafe.Offsetof(cRegs{}.fs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs_base)-offRegsGSBase]
	_ = [1]struct{}{}[offRegsGSBase-unsafe.Offsetof(cRegs{}.gs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs)-offRegsCS]
	_ = [1]struct{}{}[offRegsCS-unsafe.Offsetof(cRegs{}.cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss)-offRegsSS]
	_ = [1]struct{}{}[offRegsSS-unsafe.Offsetof(cRegs{}.ss)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds)-offRegsDS]
	_ = [1]struct{}{}[offRegsDS-unsafe.Offsetof(cRegs{}.ds)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es)-offRegsES]
	_ = [1]struct{}{}[offRegsES-unsafe.Offsetof(cRegs{}.es)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs)-offRegsFS]
	_ = [1]struct{}{}[offRegsFS-unsafe.Offsetof(cRegs{}.fs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs)-offRegsGS]
	_ = [1]struct{}{}[offRegsGS-unsafe.Offsetof(cRegs{}.gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.shadow_gs)-offRegsShadowGS]
	_ = [1]struct{}{}[offRegsShadowGS-unsafe.Offsetof(cRegs{}.shadow_gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gdtr_limit)-offRegsGDTRLimit]
	_ = [1]struct{}{}[offRegsGDTRLimit-unsafe.Offsetof(cRegs{}.gdtr_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.cs_sel)-offRegsCSSel]
	_ = [1]struct{}{}[offRegsCSSel-unsafe.Offsetof(cRegs{}.cs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ss_sel)-offRegsSSSel]
	_ = [1]struct{}{}[offRegsSSSel-unsafe.Offsetof(cRegs{}.ss_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.ds_sel)-offRegsDSSel]
	_ = [1]struct{}{}[offRegsDSSel-unsafe.Offsetof(cRegs{}.ds_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.es_sel)-offRegsESSel]
	_ = [1]struct{}{}[offRegsESSel-unsafe.Offsetof(cRegs{}.es_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.fs_sel)-offRegsFSSel]
	_ = [1]struct{}{}[offRegsFSSel-unsafe.Offsetof(cRegs{}.fs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cRegs{}.gs_sel)-offRegsGSSel]
	_ = [1]struct{}{}[offRegsGSSel-unsafe.Offsetof(cRegs{}.gs_sel)]
)

// struct hvm_hw_cpu, including the order of its per-register arrays.
var (
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rax)-offCPURAX]
	_ = [1]struct{}{}[offCPURAX-unsafe.Offsetof(cHVMCPU{}.rax)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rbx)-offCPURBX]
	_ = [1]struct{}{}[offCPURBX-unsafe.Offsetof(cHVMCPU{}.rbx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rcx)-offCPURCX]
	_ = [1]struct{}{}[offCPURCX-unsafe.Offsetof(cHVMCPU{}.rcx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rdx)-offCPURDX]
	_ = [1]struct{}{}[offCPURDX-unsafe.Offsetof(cHVMCPU{}.rdx)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rbp)-offCPURBP]
	_ = [1]struct{}{}[offCPURBP-unsafe.Offsetof(cHVMCPU{}.rbp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rsi)-offCPURSI]
	_ = [1]struct{}{}[offCPURSI-unsafe.Offsetof(cHVMCPU{}.rsi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rdi)-offCPURDI]
	_ = [1]struct{}{}[offCPURDI-unsafe.Offsetof(cHVMCPU{}.rdi)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rsp)-offCPURSP]
	_ = [1]struct{}{}[offCPURSP-unsafe.Offsetof(cHVMCPU{}.rsp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r8)-offCPUR8]
	_ = [1]struct{}{}[offCPUR8-unsafe.Offsetof(cHVMCPU{}.r8)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rip)-offCPURIP]
	_ = [1]struct{}{}[offCPURIP-unsafe.Offsetof(cHVMCPU{}.rip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.rflags)-offCPURFLAGS]
	_ = [1]struct{}{}[offCPURFLAGS-unsafe.Offsetof(cHVMCPU{}.rflags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr0)-offCPUCR0]
	_ = [1]struct{}{}[offCPUCR0-unsafe.Offsetof(cHVMCPU{}.cr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr2)-offCPUCR2]
	_ = [1]struct{}{}[offCPUCR2-unsafe.Offsetof(cHVMCPU{}.cr2)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr3)-offCPUCR3]
	_ = [1]struct{}{}[offCPUCR3-unsafe.Offsetof(cHVMCPU{}.cr3)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cr4)-offCPUCR4]
	_ = [1]struct{}{}[offCPUCR4-unsafe.Offsetof(cHVMCPU{}.cr4)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.dr0)-offCPUDR0]
	_ = [1]struct{}{}[offCPUDR0-unsafe.Offsetof(cHVMCPU{}.dr0)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_sel)-offCPUCSSel]
	_ = [1]struct{}{}[offCPUCSSel-unsafe.Offsetof(cHVMCPU{}.cs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_limit)-offCPUCSLimit]
	_ = [1]struct{}{}[offCPUCSLimit-unsafe.Offsetof(cHVMCPU{}.cs_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_base)-offCPUCSBase]
	_ = [1]struct{}{}[offCPUCSBase-unsafe.Offsetof(cHVMCPU{}.cs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.cs_arbytes)-offCPUCSAR]
	_ = [1]struct{}{}[offCPUCSAR-unsafe.Offsetof(cHVMCPU{}.cs_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_cs)-offCPUSysCS]
	_ = [1]struct{}{}[offCPUSysCS-unsafe.Offsetof(cHVMCPU{}.sysenter_cs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_esp)-offCPUSysESP]
	_ = [1]struct{}{}[offCPUSysESP-unsafe.Offsetof(cHVMCPU{}.sysenter_esp)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.sysenter_eip)-offCPUSysEIP]
	_ = [1]struct{}{}[offCPUSysEIP-unsafe.Offsetof(cHVMCPU{}.sysenter_eip)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.shadow_gs)-offCPUShadowGS]
	_ = [1]struct{}{}[offCPUShadowGS-unsafe.Offsetof(cHVMCPU{}.shadow_gs)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_flags)-offCPUMsrFlags]
	_ = [1]struct{}{}[offCPUMsrFlags-unsafe.Offsetof(cHVMCPU{}.msr_flags)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_lstar)-offCPUMsrLSTAR]
	_ = [1]struct{}{}[offCPUMsrLSTAR-unsafe.Offsetof(cHVMCPU{}.msr_lstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_star)-offCPUMsrSTAR]
	_ = [1]struct{}{}[offCPUMsrSTAR-unsafe.Offsetof(cHVMCPU{}.msr_star)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_cstar)-offCPUMsrCSTAR]
	_ = [1]struct{}{}[offCPUMsrCSTAR-unsafe.Offsetof(cHVMCPU{}.msr_cstar)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_syscall_mask)-offCPUMsrSFMASK]
	_ = [1]struct{}{}[offCPUMsrSFMASK-unsafe.Offsetof(cHVMCPU{}.msr_syscall_mask)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.msr_efer)-offCPUMsrEFER]
	_ = [1]struct{}{}[offCPUMsrEFER-unsafe.Offsetof(cHVMCPU{}.msr_efer)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_sel)-(offCPUCSSel+4*1)]
	_ = [1]struct{}{}[(offCPUCSSel+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.fs_sel)-(offCPUCSSel+4*3)]
	_ = [1]struct{}{}[(offCPUCSSel+4*3)-unsafe.Offsetof(cHVMCPU{}.fs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.gs_sel)-(offCPUCSSel+4*4)]
	_ = [1]struct{}{}[(offCPUCSSel+4*4)-unsafe.Offsetof(cHVMCPU{}.gs_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_sel)-(offCPUCSSel+4*5)]
	_ = [1]struct{}{}[(offCPUCSSel+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_sel)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_limit)-(offCPUCSLimit+4*1)]
	_ = [1]struct{}{}[(offCPUCSLimit+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_limit)-(offCPUCSLimit+4*5)]
	_ = [1]struct{}{}[(offCPUCSLimit+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_limit)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.fs_base)-(offCPUCSBase+8*3)]
	_ = [1]struct{}{}[(offCPUCSBase+8*3)-unsafe.Offsetof(cHVMCPU{}.fs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.gs_base)-(offCPUCSBase+8*4)]
	_ = [1]struct{}{}[(offCPUCSBase+8*4)-unsafe.Offsetof(cHVMCPU{}.gs_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_base)-(offCPUCSBase+8*5)]
	_ = [1]struct{}{}[(offCPUCSBase+8*5)-unsafe.Offsetof(cHVMCPU{}.ss_base)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ds_arbytes)-(offCPUCSAR+4*1)]
	_ = [1]struct{}{}[(offCPUCSAR+4*1)-unsafe.Offsetof(cHVMCPU{}.ds_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.ss_arbytes)-(offCPUCSAR+4*5)]
	_ = [1]struct{}{}[(offCPUCSAR+4*5)-unsafe.Offsetof(cHVMCPU{}.ss_arbytes)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r15)-(offCPURAX+8*15)]
	_ = [1]struct{}{}[(offCPURAX+8*15)-unsafe.Offsetof(cHVMCPU{}.r15)]
	_ = [1]struct{}{}[unsafe.Offsetof(cHVMCPU{}.r12)-(offCPURAX+8*12)]
	_ = [1]struct{}{}[(offCPURAX+8*12)-unsafe.Offsetof(cHVMCPU{}.r12)]
)

// Flag, reason, event-type and access values.
var (
	_ = [1]struct{}{}[C.VM_EVENT_INTERFACE_VERSION-InterfaceVersion]
	_ = [1]struct{}{}[InterfaceVersion-C.VM_EVENT_INTERFACE_VERSION]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_VCPU_PAUSED-FlagVCPUPaused]
	_ = [1]struct{}{}[FlagVCPUPaused-C.VM_EVENT_FLAG_VCPU_PAUSED]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_FOREIGN-FlagForeign]
	_ = [1]struct{}{}[FlagForeign-C.VM_EVENT_FLAG_FOREIGN]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_EMULATE-FlagEmulate]
	_ = [1]struct{}{}[FlagEmulate-C.VM_EVENT_FLAG_EMULATE]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_EMULATE_NOWRITE-FlagEmulateNoWrite]
	_ = [1]struct{}{}[FlagEmulateNoWrite-C.VM_EVENT_FLAG_EMULATE_NOWRITE]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_TOGGLE_SINGLESTEP-FlagToggleSingleStep]
	_ = [1]struct{}{}[FlagToggleSingleStep-C.VM_EVENT_FLAG_TOGGLE_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_EMUL_READ_DATA-FlagSetEmulReadData]
	_ = [1]struct{}{}[FlagSetEmulReadData-C.VM_EVENT_FLAG_SET_EMUL_READ_DATA]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_DENY-FlagDeny]
	_ = [1]struct{}{}[FlagDeny-C.VM_EVENT_FLAG_DENY]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_ALTERNATE_P2M-FlagAlternateP2M]
	_ = [1]struct{}{}[FlagAlternateP2M-C.VM_EVENT_FLAG_ALTERNATE_P2M]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_REGISTERS-FlagSetRegisters]
	_ = [1]struct{}{}[FlagSetRegisters-C.VM_EVENT_FLAG_SET_REGISTERS]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_SET_EMUL_INSN_DATA-FlagSetEmulInsnData]
	_ = [1]struct{}{}[FlagSetEmulInsnData-C.VM_EVENT_FLAG_SET_EMUL_INSN_DATA]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_GET_NEXT_INTERRUPT-FlagGetNextInterrupt]
	_ = [1]struct{}{}[FlagGetNextInterrupt-C.VM_EVENT_FLAG_GET_NEXT_INTERRUPT]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_FAST_SINGLESTEP-FlagFastSingleStep]
	_ = [1]struct{}{}[FlagFastSingleStep-C.VM_EVENT_FLAG_FAST_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_FLAG_NESTED_P2M-FlagNestedP2M]
	_ = [1]struct{}{}[FlagNestedP2M-C.VM_EVENT_FLAG_NESTED_P2M]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_UNKNOWN-ReasonUnknown]
	_ = [1]struct{}{}[ReasonUnknown-C.VM_EVENT_REASON_UNKNOWN]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_ACCESS-ReasonMemAccess]
	_ = [1]struct{}{}[ReasonMemAccess-C.VM_EVENT_REASON_MEM_ACCESS]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_SHARING-ReasonMemSharing]
	_ = [1]struct{}{}[ReasonMemSharing-C.VM_EVENT_REASON_MEM_SHARING]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MEM_PAGING-ReasonMemPaging]
	_ = [1]struct{}{}[ReasonMemPaging-C.VM_EVENT_REASON_MEM_PAGING]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_WRITE_CTRLREG-ReasonWriteCtrlReg]
	_ = [1]struct{}{}[ReasonWriteCtrlReg-C.VM_EVENT_REASON_WRITE_CTRLREG]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_MOV_TO_MSR-ReasonMovToMSR]
	_ = [1]struct{}{}[ReasonMovToMSR-C.VM_EVENT_REASON_MOV_TO_MSR]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_SOFTWARE_BREAKPOINT-ReasonSoftwareBreakpoint]
	_ = [1]struct{}{}[ReasonSoftwareBreakpoint-C.VM_EVENT_REASON_SOFTWARE_BREAKPOINT]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_SINGLESTEP-ReasonSingleStep]
	_ = [1]struct{}{}[ReasonSingleStep-C.VM_EVENT_REASON_SINGLESTEP]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_GUEST_REQUEST-ReasonGuestRequest]
	_ = [1]struct{}{}[ReasonGuestRequest-C.VM_EVENT_REASON_GUEST_REQUEST]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_DEBUG_EXCEPTION-ReasonDebugException]
	_ = [1]struct{}{}[ReasonDebugException-C.VM_EVENT_REASON_DEBUG_EXCEPTION]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_CPUID-ReasonCPUID]
	_ = [1]struct{}{}[ReasonCPUID-C.VM_EVENT_REASON_CPUID]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_PRIVILEGED_CALL-ReasonPrivilegedCall]
	_ = [1]struct{}{}[ReasonPrivilegedCall-C.VM_EVENT_REASON_PRIVILEGED_CALL]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_INTERRUPT-ReasonInterrupt]
	_ = [1]struct{}{}[ReasonInterrupt-C.VM_EVENT_REASON_INTERRUPT]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_DESCRIPTOR_ACCESS-ReasonDescriptorAccess]
	_ = [1]struct{}{}[ReasonDescriptorAccess-C.VM_EVENT_REASON_DESCRIPTOR_ACCESS]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_EMUL_UNIMPLEMENTED-ReasonEmulUnimplemented]
	_ = [1]struct{}{}[ReasonEmulUnimplemented-C.VM_EVENT_REASON_EMUL_UNIMPLEMENTED]
	_ = [1]struct{}{}[C.VM_EVENT_REASON_VMEXIT-ReasonVMExit]
	_ = [1]struct{}{}[ReasonVMExit-C.VM_EVENT_REASON_VMEXIT]
	_ = [1]struct{}{}[C.MEM_ACCESS_R-memAccessR]
	_ = [1]struct{}{}[memAccessR-C.MEM_ACCESS_R]
	_ = [1]struct{}{}[C.MEM_ACCESS_W-memAccessW]
	_ = [1]struct{}{}[memAccessW-C.MEM_ACCESS_W]
	_ = [1]struct{}{}[C.MEM_ACCESS_X-memAccessX]
	_ = [1]struct{}{}[memAccessX-C.MEM_ACCESS_X]
	_ = [1]struct{}{}[C.MEM_ACCESS_GLA_VALID-memAccessGLAValid]
	_ = [1]struct{}{}[memAccessGLAValid-C.MEM_ACCESS_GLA_VALID]
	_ = [1]struct{}{}[C.MEM_ACCESS_FAULT_WITH_GLA-memAccessFaultWithGLA]
	_ = [1]struct{}{}[memAccessFaultWithGLA-C.MEM_ACCESS_FAULT_WITH_GLA]
	_ = [1]struct{}{}[C.MEM_ACCESS_FAULT_IN_GPT-memAccessFaultInGPT]
	_ = [1]struct{}{}[memAccessFaultInGPT-C.MEM_ACCESS_FAULT_IN_GPT]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_hw_exc-EventTypeHWException]
	_ = [1]struct{}{}[EventTypeHWException-C.XEN_DMOP_EVENT_hw_exc]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_sw_int-EventTypeSWInterrupt]
	_ = [1]struct{}{}[EventTypeSWInterrupt-C.XEN_DMOP_EVENT_sw_int]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_pri_sw_exc-EventTypePrivSWExc]
	_ = [1]struct{}{}[EventTypePrivSWExc-C.XEN_DMOP_EVENT_pri_sw_exc]
	_ = [1]struct{}{}[C.XEN_DMOP_EVENT_sw_exc-EventTypeSWException]
	_ = [1]struct{}{}[EventTypeSWException-C.XEN_DMOP_EVENT_sw_exc]
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
	_ = [1]struct{}{}[C.XC_PAGE_SIZE-PageSize]
	_ = [1]struct{}{}[PageSize-C.XC_PAGE_SIZE]
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
func (c *cFront) page() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(c.f.sring)), PageSize) }

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
func cRequestBytes(i uint32) (b [RequestSize]byte) {
	var r cRequest
	C.vmi_fill_request(&r, C.uint32_t(i))
	copy(b[:], unsafe.Slice((*byte)(unsafe.Pointer(&r)), unsafe.Sizeof(r)))
	return b
}

// cHVMCPURecord returns an hvm_hw_cpu filled through the C struct's
// fields with values derived from seed, for comparing DecodeHVMCPU with
// the header's layout.
func cHVMCPURecord(seed uint64) (b [hvmCPUSize]byte) {
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
