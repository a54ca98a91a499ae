// Package abi holds the Xen ABI the Xen driver speaks, as constants: the
// vm_event ring and request/response layout (VM_EVENT_INTERFACE_VERSION 7,
// Xen 4.15 to 4.19, including Debian 12's 4.17) from xen/vm_event.h and
// xen/io/ring.h, the hvm_hw_cpu save record from
// xen/arch-x86/hvm/save.h, and the flags, reasons and event types used
// with them, on x86-64. The driver's abi_xen.go (build tag xen) checks
// every constant against the C headers at compile time.
package abi

// InterfaceVersion is the VM_EVENT_INTERFACE_VERSION the driver speaks.
// Xen drops responses whose version differs.
const InterfaceVersion = 0x00000007

// PageSize is the size of the shared ring page (XC_PAGE_SIZE).
const PageSize = 4096

// Shared ring page (struct vm_event_sring).
const (
	OffReqProd   = 0
	OffReqEvent  = 4
	OffRspProd   = 8
	OffRspEvent  = 12
	OffPvt       = 16
	RingHdrSize  = 64 // offsetof(struct vm_event_sring, ring)
	RingEntries  = 8  // __CONST_RING_SIZE(vm_event, XC_PAGE_SIZE)
	EntrySize    = 400
	RequestSize  = EntrySize // sizeof(vm_event_request_t)
	ResponseSize = EntrySize // sizeof(vm_event_response_t)
)

// vm_event_st.
const (
	OffVersion   = 0
	OffFlags     = 4
	OffReason    = 8
	OffVCPUID    = 12
	OffAltp2mIdx = 16
	OffU         = 24 // union u
	OffData      = 56 // union data
)

// Members of union u used here (offsets inside u).
const (
	// struct vm_event_mem_access
	OffMemAccessGFN    = 0
	OffMemAccessOffset = 8
	OffMemAccessGLA    = 16
	OffMemAccessFlags  = 24
	// struct vm_event_singlestep
	OffSingleStepGFN = 0
	// struct vm_event_fast_singlestep
	OffFastSingleStepP2MIdx = 0
	// struct vm_event_debug (software_breakpoint, debug_exception)
	OffDebugGFN        = 0
	OffDebugPendingDbg = 8
	OffDebugInsnLength = 16
	OffDebugType       = 20
)

// struct vm_event_regs_x86, offsets inside data.
const (
	OffRegsRAX         = 0
	OffRegsRCX         = 8
	OffRegsRDX         = 16
	OffRegsRBX         = 24
	OffRegsRSP         = 32
	OffRegsRBP         = 40
	OffRegsRSI         = 48
	OffRegsRDI         = 56
	OffRegsR8          = 64
	OffRegsR9          = 72
	OffRegsR10         = 80
	OffRegsR11         = 88
	OffRegsR12         = 96
	OffRegsR13         = 104
	OffRegsR14         = 112
	OffRegsR15         = 120
	OffRegsRFLAGS      = 128
	OffRegsDR6         = 136
	OffRegsDR7         = 144
	OffRegsRIP         = 152
	OffRegsCR0         = 160
	OffRegsCR2         = 168
	OffRegsCR3         = 176
	OffRegsCR4         = 184
	OffRegsSysenterCS  = 192
	OffRegsSysenterESP = 200
	OffRegsSysenterEIP = 208
	OffRegsMsrEFER     = 216
	OffRegsMsrSTAR     = 224
	OffRegsMsrLSTAR    = 232
	OffRegsGDTRBase    = 240
	OffRegsNptBase     = 248
	OffRegsVmtracePos  = 256
	OffRegsCSBase      = 264 // uint32
	OffRegsSSBase      = 268 // uint32
	OffRegsDSBase      = 272 // uint32
	OffRegsESBase      = 276 // uint32
	OffRegsFSBase      = 280
	OffRegsGSBase      = 288
	OffRegsCS          = 296 // struct vm_event_x86_selector_reg {limit:20; ar:12}
	OffRegsSS          = 300
	OffRegsDS          = 304
	OffRegsES          = 308
	OffRegsFS          = 312
	OffRegsGS          = 316
	OffRegsShadowGS    = 320
	OffRegsGDTRLimit   = 328 // uint16
	OffRegsCSSel       = 330 // uint16
	OffRegsSSSel       = 332
	OffRegsDSSel       = 334
	OffRegsESSel       = 336
	OffRegsFSSel       = 338
	OffRegsGSSel       = 340
	RegsX86Size        = 344
)

// VM_EVENT_FLAG_*.
const (
	FlagVCPUPaused       = 1 << 0
	FlagForeign          = 1 << 1
	FlagEmulate          = 1 << 2
	FlagEmulateNoWrite   = 1 << 3
	FlagToggleSingleStep = 1 << 4
	FlagSetEmulReadData  = 1 << 5
	FlagDeny             = 1 << 6
	FlagAlternateP2M     = 1 << 7
	FlagSetRegisters     = 1 << 8
	FlagSetEmulInsnData  = 1 << 9
	FlagGetNextInterrupt = 1 << 10
	FlagFastSingleStep   = 1 << 11
	FlagNestedP2M        = 1 << 12
)

// VM_EVENT_REASON_*.
const (
	ReasonUnknown            = 0
	ReasonMemAccess          = 1
	ReasonMemSharing         = 2
	ReasonMemPaging          = 3
	ReasonWriteCtrlReg       = 4
	ReasonMovToMSR           = 5
	ReasonSoftwareBreakpoint = 6
	ReasonSingleStep         = 7
	ReasonGuestRequest       = 8
	ReasonDebugException     = 9
	ReasonCPUID              = 10
	ReasonPrivilegedCall     = 11
	ReasonInterrupt          = 12
	ReasonDescriptorAccess   = 13
	ReasonEmulUnimplemented  = 14
	ReasonVMExit             = 15
)

// MEM_ACCESS_* flags of a mem_access request.
const (
	MemAccessR            = 1 << 0
	MemAccessW            = 1 << 1
	MemAccessX            = 1 << 2
	MemAccessGLAValid     = 1 << 3
	MemAccessFaultWithGLA = 1 << 4
	MemAccessFaultInGPT   = 1 << 5
)

// Event types of xendevicemodel_inject_event (XEN_DMOP_EVENT_*, equal to
// Xen's X86_EVENTTYPE_* and to the HVMOP_TRAP_* type in vm_event_debug).
const (
	EventTypeHWException = 3
	EventTypeSWInterrupt = 4
	EventTypePrivSWExc   = 5
	EventTypeSWException = 6
)

// NoErrorCode tells xendevicemodel_inject_event the exception has no error
// code.
const NoErrorCode = ^uint32(0)

// Exception vectors.
const (
	VectorDebug      = 1
	VectorBreakpoint = 3
	VectorPageFault  = 14
)

// hvm_hw_cpu (HVM save record CPU, typecode 2), from
// xen/arch-x86/hvm/save.h.
const (
	HVMSaveCodeCPU = 2
	HVMCPUSize     = 1032

	OffCPURAX       = 512
	OffCPURBX       = 520
	OffCPURCX       = 528
	OffCPURDX       = 536
	OffCPURBP       = 544
	OffCPURSI       = 552
	OffCPURDI       = 560
	OffCPURSP       = 568
	OffCPUR8        = 576
	OffCPURIP       = 640
	OffCPURFLAGS    = 648
	OffCPUCR0       = 656
	OffCPUCR2       = 664
	OffCPUCR3       = 672
	OffCPUCR4       = 680
	OffCPUDR0       = 688
	OffCPUCSSel     = 736 // uint32 each: cs ds es fs gs ss tr ldtr
	OffCPUCSLimit   = 768 // uint32 each: cs ds es fs gs ss tr ldtr idtr gdtr
	OffCPUCSBase    = 808 // uint64 each: cs ds es fs gs ss tr ldtr idtr gdtr
	OffCPUCSAR      = 888 // uint32 each: cs ds es fs gs ss tr ldtr
	OffCPUSysCS     = 920
	OffCPUSysESP    = 928
	OffCPUSysEIP    = 936
	OffCPUShadowGS  = 944
	OffCPUMsrFlags  = 952
	OffCPUMsrLSTAR  = 960
	OffCPUMsrSTAR   = 968
	OffCPUMsrCSTAR  = 976
	OffCPUMsrSFMASK = 984
	OffCPUMsrEFER   = 992
)

// struct hvm_save_descriptor.
const (
	HVMSaveDescSize = 8 // typecode u16, instance u16, length u32
	HVMSaveCodeEnd  = 0 // HVM_SAVE_CODE(END)
)
