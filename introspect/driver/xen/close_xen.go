//go:build xen

package xen

/*
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xendevicemodel.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// Close detaches and leaves the domain running as it was found, whatever
// state the driver is in: with the domain paused it disables the monitors,
// restores default-view access rights, moves every vCPU to the default
// view, destroys the views, turns altp2m off if this driver turned it on,
// frees shadow frames, answers every outstanding and queued event (turning
// single-step off where our responses turned it on), unbinds the event
// channel, disables the vm_event ring, unmaps guest frames and unpauses
// the domain as often as this driver paused it. Each step runs even when
// an earlier one failed; the errors are joined.
func (d *Driver) Close() error {
	d.closing.Store(true)
	d.life.Lock() // wait for WaitEvent to leave its poll
	defer d.life.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true

	var errs []error
	step := func(what string, err error) {
		if err != nil {
			d.log.Warn("xen teardown step failed", "step", what, "err", err)
			errs = append(errs, fmt.Errorf("xen: close domain %d: %s: %w", d.domid, what, err))
		}
	}
	call := func(rc C.int, err error) error {
		if rc < 0 {
			return err
		}
		return nil
	}

	// Stop the guest so no new events arrive while we unwind.
	rc, err := C.xc_domain_pause(d.xch, d.domid)
	paused := call(rc, err) == nil
	if !paused {
		step("pause", errors.New("domain could not be paused; tearing down while it runs"))
	}

	for _, m := range slices.Sorted(maps.Keys(d.monitors)) {
		step(fmt.Sprintf("disable monitor %d", m), d.setMonitor(m, false))
		delete(d.monitors, m)
	}
	for _, gfn := range slices.Sorted(maps.Keys(d.origAccess)) {
		rc, err := C.xc_set_mem_access(d.xch, d.domid, d.origAccess[gfn], C.uint64_t(gfn), 1)
		step(fmt.Sprintf("restore access of %v", gfn), call(rc, err))
		delete(d.origAccess, gfn)
	}
	if d.altp2mOn {
		step("switch to default view", d.switchView(introspect.DefaultView))
		for _, v := range slices.Sorted(maps.Keys(d.views)) {
			rc, err := C.xc_altp2m_destroy_view(d.xch, d.domid, C.uint16_t(v))
			step(fmt.Sprintf("destroy view %d", v), call(rc, err))
			delete(d.views, v)
		}
		if d.altp2mByUs {
			rc, err := C.xc_altp2m_set_domain_state(d.xch, d.domid, false)
			step("disable altp2m", call(rc, err))
		}
		d.altp2mOn = false
	}
	// Views are gone, so nothing maps the shadow frames any more.
	for _, gfn := range slices.Sorted(maps.Keys(d.allocated)) {
		step(fmt.Sprintf("free %v", gfn), d.freeFrame(gfn))
	}
	if d.ring != nil {
		step("answer pending events", d.drain())
	}
	if d.stepped {
		// A single-step asked for by a response may still be armed on a
		// vCPU whose step has not run yet; with the monitor gone it would
		// never be reported and turned off.
		for v := range d.nvcpus {
			rc, err := C.xc_domain_debug_control(d.xch, d.domid, C.XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF, C.uint32_t(v))
			step(fmt.Sprintf("single-step off on vCPU %d", v), call(rc, err))
		}
	}
	step("vm_event ring", d.teardownRing())
	if d.frames != nil {
		step("unmap guest frames", d.frames.flush())
	}
	n := d.pauses
	if paused {
		n++
	}
	for range n {
		rc, err := C.xc_domain_unpause(d.xch, d.domid)
		step("unpause", call(rc, err))
	}
	d.pauses = 0
	step("close handles", d.closeHandles())
	return errors.Join(errs...)
}

// drain answers the events handed out and not yet answered, then every
// request still queued, each with a plain resume (plus a single-step toggle
// for vCPUs our responses left stepping). It is bounded by the ring size.
func (d *Driver) drain() error {
	var errs []error
	resume := func(q *Request) error {
		r := driver.Response{}
		if q.Flags&FlagVCPUPaused != 0 && d.stepping[introspect.VCPU(q.VCPU)] {
			r.ToggleSingleStep = true
		}
		w, err := BuildResponse(q, r)
		if err != nil {
			return err
		}
		if err := d.put(w); err != nil {
			return err
		}
		if r.ToggleSingleStep {
			delete(d.stepping, introspect.VCPU(q.VCPU))
		}
		return nil
	}
	for _, v := range slices.Sorted(maps.Keys(d.pending)) {
		errs = append(errs, resume(&d.pending[v].req))
		delete(d.pending, v)
	}
	var raw [RequestSize]byte
	for range 2 * RingEntries {
		ok, err := d.ring.NextRequest(&raw)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if !ok {
			break
		}
		q, err := DecodeRequest(&raw)
		if err != nil || q.VCPU >= uint32(d.nvcpus) {
			errs = append(errs, d.echo(&raw))
			continue
		}
		errs = append(errs, resume(&q))
	}
	return errors.Join(errs...)
}

// closeHandles closes the library handles that are open.
func (d *Driver) closeHandles() error {
	var errs []error
	if d.dmod != nil {
		if rc, err := C.xendevicemodel_close(d.dmod); rc < 0 {
			errs = append(errs, fmt.Errorf("close device model: %w", err))
		}
		d.dmod = nil
	}
	if d.fmem != nil {
		if rc, err := C.xenforeignmemory_close(d.fmem); rc < 0 {
			errs = append(errs, fmt.Errorf("close foreign memory: %w", err))
		}
		d.fmem = nil
	}
	if d.xch != nil {
		if rc, err := C.xc_interface_close(d.xch); rc < 0 {
			errs = append(errs, fmt.Errorf("close xenctrl: %w", err))
		}
		d.xch = nil
	}
	return errors.Join(errs...)
}
