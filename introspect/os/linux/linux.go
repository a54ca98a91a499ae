// Package linux reads a running Linux kernel from the hypervisor side: it
// finds the KASLR slide and the kernel's translation root, the current task
// of each vCPU, task identity (pid, tgid, parent, comm, executable), open
// files by descriptor with their full path across mount points, user strings
// through a task's address space, and System V function arguments.
//
// Offsets come from a [profile.Profile] built from the kernel's BTF and
// kallsyms (field names as in BTF). Everything read from the guest is
// untrusted: pointers are checked to lie in the kernel half, every list,
// string and path walk is bounded, and forged data yields an error wrapping
// one of the sentinel errors below, which callers can count.
package linux

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/internal/klist"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Errors for guest data that breaks the kernel's own invariants. They are
// wrapped with context; test with errors.Is.
var (
	// ErrLoop: a walk came back to an object it had already visited
	// (a d_parent or mount cycle, a list that does not return to its head).
	ErrLoop = klist.ErrLoop
	// ErrTooDeep: a walk exceeded its depth bound.
	ErrTooDeep = errors.New("guest structure too deep")
	// ErrTooLong: a guest string or table exceeded its bound. It is the
	// paging package's sentinel, so bounded C-string reads match it too.
	ErrTooLong = paging.ErrTooLong
	// ErrBadPointer: a pointer that must point into the kernel half does
	// not (NULL included).
	ErrBadPointer = errors.New("bad kernel pointer")
	// ErrBadValue: a field holds a value the kernel never stores there
	// (a descriptor past max_fds, a name longer than NAME_MAX, ...).
	ErrBadValue = errors.New("implausible guest value")
	// ErrKernelNotFound: no candidate KASLR slide matched the banner.
	ErrKernelNotFound = errors.New("kernel not found in guest memory")
	// ErrKernelChanged: the kernel found at New no longer runs where it
	// was found (the guest rebooted, or is rebooting).
	ErrKernelChanged = errors.New("guest kernel changed")
)

// Bounds from the kernel's own limits.
const (
	// TaskCommLen is TASK_COMM_LEN, the size of task_struct.comm.
	TaskCommLen = 16
	// NameMax is NAME_MAX, the longest path component.
	NameMax = 255
	// PathMax is PATH_MAX, the longest path including its NUL.
	PathMax = 4096
	// MaxDepth bounds a dentry walk (components plus mount crossings).
	MaxDepth = 256
	// kernelHalf4 and kernelHalf5 are the lowest canonical kernel
	// addresses under 4-level and 5-level paging.
	kernelHalf4 = 0xffff_8000_0000_0000
	kernelHalf5 = 0xff00_0000_0000_0000
	// atFDCWD is AT_FDCWD.
	atFDCWD = -100
)

// Options tunes an OS. The zero value is valid.
type Options struct {
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// MaxFDs bounds how many descriptor slots Files walks (default 4096).
	MaxFDs int
	// Root, when not zero, is used as the kernel translation root instead
	// of a vCPU's CR3 (e.g. a known physical address of init_top_pgt).
	Root introspect.Pa
}

// Memory is what the OS layer needs from the guest: physical memory and vCPU
// registers. A driver.Driver satisfies it.
type Memory interface {
	driver.PhysReader
	driver.RegisterReader
}

// OS is a Linux kernel found in a guest. Its methods are safe for use by one
// goroutine at a time (an event loop); the translation cache is shared.
type OS struct {
	regs driver.RegisterReader
	mem  *paging.Memory
	prof *profile.Profile
	log  *slog.Logger
	off  offsets

	maxFDs int
	slide  uint64
	kroot  introspect.Pa
	mode   paging.Mode
	banner string
	// currentInHot: 6.2+ keeps current_task in pcpu_hot.
	currentSym uint64
}

// New finds the kernel described by prof in the guest: it resolves the
// structure offsets the layer needs, chooses a kernel translation root from
// the vCPUs' CR3 (stripping PCID and the PTI user bit), and finds the KASLR
// slide by matching the banner. The guest should be paused so that register
// reads are valid.
func New(m Memory, prof *profile.Profile, opts Options) (*OS, error) {
	if prof == nil {
		return nil, errors.New("linux: nil profile")
	}
	off, err := resolveOffsets(prof)
	if err != nil {
		return nil, fmt.Errorf("linux: profile %q: %w", prof.Name, err)
	}
	o := &OS{
		regs:   m,
		prof:   prof,
		log:    opts.Logger,
		off:    off,
		maxFDs: opts.MaxFDs,
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.maxFDs <= 0 {
		o.maxFDs = 4096
	}
	if o.currentSym, err = currentTaskSymbol(prof); err != nil {
		return nil, fmt.Errorf("linux: %w", err)
	}
	if err := o.locate(m, opts.Root); err != nil {
		return nil, fmt.Errorf("linux: %w", err)
	}
	return o, nil
}

// currentTaskSymbol returns the per-cpu offset of the current task pointer:
// current_task up to 6.1, pcpu_hot.current_task from 6.2.
func currentTaskSymbol(prof *profile.Profile) (uint64, error) {
	if a, err := prof.Symbol("current_task"); err == nil {
		return a, nil
	}
	hot, err := prof.Symbol("pcpu_hot")
	if err != nil {
		return 0, fmt.Errorf("neither current_task nor pcpu_hot: %w", err)
	}
	f, err := prof.Offset("pcpu_hot", "current_task")
	if err != nil {
		return 0, err
	}
	return hot + f, nil
}

// Banner returns the kernel banner read from guest memory.
func (o *OS) Banner() string { return o.banner }

// Slide returns the KASLR virtual slide: running address minus link address.
func (o *OS) Slide() uint64 { return o.slide }

// KernelRoot returns the kernel translation root.
func (o *OS) KernelRoot() introspect.Pa { return o.kroot }

// Mode returns the paging mode of the kernel.
func (o *OS) Mode() paging.Mode { return o.mode }

// Profile returns the profile the OS was built from.
func (o *OS) Profile() *profile.Profile { return o.prof }

// Memory returns the virtual memory reader the OS uses.
func (o *OS) Memory() *paging.Memory { return o.mem }

// Flush forgets cached translations. Call it whenever the guest has run
// since the last read (at every hit).
func (o *OS) Flush() { o.mem.Cache.Flush() }

// Symbol returns the running (slid) address of a kernel symbol.
func (o *OS) Symbol(name string) (introspect.Va, error) {
	a, err := o.prof.Symbol(name)
	if err != nil {
		return 0, err
	}
	return introspect.Va(a + o.slide), nil
}

// PhysicalBase returns the physical address the kernel text (_text) is
// loaded at.
func (o *OS) PhysicalBase() (introspect.Pa, error) {
	va, err := o.Symbol("_text")
	if err != nil {
		return 0, err
	}
	return o.mem.Translate(o.kroot, va)
}

// UserRoot returns the translation root for user memory of the vCPU whose
// registers are regs: its CR3 without PCID. In kernel mode under PTI this is
// the kernel copy of the process's tables, which maps user memory too.
func UserRoot(regs *amd64.Registers) introspect.Pa {
	return introspect.Pa(regs.TranslationRoot())
}

func modeOf(regs *amd64.Registers) paging.Mode {
	if regs.FiveLevel() {
		return paging.Level5
	}
	return paging.Level4
}

// isKernelPtr reports whether v is in the kernel half of the address space.
func (o *OS) isKernelPtr(v uint64) bool { return isKernelAddr(v, o.mode) }

func isKernelAddr(v uint64, mode paging.Mode) bool {
	if mode == paging.Level5 {
		return v >= kernelHalf5
	}
	return v >= kernelHalf4
}

func (o *OS) ptr(va introspect.Va, what string) (introspect.Va, error) {
	p, err := o.mem.ReadVa(o.kroot, va)
	if err != nil {
		return 0, fmt.Errorf("read %s at %v: %w", what, va, err)
	}
	if !o.isKernelPtr(uint64(p)) {
		return 0, fmt.Errorf("%s at %v = %#x: %w", what, va, uint64(p), ErrBadPointer)
	}
	return p, nil
}

// expectedBanner is what linux_banner must start with.
func expectedBanner(name string) string {
	b := strings.TrimRight(name, "\x00\n")
	if !strings.HasPrefix(b, "Linux version ") {
		return "Linux version "
	}
	return b
}
