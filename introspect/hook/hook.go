// Package hook runs code hooks in a guest: it installs breakpoints the guest
// cannot see, waits for vCPUs to hit them, hands each hit to a Handler, and
// resumes the guest correctly. Three engines implement it:
//
//   - Native, for hypervisors that implement breakpoints themselves without
//     touching guest memory (QEMU's gdbstub under TCG);
//   - Views, for hypervisors with alternate EPT views (Xen altp2m), which
//     hides INT3 bytes in shadow frames of a private view, keeps them armed
//     across page-out and page-in with a page-table monitor, and injects page
//     faults for guest memory a handler needs but the guest has paged out;
//   - Plugin, for hypervisors that run instrumentation of their own at the
//     hooked addresses (the vmi-hooks QEMU plugin): only the hitting vCPU
//     waits, for a bounded time.
//
// All leave the guest as they found it when closed.
package hook

import (
	"context"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// Hook asks to be told when the guest executes Addr.
type Hook struct {
	Addr introspect.Va
	// Root is the translation root that Addr is resolved under when the
	// hook is installed (the kernel's for kernel functions).
	Root introspect.Pa
	// Global hooks fire in every address space; others only when the
	// hitting vCPU's CR3 translates to Root.
	Global bool
	// Tag names the hook to the handler (a probe name).
	Tag string
}

// Hit is a vCPU executing a hooked address. Ev and its registers are valid
// only during the HandleHit call.
type Hit struct {
	Hook *Hook
	Ev   *driver.Event
}

// NoticeKind is a kind of thing an engine did on its own that a user may
// want to count.
type NoticeKind uint8

// Notice kinds.
const (
	// NoticePageFaultInjected: a handler needed a guest page that was not
	// present; the engine injected #PF so the guest pages it in, and the
	// hit will be delivered again when the vCPU re-executes the address.
	NoticePageFaultInjected NoticeKind = iota + 1
	// NoticePageIn, NoticePageOut: the page of a hook was paged in (the
	// hook is armed again) or out (the hook waits, pending).
	NoticePageIn
	NoticePageOut
	// NoticeReinjected: the guest executed an INT3 of its own on a hooked
	// page; it was delivered to the guest.
	NoticeReinjected
	// NoticeStaleBreakpoint: a breakpoint event arrived for a hook already
	// removed; the vCPU was resumed.
	NoticeStaleBreakpoint
	// NoticeReadHidden: the guest read a hooked page and was shown the
	// original bytes.
	NoticeReadHidden
	// NoticeHandlerError: a handler failed for a reason other than a
	// missing page; the hit was dropped.
	NoticeHandlerError
	// NoticeUnreadable: a handler needed a page that is not present and the
	// driver cannot inject a page fault; the hit was dropped.
	NoticeUnreadable
	// NoticeHoldMissed: a held hit (Plugin engine) outlived its hold
	// deadline: the vCPU went on, and the hit was handled late (with
	// guest memory possibly newer than the hit) or, when the driver had
	// not read it yet, dropped.
	NoticeHoldMissed
	// NoticeNotHeld: the plugin did not hold a hit because it judged the
	// exporter gone or unresponsive (just after a missed deadline); the
	// hit was not reported.
	NoticeNotHeld
	// NoticeOverflow: the plugin's async queue was full; the hit was
	// dropped.
	NoticeOverflow
)

var noticeNames = [...]string{
	NoticePageFaultInjected: "pagefault_injected",
	NoticePageIn:            "page_in",
	NoticePageOut:           "page_out",
	NoticeReinjected:        "breakpoint_reinjected",
	NoticeStaleBreakpoint:   "stale_breakpoint",
	NoticeReadHidden:        "read_hidden",
	NoticeHandlerError:      "handler_error",
	NoticeUnreadable:        "unreadable",
	NoticeHoldMissed:        "hold_missed",
	NoticeNotHeld:           "not_held",
	NoticeOverflow:          "overflow",
}

func (k NoticeKind) String() string {
	if int(k) < len(noticeNames) && noticeNames[k] != "" {
		return noticeNames[k]
	}
	return "unknown"
}

// Notice reports something the engine did.
type Notice struct {
	Kind NoticeKind
	VCPU introspect.VCPU
	Tag  string        // the hook concerned, when there is one
	Addr introspect.Va // the address concerned (faulting VA, hooked VA)
	Err  error         // for NoticeHandlerError and NoticeUnreadable
}

// Handler receives hits and notices. HandleHit runs with the vCPU stopped;
// it returns an error wrapping a paging translation error for a page that is
// not present when it needs the guest to page something in (see
// paging.PageFault).
type Handler interface {
	HandleHit(h *Hit) error
	Notice(n Notice)
}

// Engine installs hooks and runs the event loop.
type Engine interface {
	// Add installs a hook. The guest should be paused.
	Add(h Hook) error
	// Run handles events until ctx ends or the driver fails.
	Run(ctx context.Context, h Handler) error
	// Close removes every hook and restores every frame, mapping and
	// permission the engine changed, then resumes the guest. It is safe to
	// call after Run failed, and more than once.
	Close() error
}

// Applier is an Engine whose hooks take effect some time after Add
// returns (the plugin engine: the hypervisor applies a new hook table
// within a second, while the guest runs). WaitApplied blocks until every
// hook added so far is in effect, or ctx ends.
type Applier interface {
	WaitApplied(ctx context.Context) error
}
