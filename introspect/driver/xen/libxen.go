//go:build xen

package xen

/*
#cgo LDFLAGS: -lxenctrl -lxenforeignmemory -lxenevtchn -lxendevicemodel -lxenstore
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenevtchn.h>
#include <xendevicemodel.h>
#include <xenstore.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// LookupDomain returns the id of the domain named name in XenStore
// (/local/domain/<id>/name).
func LookupDomain(name string) (uint32, error) {
	h, err := C.xs_open(0)
	if h == nil {
		return 0, fmt.Errorf("xen: open XenStore: %w", err)
	}
	defer C.xs_close(h)
	root := C.CString("/local/domain")
	defer C.free(unsafe.Pointer(root))
	var num C.uint
	dir, err := C.xs_directory(h, C.XBT_NULL, root, &num)
	if dir == nil {
		return 0, fmt.Errorf("xen: list /local/domain: %w", err)
	}
	defer C.free(unsafe.Pointer(dir))
	ids := unsafe.Slice(dir, min(int(num), maxDomains))
	entries := make([]domainEntry, 0, len(ids))
	for _, p := range ids {
		id := C.GoStringN(p, C.int(C.strnlen(p, 16)))
		path := C.CString("/local/domain/" + id + "/name")
		var n C.uint
		v := C.xs_read(h, C.XBT_NULL, path, &n)
		C.free(unsafe.Pointer(path))
		if v == nil {
			continue // a domain without a name, or one going away
		}
		entries = append(entries, domainEntry{id: id, name: C.GoStringN((*C.char)(v), C.int(min(int(n), maxNameLen)))})
		C.free(v)
	}
	return matchDomain(entries, name)
}

// Open attaches to the domain named name.
func Open(name string, cfg Config) (*Driver, error) {
	id, err := LookupDomain(name)
	if err != nil {
		return nil, err
	}
	return OpenDomain(id, cfg)
}

// OpenDomain attaches to the HVM domain with id domid. It does not pause
// the domain or change it; monitors, views and frames are set up on demand
// and undone by Close.
func OpenDomain(domid uint32, cfg Config) (*Driver, error) {
	if cfg.LockDir == "" {
		cfg.LockDir = DefaultLockDir
	}
	x := &libxen{domid: C.uint32_t(domid)}
	var d *Driver
	nvcpus, err := x.open()
	if err == nil {
		d, err = newDriver(x, domid, nvcpus, cfg)
	}
	if err != nil {
		return nil, errors.Join(err, x.close())
	}
	return d, nil
}

// libxen implements hypervisor with the Xen toolstack libraries, following
// xen-access.c and LibVMI's Xen driver.
type libxen struct {
	domid     C.uint32_t
	xch       *C.xc_interface
	fmem      *C.xenforeignmemory_handle
	dmod      *C.xendevicemodel_handle
	xce       *C.xenevtchn_handle
	localPort C.xenevtchn_port_or_error_t
	ringPage  unsafe.Pointer
}

// errno turns a libxen return code and cgo's errno into an error.
func errno(rc C.int, err error) error {
	if rc >= 0 {
		return nil
	}
	if err == nil {
		return fmt.Errorf("failed with %d", rc)
	}
	return err
}

func (x *libxen) open() (nvcpus int, err error) {
	if x.xch, err = C.xc_interface_open(nil, nil, 0); x.xch == nil {
		return 0, fmt.Errorf("xen: open xenctrl: %w", err)
	}
	info, maxVCPU, err := x.getInfo()
	if err != nil {
		return 0, err
	}
	if !info.hvm {
		return 0, fmt.Errorf("xen: domain %d is not an HVM guest", x.domid)
	}
	if info.dying || info.shutdown {
		return 0, fmt.Errorf("xen: domain %d is going away (dying %v, shut down %v)", x.domid, info.dying, info.shutdown)
	}
	if x.fmem, err = C.xenforeignmemory_open(nil, 0); x.fmem == nil {
		return 0, fmt.Errorf("xen: open foreign memory: %w", err)
	}
	if x.dmod, err = C.xendevicemodel_open(nil, 0); x.dmod == nil {
		return 0, fmt.Errorf("xen: open device model: %w", err)
	}
	return maxVCPU + 1, nil
}

func (x *libxen) domainInfo() (domainInfo, error) {
	info, _, err := x.getInfo()
	return info, err
}

// getInfo asks XEN_DOMCTL_getdomaininfo about the domain. getinfolist
// returns the next domain at or after the id, so another id means ours
// is gone.
func (x *libxen) getInfo() (domainInfo, int, error) {
	var info C.xc_domaininfo_t
	n, err := C.xc_domain_getinfolist(x.xch, x.domid, 1, &info)
	if n < 0 {
		return domainInfo{}, 0, fmt.Errorf("xen: domain %d info: %w", x.domid, err)
	}
	if n != 1 || C.uint32_t(info.domain) != x.domid {
		return domainInfo{}, 0, fmt.Errorf("%w: id %d", ErrNoDomain, x.domid)
	}
	f := uint32(info.flags)
	return domainInfo{
		hvm:      f&C.XEN_DOMINF_hvm_guest != 0,
		dying:    f&C.XEN_DOMINF_dying != 0,
		shutdown: f&C.XEN_DOMINF_shutdown != 0,
		reason:   (f >> C.XEN_DOMINF_shutdownshift) & C.XEN_DOMINF_shutdownmask,
	}, int(info.max_vcpu_id), nil
}

func (x *libxen) pause() error {
	rc, cerr := C.xc_domain_pause(x.xch, x.domid)
	return errno(rc, cerr)
}
func (x *libxen) unpause() error {
	rc, cerr := C.xc_domain_unpause(x.xch, x.domid)
	return errno(rc, cerr)
}

func (x *libxen) maxGfn() (introspect.Gfn, error) {
	var g C.xen_pfn_t
	rc, cerr := C.xc_domain_maximum_gpfn(x.xch, x.domid, &g)
	if err := errno(rc, cerr); err != nil {
		return 0, err
	}
	return introspect.Gfn(g), nil
}

func (x *libxen) mapFrame(gfn introspect.Gfn, write bool) ([]byte, error) {
	prot := C.int(C.PROT_READ)
	if write {
		prot |= C.PROT_WRITE
	}
	pfn := C.xen_pfn_t(gfn)
	var perr C.int
	addr, err := C.xenforeignmemory_map(x.fmem, x.domid, prot, 1, &pfn, &perr)
	if addr == nil {
		return nil, err
	}
	if perr != 0 {
		C.xenforeignmemory_unmap(x.fmem, addr, 1)
		if perr < 0 {
			perr = -perr
		}
		return nil, syscall.Errno(perr)
	}
	return unsafe.Slice((*byte)(addr), abi.PageSize), nil
}

func (x *libxen) unmapFrame(page []byte) error {
	rc, cerr := C.xenforeignmemory_unmap(x.fmem, unsafe.Pointer(&page[0]), 1)
	return errno(rc, cerr)
}

func (x *libxen) hvmCPU(vcpu introspect.VCPU, dst []byte) error {
	rc, cerr := C.xc_domain_hvm_getcontext_partial(x.xch, x.domid, abi.HVMSaveCodeCPU, C.uint16_t(vcpu), unsafe.Pointer(&dst[0]), C.uint32_t(len(dst)))
	return errno(rc, cerr)
}

func (x *libxen) hvmContext(limit int) ([]byte, error) {
	size, err := C.xc_domain_hvm_getcontext(x.xch, x.domid, nil, 0)
	if size < 0 {
		return nil, err
	}
	if size == 0 || int(size) > limit {
		return nil, fmt.Errorf("HVM context of %d bytes (limit %d)", size, limit)
	}
	buf := make([]byte, size)
	got, err := C.xc_domain_hvm_getcontext(x.xch, x.domid, (*C.uint8_t)(&buf[0]), C.uint32_t(len(buf)))
	if got < 0 {
		return nil, err
	}
	return buf[:min(int(got), len(buf))], nil
}

func (x *libxen) setHVMContext(ctx []byte) error {
	if len(ctx) == 0 {
		return errors.New("empty HVM context")
	}
	rc, cerr := C.xc_domain_hvm_setcontext(x.xch, x.domid, (*C.uint8_t)(&ctx[0]), C.uint32_t(len(ctx)))
	return errno(rc, cerr)
}

// monitorEnable is xen-access's setup: xc_monitor_enable maps the ring
// page and returns Xen's port, which is bound to a local event channel.
func (x *libxen) monitorEnable() (page []byte, err error) {
	var port C.uint32_t
	p, cerr := C.xc_monitor_enable(x.xch, x.domid, &port)
	if p == nil {
		return nil, cerr
	}
	x.ringPage = p
	defer func() {
		if err != nil {
			err = errors.Join(err, x.monitorDisable())
		}
	}()
	if x.xce, cerr = C.xenevtchn_open(nil, 0); x.xce == nil {
		return nil, fmt.Errorf("open event channels: %w", cerr)
	}
	lp, cerr := C.xenevtchn_bind_interdomain(x.xce, x.domid, C.evtchn_port_t(port))
	if lp < 0 {
		return nil, fmt.Errorf("bind event channel %d: %w", port, cerr)
	}
	x.localPort = lp
	return unsafe.Slice((*byte)(p), abi.PageSize), nil
}

func (x *libxen) monitorDisable() error {
	var errs []error
	if x.xce != nil {
		if x.localPort > 0 {
			rc1, cerr1 := C.xenevtchn_unbind(x.xce, C.evtchn_port_t(x.localPort))
			if err := errno(rc1, cerr1); err != nil {
				errs = append(errs, fmt.Errorf("unbind event channel: %w", err))
			}
		}
		rc2, cerr2 := C.xenevtchn_close(x.xce)
		if err := errno(rc2, cerr2); err != nil {
			errs = append(errs, fmt.Errorf("close event channels: %w", err))
		}
		x.xce, x.localPort = nil, 0
	}
	if x.ringPage != nil {
		rc3, cerr3 := C.xc_monitor_disable(x.xch, x.domid)
		if err := errno(rc3, cerr3); err != nil {
			errs = append(errs, fmt.Errorf("xc_monitor_disable: %w", err))
		}
		rc4, cerr4 := C.munmap(x.ringPage, abi.PageSize)
		if err := errno(rc4, cerr4); err != nil {
			errs = append(errs, fmt.Errorf("unmap ring page: %w", err))
		}
		x.ringPage = nil
	}
	return errors.Join(errs...)
}

func (x *libxen) forceMonitorDisable() error {
	rc1, cerr1 := C.xc_monitor_software_breakpoint(x.xch, x.domid, C.bool(false))
	rc2, cerr2 := C.xc_monitor_singlestep(x.xch, x.domid, C.bool(false))
	rc3, cerr3 := C.xc_monitor_disable(x.xch, x.domid)
	return errors.Join(errno(rc1, cerr1), errno(rc2, cerr2), errno(rc3, cerr3))
}

func (x *libxen) setMonitor(m driver.Monitor, on bool) error {
	switch m {
	case driver.MonitorBreakpoint:
		rc1, cerr1 := C.xc_monitor_software_breakpoint(x.xch, x.domid, C.bool(on))
		return errno(rc1, cerr1)
	case driver.MonitorSingleStep:
		rc2, cerr2 := C.xc_monitor_singlestep(x.xch, x.domid, C.bool(on))
		return errno(rc2, cerr2)
	case driver.MonitorMemoryAccess:
		// mem_access violations reach the ring as soon as it exists.
		return nil
	}
	return fmt.Errorf("monitor %d: %w", m, driver.ErrUnsupported)
}

// errNoChannel guards the event-channel calls, which would crash in C on a
// closed handle.
var errNoChannel = errors.New("event channel not bound")

func (x *libxen) wait(timeoutMs int) error {
	if x.xce == nil {
		return errNoChannel
	}
	fd, err := C.xenevtchn_fd(x.xce)
	if fd < 0 {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, perr := unix.Poll(fds, timeoutMs)
	if perr != nil && !errors.Is(perr, unix.EINTR) {
		return perr
	}
	if n <= 0 || fds[0].Revents&unix.POLLIN == 0 {
		return nil
	}
	port, err := C.xenevtchn_pending(x.xce)
	if port < 0 {
		return fmt.Errorf("pending: %w", err)
	}
	rc, cerr := C.xenevtchn_unmask(x.xce, C.evtchn_port_t(port))
	if err := errno(rc, cerr); err != nil {
		return fmt.Errorf("unmask %d: %w", port, err)
	}
	return nil
}

func (x *libxen) notify() error {
	if x.xce == nil {
		return errNoChannel
	}
	rc, cerr := C.xenevtchn_notify(x.xce, C.evtchn_port_t(x.localPort))
	return errno(rc, cerr)
}

func (x *libxen) injectEvent(vcpu introspect.VCPU, vector, typ uint8, errorCode uint32, insnLen uint8, cr2 uint64) error {
	rc, cerr := C.xendevicemodel_inject_event(x.dmod, C.domid_t(x.domid), C.int(vcpu), C.uint8_t(vector), C.uint8_t(typ), C.uint32_t(errorCode), C.uint8_t(insnLen), C.uint64_t(cr2))
	return errno(rc, cerr)
}

func (x *libxen) altp2mState() (bool, error) {
	var on C.bool
	rc, cerr := C.xc_altp2m_get_domain_state(x.xch, x.domid, &on)
	if err := errno(rc, cerr); err != nil {
		return false, err
	}
	return bool(on), nil
}

func (x *libxen) setAltp2mState(on bool) error {
	rc, cerr := C.xc_altp2m_set_domain_state(x.xch, x.domid, C.bool(on))
	return errno(rc, cerr)
}

func (x *libxen) createView(access uint32) (introspect.View, error) {
	var id C.uint16_t
	rc, cerr := C.xc_altp2m_create_view(x.xch, x.domid, C.xenmem_access_t(access), &id)
	if err := errno(rc, cerr); err != nil {
		return 0, err
	}
	return introspect.View(id), nil
}

func (x *libxen) destroyView(v introspect.View) error {
	rc, cerr := C.xc_altp2m_destroy_view(x.xch, x.domid, C.uint16_t(v))
	return errno(rc, cerr)
}

func (x *libxen) switchView(v introspect.View) error {
	rc, cerr := C.xc_altp2m_switch_to_view(x.xch, x.domid, C.uint16_t(v))
	return errno(rc, cerr)
}

func (x *libxen) changeGFN(v introspect.View, from, to introspect.Gfn) error {
	rc, cerr := C.xc_altp2m_change_gfn(x.xch, x.domid, C.uint16_t(v), C.xen_pfn_t(from), C.xen_pfn_t(to))
	return errno(rc, cerr)
}

func (x *libxen) setAccess(v introspect.View, gfn introspect.Gfn, access uint32) error {
	if v == introspect.DefaultView {
		rc1, cerr1 := C.xc_set_mem_access(x.xch, x.domid, C.xenmem_access_t(access), C.uint64_t(gfn), 1)
		return errno(rc1, cerr1)
	}
	rc2, cerr2 := C.xc_altp2m_set_mem_access(x.xch, x.domid, C.uint16_t(v), C.xen_pfn_t(gfn), C.xenmem_access_t(access))
	return errno(rc2, cerr2)
}

func (x *libxen) getAccess(v introspect.View, gfn introspect.Gfn) (uint32, error) {
	var acc C.xenmem_access_t
	var err error
	if v == introspect.DefaultView {
		rc1, cerr1 := C.xc_get_mem_access(x.xch, x.domid, C.uint64_t(gfn), &acc)
		err = errno(rc1, cerr1)
	} else {
		rc2, cerr2 := C.xc_altp2m_get_mem_access(x.xch, x.domid, C.uint16_t(v), C.xen_pfn_t(gfn), &acc)
		err = errno(rc2, cerr2)
	}
	return uint32(acc), err
}

func (x *libxen) populate(gfn introspect.Gfn) error {
	pfn := C.xen_pfn_t(gfn)
	rc, cerr := C.xc_domain_populate_physmap_exact(x.xch, x.domid, 1, 0, 0, &pfn)
	return errno(rc, cerr)
}

func (x *libxen) decrease(gfn introspect.Gfn) error {
	pfn := C.xen_pfn_t(gfn)
	rc, cerr := C.xc_domain_decrease_reservation_exact(x.xch, x.domid, 1, 0, &pfn)
	return errno(rc, cerr)
}

func (x *libxen) singleStepOff(vcpu introspect.VCPU) error {
	rc, cerr := C.xc_domain_debug_control(x.xch, x.domid, C.XEN_DOMCTL_DEBUG_OP_SINGLE_STEP_OFF, C.uint32_t(vcpu))
	return errno(rc, cerr)
}

// close releases the library handles (and the ring, if the driver did not).
func (x *libxen) close() error {
	errs := []error{x.monitorDisable()}
	if x.dmod != nil {
		rc1, cerr1 := C.xendevicemodel_close(x.dmod)
		errs = append(errs, errno(rc1, cerr1))
		x.dmod = nil
	}
	if x.fmem != nil {
		rc2, cerr2 := C.xenforeignmemory_close(x.fmem)
		errs = append(errs, errno(rc2, cerr2))
		x.fmem = nil
	}
	if x.xch != nil {
		rc3, cerr3 := C.xc_interface_close(x.xch)
		errs = append(errs, errno(rc3, cerr3))
		x.xch = nil
	}
	return errors.Join(errs...)
}
