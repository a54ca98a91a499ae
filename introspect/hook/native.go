package hook

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// NativeDriver is what the Native engine needs from a driver: breakpoints
// the hypervisor implements itself, and the events they raise.
type NativeDriver interface {
	driver.Breakpointer
	driver.EventSource
}

// NativeOption configures a Native engine.
type NativeOption func(*Native)

// WithFlush makes the engine call flush before each hit is handled, for
// callers that cache translations (paging.Cache.Flush): the guest may have
// changed its page tables while it ran.
func WithFlush(flush func()) NativeOption {
	return func(n *Native) { n.flush = flush }
}

// Native is the Engine for hypervisor-native breakpoints (QEMU's gdbstub).
// A hypervisor breakpoint matches a virtual address in every address space;
// hooks that are not Global are filtered by the hitting vCPU's CR3.
type Native struct {
	drv   NativeDriver
	inj   driver.Injector // nil when the driver cannot inject
	flush func()

	mu    sync.Mutex
	hooks map[introspect.Va][]*Hook
}

// NewNative returns a Native engine on drv.
func NewNative(drv NativeDriver, opts ...NativeOption) *Native {
	n := &Native{drv: drv, hooks: make(map[introspect.Va][]*Hook)}
	n.inj, _ = drv.(driver.Injector)
	for _, o := range opts {
		o(n)
	}
	return n
}

var _ Engine = (*Native)(nil)

// Add installs a hook. Several hooks may share an address; the breakpoint
// is set once.
func (n *Native) Add(h Hook) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.hooks[h.Addr]) == 0 {
		if err := n.drv.InsertBreakpoint(h.Addr); err != nil {
			return fmt.Errorf("hook %s at %v: %w", h.Tag, h.Addr, err)
		}
	}
	hc := h
	n.hooks[h.Addr] = append(n.hooks[h.Addr], &hc)
	return nil
}

// Remove uninstalls every hook at addr.
func (n *Native) Remove(addr introspect.Va) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.hooks[addr]) == 0 {
		return nil
	}
	if err := n.drv.RemoveBreakpoint(addr); err != nil {
		return fmt.Errorf("remove hook at %v: %w", addr, err)
	}
	delete(n.hooks, addr)
	return nil
}

// match returns the hooks at va that apply to an address space with root.
// found is false when no hook at all is at va.
func (n *Native) match(va introspect.Va, root introspect.Pa) (hs []*Hook, found bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return applicable(n.hooks[va], root)
}

// applicable returns the hooks of all that apply to an address space with
// root: the Global ones and those whose Root is root. found is false when
// all is empty.
func applicable(all []*Hook, root introspect.Pa) (hs []*Hook, found bool) {
	for _, h := range all {
		if h.Global || introspect.Pa(amd64.CR3Root(uint64(h.Root))) == root {
			hs = append(hs, h)
		}
	}
	return hs, len(all) > 0
}

// Run waits for breakpoint events, hands each matching hook's hit to h, and
// answers the driver, until ctx ends or the driver fails.
func (n *Native) Run(ctx context.Context, h Handler) error {
	for {
		ev, err := n.drv.WaitEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("hook: wait for event: %w", err)
		}
		if ev.Reason == driver.ReasonBreakpoint {
			n.dispatch(ev, h)
		}
		if err := n.drv.Respond(ev, driver.Response{}); err != nil {
			return fmt.Errorf("hook: respond to vCPU %d: %w", ev.VCPU, err)
		}
	}
}

func (n *Native) dispatch(ev *driver.Event, h Handler) {
	dispatch(ev, h, n.match, n.flush, n.inj)
}

// dispatch hands the hit of ev to every hook that match finds for its
// address and address space, calling flush first. A handler's missing page
// is injected as #PF through inj; without inj (QEMU) the hit is dropped
// with NoticeUnreadable.
func dispatch(ev *driver.Event, h Handler, match func(introspect.Va, introspect.Pa) ([]*Hook, bool), flush func(), inj driver.Injector) {
	va := introspect.Va(ev.Regs.RIP)
	hooks, found := match(va, introspect.Pa(ev.Regs.TranslationRoot()))
	if !found {
		h.Notice(Notice{Kind: NoticeStaleBreakpoint, VCPU: ev.VCPU, Addr: va})
		return
	}
	if len(hooks) > 0 && flush != nil {
		flush()
	}
	for _, hk := range hooks {
		err := h.HandleHit(&Hit{Hook: hk, Ev: ev})
		if err == nil {
			continue
		}
		if fva, ok := paging.PageFault(err); ok {
			if inj == nil {
				// QEMU cannot inject a #PF: the hit is dropped.
				h.Notice(Notice{Kind: NoticeUnreadable, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva, Err: err})
				continue
			}
			// Error code 0: a supervisor read of a page not present. The
			// guest pages it in and re-executes the hooked address.
			if ierr := inj.InjectPageFault(ev.VCPU, fva, 0); ierr != nil {
				h.Notice(Notice{Kind: NoticeUnreadable, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva, Err: errors.Join(err, ierr)})
				continue
			}
			h.Notice(Notice{Kind: NoticePageFaultInjected, VCPU: ev.VCPU, Tag: hk.Tag, Addr: fva})
			return
		}
		h.Notice(Notice{Kind: NoticeHandlerError, VCPU: ev.VCPU, Tag: hk.Tag, Addr: va, Err: err})
	}
}

// Close removes every hook's breakpoint, pausing the guest meanwhile when
// the driver can, and resumes it. It does not detach: the driver's Close
// does.
func (n *Native) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	p, _ := n.drv.(driver.Pauser)
	if p != nil {
		if err := p.Pause(); err != nil {
			errs = append(errs, fmt.Errorf("pause to remove hooks: %w", err))
		}
	}
	for va := range n.hooks {
		if err := n.drv.RemoveBreakpoint(va); err != nil {
			errs = append(errs, fmt.Errorf("remove hook at %v: %w", va, err))
			continue
		}
		delete(n.hooks, va)
	}
	if p != nil {
		if err := p.Resume(); err != nil {
			errs = append(errs, fmt.Errorf("resume after removing hooks: %w", err))
		}
	}
	return errors.Join(errs...)
}
