//go:build xen

package xen

/*
#include <stdlib.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xendevicemodel.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// ensureRing sets up the vm_event monitor ring the way xen-access does:
// xc_monitor_enable maps the ring page and returns Xen's event channel
// port, which is bound to a local port; the shared ring is then
// initialised. Partial setups are undone.
func (d *Driver) ensureRing() (err error) {
	if d.ring != nil {
		return nil
	}
	var port C.uint32_t
	page, errno := C.xc_monitor_enable(d.xch, d.domid, &port)
	if page == nil {
		return fmt.Errorf("xen: enable vm_event monitor (is another introspector attached?): %w", errno)
	}
	d.ringPage = page
	defer func() {
		if err != nil {
			err = errors.Join(err, d.teardownRing())
		}
	}()
	if d.xce, errno = C.xenevtchn_open(nil, 0); d.xce == nil {
		return fmt.Errorf("xen: open event channels: %w", errno)
	}
	lp, errno := C.xenevtchn_bind_interdomain(d.xce, d.domid, C.evtchn_port_t(port))
	if lp < 0 {
		return fmt.Errorf("xen: bind event channel %d: %w", port, errno)
	}
	d.localPort = lp
	fd, errno := C.xenevtchn_fd(d.xce)
	if fd < 0 {
		return fmt.Errorf("xen: event channel fd: %w", errno)
	}
	d.evtchnFD = int(fd)
	ring, rerr := NewBackRing(unsafe.Slice((*byte)(page), PageSize))
	if rerr != nil {
		return rerr
	}
	ring.InitShared()
	d.ring = ring
	d.log.Debug("vm_event ring enabled", "port", uint32(port), "local_port", int(lp))
	return nil
}

// teardownRing unbinds the event channel, disables the monitor and unmaps
// the ring page, continuing past errors.
func (d *Driver) teardownRing() error {
	var errs []error
	if d.xce != nil {
		if d.localPort > 0 {
			if rc, err := C.xenevtchn_unbind(d.xce, C.evtchn_port_t(d.localPort)); rc < 0 {
				errs = append(errs, fmt.Errorf("unbind event channel: %w", err))
			}
		}
		if rc, err := C.xenevtchn_close(d.xce); rc < 0 {
			errs = append(errs, fmt.Errorf("close event channels: %w", err))
		}
		d.xce, d.localPort, d.evtchnFD = nil, 0, -1
	}
	if d.ringPage != nil {
		if rc, err := C.xc_monitor_disable(d.xch, d.domid); rc < 0 {
			errs = append(errs, fmt.Errorf("disable vm_event monitor: %w", err))
		}
		if rc, err := C.munmap(d.ringPage, PageSize); rc < 0 {
			errs = append(errs, fmt.Errorf("unmap ring page: %w", err))
		}
		d.ringPage = nil
	}
	d.ring = nil
	return errors.Join(errs...)
}

func (d *Driver) setMonitor(m driver.Monitor, on bool) error {
	var rc C.int
	var err error
	switch m {
	case driver.MonitorBreakpoint:
		rc, err = C.xc_monitor_software_breakpoint(d.xch, d.domid, C.bool(on))
	case driver.MonitorSingleStep:
		rc, err = C.xc_monitor_singlestep(d.xch, d.domid, C.bool(on))
	case driver.MonitorMemoryAccess:
		// Violations of mem_access rights go to the monitor ring as soon
		// as it exists; there is nothing to switch.
	default:
		return fmt.Errorf("xen: monitor %d: %w", m, driver.ErrUnsupported)
	}
	if rc < 0 {
		return fmt.Errorf("xen: set monitor %d to %v: %w", m, on, err)
	}
	return nil
}

// EnableMonitor starts reporting events of kind m, setting up the vm_event
// ring on first use.
func (d *Driver) EnableMonitor(m driver.Monitor) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.ensureRing(); err != nil {
		return err
	}
	if err := d.setMonitor(m, true); err != nil {
		return err
	}
	d.monitors[m] = true
	return nil
}

// DisableMonitor stops reporting events of kind m.
func (d *Driver) DisableMonitor(m driver.Monitor) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if !d.monitors[m] {
		return nil
	}
	if err := d.setMonitor(m, false); err != nil {
		return err
	}
	delete(d.monitors, m)
	return nil
}

// put encodes and publishes a response and kicks Xen.
func (d *Driver) put(w WireResponse) error {
	var b [ResponseSize]byte
	w.Encode(&b)
	if _, err := d.ring.PutResponse(&b); err != nil {
		return fmt.Errorf("xen: %w", err)
	}
	// Xen's vm_event code checks the ring on each notification; notify
	// always rather than trust rsp_event on a shared page.
	if rc, err := C.xenevtchn_notify(d.xce, C.evtchn_port_t(d.localPort)); rc < 0 {
		return fmt.Errorf("xen: notify event channel: %w", err)
	}
	return nil
}

// echo answers a request that could not be decoded or validated, so the
// slot accounting stays one response per request and a vCPU paused by it
// resumes.
func (d *Driver) echo(raw *[RequestSize]byte) error {
	return d.put(WireResponse{
		Flags:  le.Uint32(raw[offFlags:]) & FlagVCPUPaused,
		Reason: le.Uint32(raw[offReason:]),
		VCPU:   le.Uint32(raw[offVCPUID:]),
	})
}

// takeEvent consumes one request. It returns nil, nil when the ring is
// empty. Requests that are invalid or of reasons the driver does not report
// are answered at once and returned as errors.
func (d *Driver) takeEvent() (*driver.Event, error) {
	var raw [RequestSize]byte
	ok, err := d.ring.NextRequest(&raw)
	if err != nil {
		return nil, fmt.Errorf("xen: %w", err)
	}
	if !ok {
		return nil, nil
	}
	q, err := DecodeRequest(&raw)
	if err == nil {
		var ev *driver.Event
		if ev, err = q.Event(d.nvcpus); err == nil {
			if _, dup := d.pending[ev.VCPU]; dup {
				err = fmt.Errorf("%w: vCPU %d reported an event while its previous one is unanswered", ErrBadRequest, ev.VCPU)
			} else {
				d.pending[ev.VCPU] = &pendingEvent{ev: ev, req: q}
				return ev, nil
			}
		}
	}
	return nil, errors.Join(fmt.Errorf("xen: %w", err), d.echo(&raw))
}

// ack consumes the event channel notification.
func (d *Driver) ack() error {
	port, err := C.xenevtchn_pending(d.xce)
	if port < 0 {
		return fmt.Errorf("xen: pending event channel: %w", err)
	}
	if rc, err := C.xenevtchn_unmask(d.xce, C.evtchn_port_t(port)); rc < 0 {
		return fmt.Errorf("xen: unmask event channel %d: %w", port, err)
	}
	return nil
}

// WaitEvent returns the next vCPU stop from the vm_event ring, waiting on
// the event channel. Each returned event must be answered with Respond;
// until then its vCPU stays paused. A malformed request is answered (the
// vCPU resumes) and returned as an error wrapping ErrBadRequest; a reason
// the driver does not report wraps ErrUnhandledReason. A corrupt ring
// wraps ErrRingCorrupt.
func (d *Driver) WaitEvent(ctx context.Context) (*driver.Event, error) {
	d.life.RLock()
	defer d.life.RUnlock()
	for {
		if d.closing.Load() {
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d.mu.Lock()
		if d.ring == nil {
			d.mu.Unlock()
			return nil, errors.New("xen: no monitor enabled")
		}
		ev, err := d.takeEvent()
		if ev == nil && err == nil {
			// Re-arm the notification and look once more before sleeping.
			var more bool
			more, err = d.ring.FinalCheck()
			if more {
				d.mu.Unlock()
				continue
			}
		}
		fd := d.evtchnFD
		d.mu.Unlock()
		if ev != nil || err != nil {
			return ev, err
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, pollInterval)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("xen: poll event channel: %w", err)
		}
		if n > 0 && fds[0].Revents&unix.POLLIN != 0 {
			d.mu.Lock()
			err := d.ack()
			d.mu.Unlock()
			if err != nil {
				return nil, err
			}
		}
	}
}

// Respond answers an event from WaitEvent. ReinjectInterrupt delivers the
// guest's own INT3 back to it (xendevicemodel_inject_event with the
// instruction length) before the vCPU resumes. An invalid response leaves
// the event pending, so it can be answered again.
func (d *Driver) Respond(ev *driver.Event, r driver.Response) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	p := d.pending[ev.VCPU]
	if p == nil || p.ev != ev {
		return fmt.Errorf("xen: vCPU %d has no such pending event", ev.VCPU)
	}
	w, err := BuildResponse(&p.req, r)
	if err != nil {
		return fmt.Errorf("xen: %w", err)
	}
	if r.SetView {
		if err := d.checkView(r.View); err != nil {
			return err
		}
	}
	var injErr error
	if r.ReinjectInterrupt {
		vec, typ, n, err := p.req.Reinjection()
		if err != nil {
			return fmt.Errorf("xen: %w", err)
		}
		if rc, err := C.xendevicemodel_inject_event(d.dmod, C.domid_t(d.domid), C.int(ev.VCPU), C.uint8_t(vec),
			C.uint8_t(typ), C.uint32_t(NoErrorCode), C.uint8_t(n), 0); rc < 0 {
			// Still resume the vCPU; the caller learns the INT3 was lost.
			injErr = fmt.Errorf("xen: reinject #BP on vCPU %d: %w", ev.VCPU, err)
		}
	}
	if err := d.put(w); err != nil {
		return errors.Join(injErr, err)
	}
	delete(d.pending, ev.VCPU)
	if r.ToggleSingleStep {
		d.stepping[ev.VCPU] = !d.stepping[ev.VCPU]
	}
	if r.ToggleSingleStep || r.FastSingleStep {
		d.stepped = true
	}
	return injErr
}

func (d *Driver) checkView(v introspect.View) error {
	if v == introspect.DefaultView || d.views[v] {
		return nil
	}
	return fmt.Errorf("xen: view %d was not created by this driver", v)
}
