package xen

import (
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// hypervisor is the seam between the driver's logic and the Xen toolstack
// libraries: one method per libxen call (or short fixed sequence of calls)
// for one domain. libxen.go implements it with cgo under the xen build tag;
// the tests use a fake, so everything above this line (bookkeeping, event
// flow, teardown) is tested without Xen. Errors carry errno and say which
// call failed; the driver adds the context.
type hypervisor interface {
	pause() error
	unpause() error
	maxGfn() (introspect.Gfn, error)

	// mapFrame maps one guest frame; page is PageSize bytes valid until
	// unmapFrame.
	mapFrame(gfn introspect.Gfn, write bool) (page []byte, err error)
	unmapFrame(page []byte) error

	// hvmCPU reads the vCPU's hvm_hw_cpu record into dst.
	hvmCPU(vcpu introspect.VCPU, dst []byte) error
	// hvmContext reads the whole HVM context, at most limit bytes.
	hvmContext(limit int) ([]byte, error)
	setHVMContext(ctx []byte) error

	// monitorEnable enables the vm_event monitor ring, binds its event
	// channel and returns the ring page. monitorDisable undoes all of it,
	// continuing past errors.
	monitorEnable() (page []byte, err error)
	monitorDisable() error
	// forceMonitorDisable disables the domain's vm_event monitor ring and
	// its breakpoint and single-step monitors whoever enabled them (the
	// teardown of a dead exporter's orphaned ring).
	forceMonitorDisable() error
	setMonitor(m driver.Monitor, on bool) error
	// wait blocks until the event channel fires (and acknowledges it) or
	// timeoutMs passes.
	wait(timeoutMs int) error
	notify() error

	injectEvent(vcpu introspect.VCPU, vector, typ uint8, errorCode uint32, insnLen uint8, cr2 uint64) error

	altp2mState() (bool, error)
	setAltp2mState(on bool) error
	createView(access uint32) (introspect.View, error)
	destroyView(v introspect.View) error
	switchView(v introspect.View) error
	// changeGFN remaps from to the frame of to in view v; to ==
	// invalidGfn removes the remapping.
	changeGFN(v introspect.View, from, to introspect.Gfn) error
	// setAccess and getAccess use the host p2m for the default view.
	setAccess(v introspect.View, gfn introspect.Gfn, access uint32) error
	getAccess(v introspect.View, gfn introspect.Gfn) (uint32, error)

	populate(gfn introspect.Gfn) error
	decrease(gfn introspect.Gfn) error
	singleStepOff(vcpu introspect.VCPU) error

	// domainInfo reports the domain's state; ErrNoDomain (wrapped) once
	// it no longer exists.
	domainInfo() (domainInfo, error)

	close() error
}

// domainInfo is the part of XEN_DOMCTL_getdomaininfo the driver uses.
type domainInfo struct {
	hvm      bool
	dying    bool
	shutdown bool
	reason   uint32 // SHUTDOWN_* when shutdown
}

// Shutdown reasons (xen/sched.h SHUTDOWN_*), for messages.
var shutdownReasons = [...]string{"poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset"}

// shutdownReason names a SHUTDOWN_* code.
func shutdownReason(r uint32) string {
	if int(r) < len(shutdownReasons) {
		return shutdownReasons[r]
	}
	return fmt.Sprintf("reason %d", r)
}

// invalidGfn is Xen's INVALID_GFN.
const invalidGfn = ^introspect.Gfn(0)
