// Package driver defines what a hypervisor backend offers the introspection
// library, split into small capabilities. A backend implements the ones its
// hypervisor supports; callers ask for a capability with a type assertion
// (or [Has]) and degrade or refuse clearly when it is missing.
//
// Backends: [github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu]
// (gdbstub + shared RAM), the Xen driver (altp2m + vm_event, build tag xen),
// and the software model in driver/sim used by tests and benchmarks.
package driver

import (
	"context"
	"errors"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

// ErrUnsupported is returned (wrapped) by a driver asked for something its
// hypervisor cannot do.
var ErrUnsupported = errors.New("not supported by this driver")

// ErrGone is returned (wrapped) by Liveness.Alive once the guest the driver
// attached to no longer runs: it rebooted (its kernel is back, likely at
// another KASLR slide), shut down, or was destroyed. Hooks set before sit
// on the wrong code, if anywhere: the caller detaches and attaches again.
var ErrGone = errors.New("guest rebooted or gone")

// ErrOutOfRange is returned (wrapped) for a physical access outside guest RAM.
var ErrOutOfRange = errors.New("physical address outside guest memory")

// PhysReader reads guest physical memory. ReadPhysical fills all of p or
// returns an error; it may cross page boundaries.
type PhysReader interface {
	ReadPhysical(pa introspect.Pa, p []byte) error
}

// PhysWriter writes guest physical memory, in the default view.
type PhysWriter interface {
	WritePhysical(pa introspect.Pa, p []byte) error
}

// RegisterReader reads vCPU state. It is valid while the vCPU is stopped
// (paused, or halted at an event).
type RegisterReader interface {
	VCPUs() int
	Registers(vcpu introspect.VCPU) (amd64.Registers, error)
}

// RegisterWriter changes vCPU state while the vCPU is stopped.
type RegisterWriter interface {
	SetRegisters(vcpu introspect.VCPU, regs *amd64.Registers) error
}

// Pauser stops and restarts all vCPUs of the guest.
type Pauser interface {
	Pause() error
	Resume() error
}

// Breakpointer sets execution breakpoints that the hypervisor itself
// implements, without changing guest memory (QEMU's gdbstub breakpoints under
// TCG are of this kind). They are invisible to the guest by construction and
// match a guest virtual address in any address space. A hit is reported as an
// Event with ReasonBreakpoint; responding to it steps over the breakpoint.
type Breakpointer interface {
	InsertBreakpoint(va introspect.Va) error
	RemoveBreakpoint(va introspect.Va) error
}

// Views manages alternate second-level views of guest physical memory with
// their own frame mappings and access rights (Xen altp2m).
type Views interface {
	// CreateView makes a view in which every frame maps to itself with
	// access def.
	CreateView(def introspect.Access) (introspect.View, error)
	// DestroyView removes a view; vCPUs in it return to the default view.
	DestroyView(v introspect.View) error
	// SwitchView moves every vCPU to view v.
	SwitchView(v introspect.View) error
	// ChangeGFN makes guest frame from resolve to frame to in view v.
	// to == from restores the identity mapping.
	ChangeGFN(v introspect.View, from, to introspect.Gfn) error
	// SetAccess sets the access rights of a guest frame in view v.
	SetAccess(v introspect.View, gfn introspect.Gfn, a introspect.Access) error
	// GetAccess returns the access rights of a guest frame in view v.
	GetAccess(v introspect.View, gfn introspect.Gfn) (introspect.Access, error)
}

// FrameAllocator adds frames to the guest's physical address space that the
// guest itself does not know about, for shadow pages.
type FrameAllocator interface {
	AllocateFrame() (introspect.Gfn, error)
	FreeFrame(gfn introspect.Gfn) error
}

// Injector injects exceptions into a vCPU, delivered when it next runs.
type Injector interface {
	// InjectPageFault raises #PF for va with the given error code.
	InjectPageFault(vcpu introspect.VCPU, va introspect.Va, errorCode uint32) error
}

// Monitor names a kind of event a driver can report.
type Monitor int

// Monitors.
const (
	MonitorBreakpoint   Monitor = iota // guest INT3 exceptions (#BP)
	MonitorSingleStep                  // completion of a single-step
	MonitorMemoryAccess                // access violations of view permissions
)

// Reason is why a vCPU stopped and an Event was reported.
type Reason int

// Reasons.
const (
	// ReasonBreakpoint: a hypervisor breakpoint set with Breakpointer hit.
	ReasonBreakpoint Reason = iota + 1
	// ReasonInterrupt: the guest raised an exception (Vector), e.g. INT3.
	ReasonInterrupt
	// ReasonSingleStep: a single-step requested by a response finished.
	ReasonSingleStep
	// ReasonMemoryAccess: the guest accessed GPA against its view's rights.
	ReasonMemoryAccess
)

func (r Reason) String() string {
	switch r {
	case ReasonBreakpoint:
		return "breakpoint"
	case ReasonInterrupt:
		return "interrupt"
	case ReasonSingleStep:
		return "singlestep"
	case ReasonMemoryAccess:
		return "memory-access"
	}
	return "unknown"
}

// Event is one stop of one vCPU. The vCPU stays stopped until the event is
// answered with EventSource.Respond.
type Event struct {
	VCPU   introspect.VCPU
	View   introspect.View
	Reason Reason
	Regs   amd64.Registers

	// ReasonMemoryAccess: the faulting access.
	GPA    introspect.Pa
	GVA    introspect.Va // zero when the hypervisor does not report it
	Access introspect.Access

	// ReasonInterrupt: the exception and the length of the instruction
	// that raised it (1 for INT3), needed to reinject it.
	Vector            uint8
	InstructionLength uint8

	// Seq numbers the hits of one vCPU for a HookTable driver, which
	// needs it to release the right one; zero for other drivers.
	Seq uint64
}

// Response tells the driver how to resume the vCPU of an Event. The zero
// Response resumes it unchanged.
type Response struct {
	// ToggleSingleStep turns single-stepping of the vCPU on or off.
	ToggleSingleStep bool
	// FastSingleStep executes one instruction in View and then returns to
	// the vCPU's current view without reporting a single-step event.
	FastSingleStep bool
	// SetView switches the vCPU to View before it resumes.
	SetView bool
	View    introspect.View
	// ReinjectInterrupt delivers the event's exception to the guest.
	ReinjectInterrupt bool
	// Registers, when not nil, replaces the vCPU's registers.
	Registers *amd64.Registers
}

// EventSource reports vCPU stops.
type EventSource interface {
	EnableMonitor(m Monitor) error
	DisableMonitor(m Monitor) error
	// WaitEvent blocks until a vCPU stops or ctx ends.
	WaitEvent(ctx context.Context) (*Event, error)
	// Respond resumes the vCPU of ev as r says.
	Respond(ev *Event, r Response) error
}

// Liveness is the one check, common to every backend, that the guest still
// runs the boot the driver attached to. Each backend answers it its own
// way (QEMU from QMP's RESET events, Xen from the domain's state).
type Liveness interface {
	// Alive returns nil while the guest runs the boot it was attached in,
	// an error wrapping ErrGone once it does not, one wrapping
	// ErrUnsupported when the driver cannot tell (QEMU without its QMP
	// socket), and another error when the hypervisor could not be asked.
	// It is safe to call while another goroutine waits for events.
	Alive() error
}

// LiveReader is implemented by a driver that can say whether PhysReader
// works while the guest runs, concurrently with the event loop (QEMU reads
// its shared RAM file so, but not through the gdbstub). A driver that does
// not implement it is taken to read memory only while the guest is
// stopped.
type LiveReader interface {
	ReadsWhileRunning() bool
}

// HookTable is instrumentation that the hypervisor runs at a set of guest
// virtual addresses without stopping the VM (the vmi-hooks QEMU plugin):
// only the vCPU that executes a hooked address waits, and only until it is
// released or its hold deadline passes. Like a Breakpointer's, its hooks
// match an address in every address space and never change guest memory.
// A hit is an Event with ReasonBreakpoint, Seq and Regs filled (RIP is the
// hooked address); guest memory read through the driver while the hit is
// held is the guest's memory at the hit.
type HookTable interface {
	// SetHooks replaces the set of hooked addresses. The hypervisor applies
	// it asynchronously (within a second); an empty set removes
	// every instrumentation.
	SetHooks(vas []introspect.Va) error
	// WaitHooksApplied blocks until the last SetHooks is in effect.
	WaitHooksApplied(ctx context.Context) error
	// WaitHit blocks until a vCPU executes a hooked address, or ctx ends.
	WaitHit(ctx context.Context) (*Event, error)
	// ReleaseHit lets the vCPU of ev go on. held is false when the hold
	// had already passed its deadline: the vCPU went on by itself, and
	// memory read for the hit may be newer than the hit. Drivers that do
	// not hold (an async queue) return true.
	ReleaseHit(ev *Event) (held bool, err error)
}

// HookStats are a HookTable driver's counters since its instrumentation
// was loaded, for every exporter that attached to it.
type HookStats struct {
	Hits             uint64 // executions of a hooked address
	Held             uint64 // hits held and released before the deadline
	MissedDeadline   uint64 // hits whose hold passed the deadline
	MissedNoConsumer uint64 // hits not held: no live, responsive exporter
	Overflow         uint64 // async hits dropped because the queue was full
}

// HookStatter reports a HookTable driver's counters.
type HookStatter interface {
	HookStats() (HookStats, error)
}

// Driver is the least a backend offers: physical memory, registers, and a
// Close that detaches and leaves the guest running as it was found.
type Driver interface {
	PhysReader
	RegisterReader
	Close() error
}

// Has reports whether d implements capability C.
func Has[C any](d Driver) bool {
	_, ok := d.(C)
	return ok
}
