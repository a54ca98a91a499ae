package xen

// Layout of the vm_event ABI for VM_EVENT_INTERFACE_VERSION 7 (Xen 4.15 to
// 4.19, including Debian 12's 4.17), from xen/vm_event.h and xen/io/ring.h on
// x86-64. layout_cgo_test.go and the build-time assertions in layout_xen.go
// compare every constant here with the C headers.

// InterfaceVersion is the VM_EVENT_INTERFACE_VERSION this package speaks.
// Xen drops responses whose version differs.
const InterfaceVersion = 0x00000007

// PageSize is the size of the shared ring page (XC_PAGE_SIZE).
const PageSize = 4096

// Shared ring page (struct vm_event_sring).
const (
	offReqProd   = 0
	offReqEvent  = 4
	offRspProd   = 8
	offRspEvent  = 12
	offPvt       = 16
	ringHdrSize  = 64 // offsetof(struct vm_event_sring, ring)
	RingEntries  = 8  // __CONST_RING_SIZE(vm_event, XC_PAGE_SIZE)
	EntrySize    = 400
	RequestSize  = EntrySize // sizeof(vm_event_request_t)
	ResponseSize = EntrySize // sizeof(vm_event_response_t)
)

// vm_event_st.
const (
	offVersion   = 0
	offFlags     = 4
	offReason    = 8
	offVCPUID    = 12
	offAltp2mIdx = 16
	offU         = 24 // union u
	offData      = 56 // union data
)

// Members of union u used here (offsets inside u).
const (
	// struct vm_event_mem_access
	offMemAccessGFN    = 0
	offMemAccessOffset = 8
	offMemAccessGLA    = 16
	offMemAccessFlags  = 24
	// struct vm_event_singlestep
	offSingleStepGFN = 0
	// struct vm_event_fast_singlestep
	offFastSingleStepP2MIdx = 0
	// struct vm_event_debug (software_breakpoint, debug_exception)
	offDebugGFN        = 0
	offDebugPendingDbg = 8
	offDebugInsnLength = 16
	offDebugType       = 20
)

// struct vm_event_regs_x86, offsets inside data.
const (
	offRegsRAX         = 0
	offRegsRCX         = 8
	offRegsRDX         = 16
	offRegsRBX         = 24
	offRegsRSP         = 32
	offRegsRBP         = 40
	offRegsRSI         = 48
	offRegsRDI         = 56
	offRegsR8          = 64
	offRegsR9          = 72
	offRegsR10         = 80
	offRegsR11         = 88
	offRegsR12         = 96
	offRegsR13         = 104
	offRegsR14         = 112
	offRegsR15         = 120
	offRegsRFLAGS      = 128
	offRegsDR6         = 136
	offRegsDR7         = 144
	offRegsRIP         = 152
	offRegsCR0         = 160
	offRegsCR2         = 168
	offRegsCR3         = 176
	offRegsCR4         = 184
	offRegsSysenterCS  = 192
	offRegsSysenterESP = 200
	offRegsSysenterEIP = 208
	offRegsMsrEFER     = 216
	offRegsMsrSTAR     = 224
	offRegsMsrLSTAR    = 232
	offRegsGDTRBase    = 240
	offRegsNptBase     = 248
	offRegsVmtracePos  = 256
	offRegsCSBase      = 264 // uint32
	offRegsSSBase      = 268 // uint32
	offRegsDSBase      = 272 // uint32
	offRegsESBase      = 276 // uint32
	offRegsFSBase      = 280
	offRegsGSBase      = 288
	offRegsCS          = 296 // struct vm_event_x86_selector_reg {limit:20; ar:12}
	offRegsSS          = 300
	offRegsDS          = 304
	offRegsES          = 308
	offRegsFS          = 312
	offRegsGS          = 316
	offRegsShadowGS    = 320
	offRegsGDTRLimit   = 328 // uint16
	offRegsCSSel       = 330 // uint16
	offRegsSSSel       = 332
	offRegsDSSel       = 334
	offRegsESSel       = 336
	offRegsFSSel       = 338
	offRegsGSSel       = 340
	regsX86Size        = 344
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
	memAccessR            = 1 << 0
	memAccessW            = 1 << 1
	memAccessX            = 1 << 2
	memAccessGLAValid     = 1 << 3
	memAccessFaultWithGLA = 1 << 4
	memAccessFaultInGPT   = 1 << 5
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
	hvmCPUSize     = 1032

	offCPURAX       = 512
	offCPURBX       = 520
	offCPURCX       = 528
	offCPURDX       = 536
	offCPURBP       = 544
	offCPURSI       = 552
	offCPURDI       = 560
	offCPURSP       = 568
	offCPUR8        = 576
	offCPURIP       = 640
	offCPURFLAGS    = 648
	offCPUCR0       = 656
	offCPUCR2       = 664
	offCPUCR3       = 672
	offCPUCR4       = 680
	offCPUDR0       = 688
	offCPUCSSel     = 736 // uint32 each: cs ds es fs gs ss tr ldtr
	offCPUCSLimit   = 768 // uint32 each: cs ds es fs gs ss tr ldtr idtr gdtr
	offCPUCSBase    = 808 // uint64 each: cs ds es fs gs ss tr ldtr idtr gdtr
	offCPUCSAR      = 888 // uint32 each: cs ds es fs gs ss tr ldtr
	offCPUSysCS     = 920
	offCPUSysESP    = 928
	offCPUSysEIP    = 936
	offCPUShadowGS  = 944
	offCPUMsrFlags  = 952
	offCPUMsrLSTAR  = 960
	offCPUMsrSTAR   = 968
	offCPUMsrCSTAR  = 976
	offCPUMsrSFMASK = 984
	offCPUMsrEFER   = 992
)

// struct hvm_save_descriptor.
const (
	hvmSaveDescSize = 8 // typecode u16, instance u16, length u32
	hvmSaveCodeEnd  = 0 // HVM_SAVE_CODE(END)
)

// maxGuestGfn is the largest frame number of a 52-bit guest physical
// address, the architectural limit on x86-64.
const maxGuestGfn = 1<<40 - 1
