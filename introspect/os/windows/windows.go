// Package windows reads a running Windows x64 kernel from outside the guest:
// it finds the kernel image from the syscall entry point, and, with offsets
// from the kernel's profile (a Volatility ISF), reads processes, threads,
// handle tables, object headers, names and file objects.
//
// Every structure it reads comes from guest memory and may be forged: each
// walk is bounded, and bad data yields an error wrapping one of this
// package's sentinel errors (so a caller can count them), never a panic.
// Reads of pages the guest has paged out return the paging translation error
// (see paging.PageFault) so that an event loop can inject a page fault and
// retry.
package windows

import (
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/internal/klist"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Sentinel errors, wrapped by the errors this package returns.
var (
	// ErrCorrupt: a guest structure is inconsistent (forged or torn).
	ErrCorrupt = errors.New("corrupt guest structure")
	// ErrBadHandle: a handle value is out of range of its handle table.
	ErrBadHandle = errors.New("invalid handle")
	// ErrNoObject: a handle table entry is free.
	ErrNoObject = errors.New("handle refers to no object")
	// ErrNoKPCR: neither GS base holds a kernel address.
	ErrNoKPCR = errors.New("no KPCR in GS bases")
	// ErrNoKernel: no Windows kernel image was found.
	ErrNoKernel = errors.New("Windows kernel not found")
)

// Bounds on what the guest can make a walk do.
const (
	// MaxUnicodeBytes bounds a UNICODE_STRING (its Length is a USHORT).
	MaxUnicodeBytes = 0xfffe
	// MaxNameDepth bounds the object directory chain of an object path.
	MaxNameDepth = 16
	// MaxProcesses bounds the process list walk.
	MaxProcesses = 1 << 16
	// MaxHandleIndex bounds handle values (Windows caps a table at 2^24).
	MaxHandleIndex = 1 << 24
)

// kernelHandleBit marks kernel handles (0xffffffff8xxxxxxx): they index the
// System process's handle table.
const kernelHandleBit = 1 << 31

// layout holds the profile offsets the package uses, resolved once.
type layout struct {
	epPid, epPpid, epImageName, epSectionBase, epPeb, epObjectTable, epLinks uint64
	imageNameLen                                                             uint64
	kpDTB, kpUserDTB                                                         uint64
	hasUserDTB                                                               bool
	epExitStatus                                                             uint64
	hasExitStatus                                                            bool
	kpcrPrcb, prcbThread                                                     uint64
	thApcProcess, thProcess                                                  uint64
	htTableCode, hteSize                                                     uint64
	// Win8+ handle entries pack the object header address into
	// ObjectPointerBits; Win7 entries hold the pointer with flag bits.
	hteBits                                          bool
	hteBitPos, hteBitLen                             uint8
	ohBody, ohTypeIndex, ohInfoMask, ohSize          uint64
	nameInfoSize, creatorInfoSize                    uint64
	nameInfoName, nameInfoDir                        uint64
	otName                                           uint64
	foDevice, foFileName                             uint64
	usLength, usBuffer                               uint64
	oaRoot, oaName                                   uint64
	symSystemProcess, symTypeIndexTable, symProcHead uint64
	symCookie                                        uint64
	hasCookie                                        bool
}

// OS reads one Windows guest. It is safe for use by one event loop at a time.
type OS struct {
	mem  *paging.Memory
	prof *profile.Profile
	base introspect.Va
	l    layout

	cookie      byte
	cookieValid bool
	typeNames   map[introspect.Va]string // OBJECT_TYPE address -> name
}

// New returns an OS for the kernel loaded at base described by prof. It
// fails when the profile lacks a structure or symbol the package needs.
func New(prof *profile.Profile, mem *paging.Memory, base introspect.Va) (*OS, error) {
	o := &OS{mem: mem, prof: prof, base: base, typeNames: map[introspect.Va]string{}}
	var err error
	off := func(s, f string) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = prof.Offset(s, f)
		return v
	}
	size := func(s string) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = prof.Size(s)
		return v
	}
	sym := func(s string) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		v, err = prof.Symbol(s)
		return v
	}
	l := &o.l
	l.epPid = off("_EPROCESS", "UniqueProcessId")
	l.epPpid = off("_EPROCESS", "InheritedFromUniqueProcessId")
	l.epImageName = off("_EPROCESS", "ImageFileName")
	l.epSectionBase = off("_EPROCESS", "SectionBaseAddress")
	l.epPeb = off("_EPROCESS", "Peb")
	l.epObjectTable = off("_EPROCESS", "ObjectTable")
	l.epLinks = off("_EPROCESS", "ActiveProcessLinks")
	l.kpDTB = off("_KPROCESS", "DirectoryTableBase")
	l.kpcrPrcb = off("_KPCR", "Prcb")
	l.prcbThread = off("_KPRCB", "CurrentThread")
	l.thApcProcess = off("_KTHREAD", "ApcState") + off("_KAPC_STATE", "Process")
	l.thProcess = off("_KTHREAD", "Process")
	l.htTableCode = off("_HANDLE_TABLE", "TableCode")
	l.hteSize = size("_HANDLE_TABLE_ENTRY")
	l.ohBody = off("_OBJECT_HEADER", "Body")
	l.ohTypeIndex = off("_OBJECT_HEADER", "TypeIndex")
	l.ohInfoMask = off("_OBJECT_HEADER", "InfoMask")
	l.ohSize = size("_OBJECT_HEADER")
	l.nameInfoSize = size("_OBJECT_HEADER_NAME_INFO")
	l.creatorInfoSize = size("_OBJECT_HEADER_CREATOR_INFO")
	l.nameInfoName = off("_OBJECT_HEADER_NAME_INFO", "Name")
	l.nameInfoDir = off("_OBJECT_HEADER_NAME_INFO", "Directory")
	l.otName = off("_OBJECT_TYPE", "Name")
	l.foDevice = off("_FILE_OBJECT", "DeviceObject")
	l.foFileName = off("_FILE_OBJECT", "FileName")
	l.usLength = off("_UNICODE_STRING", "Length")
	l.usBuffer = off("_UNICODE_STRING", "Buffer")
	l.oaRoot = off("_OBJECT_ATTRIBUTES", "RootDirectory")
	l.oaName = off("_OBJECT_ATTRIBUTES", "ObjectName")
	l.symSystemProcess = sym("PsInitialSystemProcess")
	l.symTypeIndexTable = sym("ObTypeIndexTable")
	l.symProcHead = sym("PsActiveProcessHead")
	if err != nil {
		return nil, fmt.Errorf("windows profile %s: %w", prof.Name, err)
	}
	if f, e := prof.Field("_EPROCESS", "ImageFileName"); e == nil && f.Type.Size > 0 && f.Type.Size <= 64 {
		l.imageNameLen = f.Type.Size
	} else {
		l.imageNameLen = 15
	}
	if v, e := prof.Offset("_KPROCESS", "UserDirectoryTableBase"); e == nil {
		l.kpUserDTB, l.hasUserDTB = v, true
	}
	if v, e := prof.Offset("_EPROCESS", "ExitStatus"); e == nil {
		l.epExitStatus, l.hasExitStatus = v, true
	}
	if f, e := prof.Field("_HANDLE_TABLE_ENTRY", "ObjectPointerBits"); e == nil && f.Type.Kind == profile.KindBitfield {
		if f.Offset != 0 || int(f.Type.BitPos)+int(f.Type.BitLen) > 64 || f.Type.BitLen+4 > 60 {
			return nil, fmt.Errorf("windows profile %s: ObjectPointerBits %d:%d: %w", prof.Name, f.Type.BitPos, f.Type.BitLen, ErrCorrupt)
		}
		l.hteBits, l.hteBitPos, l.hteBitLen = true, f.Type.BitPos, f.Type.BitLen
	}
	if v, e := prof.Symbol("ObHeaderCookie"); e == nil {
		l.symCookie, l.hasCookie = v, true
	}
	if l.hteSize == 0 || l.hteSize > 64 || l.ohBody == 0 {
		return nil, fmt.Errorf("windows profile %s: implausible layout: %w", prof.Name, ErrCorrupt)
	}
	return o, nil
}

// Profile returns the kernel's profile.
func (o *OS) Profile() *profile.Profile { return o.prof }

// KernelBase returns the kernel image base.
func (o *OS) KernelBase() introspect.Va { return o.base }

// Memory returns the virtual memory reader.
func (o *OS) Memory() *paging.Memory { return o.mem }

// Symbol returns the run-time address of a kernel symbol.
func (o *OS) Symbol(name string) (introspect.Va, error) {
	rva, err := o.prof.Symbol(name)
	if err != nil {
		return 0, err
	}
	return o.base + introspect.Va(rva), nil
}

// HasUserDirectoryTableBase reports whether the build has KVA-shadow
// user translation roots.
func (o *OS) HasUserDirectoryTableBase() bool { return o.l.hasUserDTB }

// Win8Handles reports whether handle entries use the Win8+ encoding.
func (o *OS) Win8Handles() bool { return o.l.hteBits }

// FlushCaches forgets the object type names cached from guest memory.
func (o *OS) FlushCaches() {
	clear(o.typeNames)
	o.cookieValid = false
}

func (o *OS) u8(root introspect.Pa, va introspect.Va, what string) (uint8, error) {
	v, err := o.mem.ReadU8(root, va)
	if err != nil {
		return 0, fmt.Errorf("read %s at %v: %w", what, va, err)
	}
	return v, nil
}

func (o *OS) u16(root introspect.Pa, va introspect.Va, what string) (uint16, error) {
	v, err := o.mem.ReadU16(root, va)
	if err != nil {
		return 0, fmt.Errorf("read %s at %v: %w", what, va, err)
	}
	return v, nil
}

func (o *OS) u64(root introspect.Pa, va introspect.Va, what string) (uint64, error) {
	v, err := o.mem.ReadU64(root, va)
	if err != nil {
		return 0, fmt.Errorf("read %s at %v: %w", what, va, err)
	}
	return v, nil
}

func (o *OS) ptr(root introspect.Pa, va introspect.Va, what string) (introspect.Va, error) {
	v, err := o.u64(root, va, what)
	return introspect.Va(v), err
}

// IsKernelVA reports whether va is a canonical upper-half address.
func IsKernelVA(va introspect.Va) bool { return uint64(va)>>47 == 0x1ffff }

func (o *OS) kernelPtr(root introspect.Pa, va introspect.Va, what string) (introspect.Va, error) {
	p, err := o.ptr(root, va, what)
	if err != nil {
		return 0, err
	}
	if !IsKernelVA(p) {
		return 0, fmt.Errorf("%s at %v = %v, not a kernel address: %w", what, va, p, ErrCorrupt)
	}
	return p, nil
}

// Root returns the translation root of the address space a vCPU runs in.
func Root(regs *amd64.Registers) introspect.Pa { return introspect.Pa(regs.TranslationRoot()) }

// SystemProcess returns the EPROCESS of the System process
// (PsInitialSystemProcess).
func (o *OS) SystemProcess(root introspect.Pa) (introspect.Va, error) {
	return o.kernelPtr(root, o.base+introspect.Va(o.l.symSystemProcess), "PsInitialSystemProcess")
}

// KernelRoot returns the kernel's translation root: the System process's
// DirectoryTableBase.
func (o *OS) KernelRoot(root introspect.Pa) (introspect.Pa, error) {
	sys, err := o.SystemProcess(root)
	if err != nil {
		return 0, err
	}
	k, _, err := o.TranslationRoots(root, sys)
	return k, err
}

// TranslationRoots returns a process's DirectoryTableBase and, on builds
// with KVA shadowing, its UserDirectoryTableBase (zero otherwise).
func (o *OS) TranslationRoots(root introspect.Pa, proc introspect.Va) (kernel, user introspect.Pa, err error) {
	k, err := o.u64(root, proc+introspect.Va(o.l.kpDTB), "KPROCESS.DirectoryTableBase")
	if err != nil {
		return 0, 0, err
	}
	if k == 0 {
		return 0, 0, fmt.Errorf("process %v has no DirectoryTableBase: %w", proc, ErrCorrupt)
	}
	kernel = introspect.Pa(amd64.CR3Root(k))
	if o.l.hasUserDTB {
		u, err := o.u64(root, proc+introspect.Va(o.l.kpUserDTB), "KPROCESS.UserDirectoryTableBase")
		if err != nil {
			return 0, 0, err
		}
		user = introspect.Pa(amd64.CR3Root(u))
	}
	return kernel, user, nil
}

// KPCR returns the address of the vCPU's processor control region: GS base
// in kernel mode, the kernel GS base (swapped out by SWAPGS) in user mode.
// The CPL alone is not enough around SWAPGS, so the choice is by which of
// the two holds a kernel address.
func KPCR(regs *amd64.Registers) (introspect.Va, error) {
	gs, kgs := introspect.Va(regs.GSBase), introspect.Va(regs.KernelGSBase)
	if regs.CPL() == 0 && IsKernelVA(gs) {
		return gs, nil
	}
	if IsKernelVA(kgs) {
		return kgs, nil
	}
	if IsKernelVA(gs) {
		return gs, nil
	}
	return 0, fmt.Errorf("GS base %v, kernel GS base %v: %w", gs, kgs, ErrNoKPCR)
}

// CurrentThread returns the KTHREAD running on the vCPU
// (KPCR.Prcb.CurrentThread).
func (o *OS) CurrentThread(regs *amd64.Registers) (introspect.Va, error) {
	kpcr, err := KPCR(regs)
	if err != nil {
		return 0, err
	}
	return o.kernelPtr(Root(regs), kpcr+introspect.Va(o.l.kpcrPrcb+o.l.prcbThread), "KPRCB.CurrentThread")
}

// CurrentProcess returns the EPROCESS whose address space the vCPU runs in:
// the thread's ApcState.Process (the attached process), or its own process.
func (o *OS) CurrentProcess(regs *amd64.Registers) (introspect.Va, error) {
	th, err := o.CurrentThread(regs)
	if err != nil {
		return 0, err
	}
	root := Root(regs)
	p, err := o.ptr(root, th+introspect.Va(o.l.thApcProcess), "KTHREAD.ApcState.Process")
	if err != nil {
		return 0, err
	}
	if p == 0 {
		p, err = o.ptr(root, th+introspect.Va(o.l.thProcess), "KTHREAD.Process")
		if err != nil {
			return 0, err
		}
	}
	if !IsKernelVA(p) {
		return 0, fmt.Errorf("thread %v process %v: %w", th, p, ErrCorrupt)
	}
	return p, nil
}

// ProcessID returns EPROCESS.UniqueProcessId.
func (o *OS) ProcessID(root introspect.Pa, proc introspect.Va) (uint64, error) {
	return o.u64(root, proc+introspect.Va(o.l.epPid), "EPROCESS.UniqueProcessId")
}

// StatusPending is STATUS_PENDING, the ExitStatus of a process that has
// not been terminated.
const StatusPending = 0x103

// ExitStatus returns EPROCESS.ExitStatus: the process's exit code (the
// NTSTATUS or ExitProcess value) once it is terminating, StatusPending
// before.
func (o *OS) ExitStatus(root introspect.Pa, proc introspect.Va) (uint32, error) {
	if !o.l.hasExitStatus {
		return 0, fmt.Errorf("_EPROCESS.ExitStatus not in profile: %w", profile.ErrNotFound)
	}
	v, err := o.mem.ReadU32(root, proc+introspect.Va(o.l.epExitStatus))
	if err != nil {
		return 0, fmt.Errorf("read EPROCESS.ExitStatus at %v: %w", proc, err)
	}
	return v, nil
}

// ParentID returns EPROCESS.InheritedFromUniqueProcessId.
func (o *OS) ParentID(root introspect.Pa, proc introspect.Va) (uint64, error) {
	return o.u64(root, proc+introspect.Va(o.l.epPpid), "EPROCESS.InheritedFromUniqueProcessId")
}

// ImageFileName returns EPROCESS.ImageFileName (at most 15 bytes, cut at
// the first NUL).
func (o *OS) ImageFileName(root introspect.Pa, proc introspect.Va) (string, error) {
	var b [64]byte
	n := b[:o.l.imageNameLen]
	if err := o.mem.Read(root, proc+introspect.Va(o.l.epImageName), n); err != nil {
		return "", fmt.Errorf("read EPROCESS.ImageFileName at %v: %w", proc, err)
	}
	for i, c := range n {
		if c == 0 {
			return string(n[:i]), nil
		}
	}
	return string(n), nil
}

// ImageBase returns EPROCESS.SectionBaseAddress.
func (o *OS) ImageBase(root introspect.Pa, proc introspect.Va) (introspect.Va, error) {
	return o.ptr(root, proc+introspect.Va(o.l.epSectionBase), "EPROCESS.SectionBaseAddress")
}

// PEB returns EPROCESS.Peb (zero for the System process).
func (o *OS) PEB(root introspect.Pa, proc introspect.Va) (introspect.Va, error) {
	return o.ptr(root, proc+introspect.Va(o.l.epPeb), "EPROCESS.Peb")
}

// Arg returns the i-th (from 0) integer argument of a function at its first
// instruction under the Microsoft x64 convention: RCX, RDX, R8, R9, then
// the stack above the return address and the 32-byte home area.
func (o *OS) Arg(regs *amd64.Registers, i int) (uint64, error) {
	if v, ok := regs.MSx64Arg(i); ok {
		return v, nil
	}
	if i < 0 || i > 64 {
		return 0, fmt.Errorf("argument %d: %w", i, ErrCorrupt)
	}
	return o.u64(Root(regs), introspect.Va(regs.RSP+8*uint64(i+1)), fmt.Sprintf("argument %d", i))
}

// Processes walks the active process list from PsActiveProcessHead and
// returns each EPROCESS. The walk stops with ErrCorrupt on a broken or
// looping list, or after MaxProcesses entries.
func (o *OS) Processes(root introspect.Pa) ([]introspect.Va, error) {
	var out []introspect.Va
	err := klist.Walk(o.base+introspect.Va(o.l.symProcHead), MaxProcesses,
		func(link introspect.Va) (introspect.Va, error) { return o.kernelPtr(root, link, "LIST_ENTRY.Flink") },
		func(link introspect.Va) error {
			out = append(out, link-introspect.Va(o.l.epLinks))
			return nil
		})
	if errors.Is(err, klist.ErrLoop) || errors.Is(err, paging.ErrTooLong) {
		return out, fmt.Errorf("process list: %w: %w", ErrCorrupt, err)
	}
	return out, err
}
