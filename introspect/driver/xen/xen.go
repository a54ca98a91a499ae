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
#include <xen/vm_event.h>
#include <xen/hvm/save.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// ErrClosed is returned (wrapped) by a Driver used after Close.
var ErrClosed = errors.New("xen driver closed")

// invalidGFN is INVALID_GFN: given to xc_altp2m_change_gfn it removes a
// view's remapping so the frame maps to itself again.
const invalidGFN = ^C.xen_pfn_t(0)

// pollInterval bounds how long WaitEvent sleeps between checks of its
// context and of Close, in milliseconds.
const pollInterval = 100

// Config tunes a Driver. The zero Config is valid.
type Config struct {
	// Logger receives teardown problems and monitor state changes;
	// nil means slog.Default().
	Logger *slog.Logger
	// CacheFrames is how many guest frames stay mapped; 0 means
	// DefaultCacheFrames.
	CacheFrames int
}

// Driver is attached to one HVM domain. Its methods are safe for
// concurrent use; WaitEvent is meant to be called from one event loop.
type Driver struct {
	log    *slog.Logger
	domid  C.uint32_t
	nvcpus int

	// life is held shared by WaitEvent while it polls the event channel
	// and exclusively by Close, so handles are not closed under a poller.
	life    sync.RWMutex
	closing atomic.Bool

	mu     sync.Mutex
	closed bool
	xch    *C.xc_interface
	fmem   *C.xenforeignmemory_handle
	dmod   *C.xendevicemodel_handle
	maxGfn introspect.Gfn
	frames *frameCache[mapping]

	// vm_event monitor ring.
	ringPage  unsafe.Pointer
	ring      *BackRing
	xce       *C.xenevtchn_handle
	localPort C.xenevtchn_port_or_error_t
	evtchnFD  int
	monitors  map[driver.Monitor]bool
	pending   map[introspect.VCPU]*pendingEvent
	stepping  map[introspect.VCPU]bool // single-step toggled on by our responses
	stepped   bool                     // any single-step was ever asked for

	// altp2m.
	altp2mOn   bool
	altp2mByUs bool
	views      map[introspect.View]bool
	current    introspect.View
	origAccess map[introspect.Gfn]C.xenmem_access_t // default view, before our first change

	allocated map[introspect.Gfn]bool
	pauses    int // Pause calls not yet matched by Resume
}

type mapping struct {
	addr     unsafe.Pointer
	writable bool
}

type pendingEvent struct {
	ev  *driver.Event
	req Request
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.PhysWriter     = (*Driver)(nil)
	_ driver.RegisterWriter = (*Driver)(nil)
	_ driver.Pauser         = (*Driver)(nil)
	_ driver.Views          = (*Driver)(nil)
	_ driver.FrameAllocator = (*Driver)(nil)
	_ driver.Injector       = (*Driver)(nil)
	_ driver.EventSource    = (*Driver)(nil)
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
	d := &Driver{
		log:        cfg.Logger,
		domid:      C.uint32_t(domid),
		evtchnFD:   -1,
		monitors:   map[driver.Monitor]bool{},
		pending:    map[introspect.VCPU]*pendingEvent{},
		stepping:   map[introspect.VCPU]bool{},
		views:      map[introspect.View]bool{},
		origAccess: map[introspect.Gfn]C.xenmem_access_t{},
		allocated:  map[introspect.Gfn]bool{},
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("domid", domid)
	ok := false
	defer func() {
		if !ok {
			d.closeHandles()
		}
	}()
	var err error
	if d.xch, err = C.xc_interface_open(nil, nil, 0); d.xch == nil {
		return nil, fmt.Errorf("xen: open xenctrl: %w", err)
	}
	var info C.xc_domaininfo_t
	n, err := C.xc_domain_getinfolist(d.xch, d.domid, 1, &info)
	if n < 0 {
		return nil, fmt.Errorf("xen: domain %d info: %w", domid, err)
	}
	if n != 1 || uint32(info.domain) != domid {
		return nil, fmt.Errorf("%w: id %d", ErrNoDomain, domid)
	}
	if info.flags&C.XEN_DOMINF_hvm_guest == 0 {
		return nil, fmt.Errorf("xen: domain %d is not an HVM guest", domid)
	}
	if info.flags&C.XEN_DOMINF_dying != 0 {
		return nil, fmt.Errorf("xen: domain %d is dying", domid)
	}
	d.nvcpus = int(info.max_vcpu_id) + 1
	if err := d.refreshMaxGfn(); err != nil {
		return nil, err
	}
	if d.fmem, err = C.xenforeignmemory_open(nil, 0); d.fmem == nil {
		return nil, fmt.Errorf("xen: open foreign memory: %w", err)
	}
	if d.dmod, err = C.xendevicemodel_open(nil, 0); d.dmod == nil {
		return nil, fmt.Errorf("xen: open device model: %w", err)
	}
	capacity := cfg.CacheFrames
	if capacity <= 0 {
		capacity = DefaultCacheFrames
	}
	d.frames = newFrameCache(capacity, d.unmapFrame)
	ok = true
	return d, nil
}

func (d *Driver) refreshMaxGfn() error {
	var gpfn C.xen_pfn_t
	if rc, err := C.xc_domain_maximum_gpfn(d.xch, d.domid, &gpfn); rc < 0 {
		return fmt.Errorf("xen: domain %d maximum gpfn: %w", d.domid, err)
	}
	d.maxGfn = max(d.maxGfn, introspect.Gfn(gpfn))
	return nil
}

func (d *Driver) check() error {
	if d.closed {
		return ErrClosed
	}
	return nil
}

// VCPUs returns the number of vCPUs (max_vcpu_id + 1).
func (d *Driver) VCPUs() int { return d.nvcpus }

func (d *Driver) checkVCPU(v introspect.VCPU) error {
	if int(v) >= d.nvcpus {
		return fmt.Errorf("xen: vCPU %d of %d", v, d.nvcpus)
	}
	return nil
}

// --- physical memory -------------------------------------------------------

func (d *Driver) unmapFrame(_ introspect.Gfn, m mapping) error {
	if rc, err := C.xenforeignmemory_unmap(d.fmem, m.addr, 1); rc < 0 {
		return err
	}
	return nil
}

// frame returns the mapped page of gfn, mapping it (read-write, or
// read-only when the frame refuses writes and write is false).
func (d *Driver) frame(gfn introspect.Gfn, write bool) ([]byte, error) {
	if gfn > d.maxGfn && !d.allocated[gfn] {
		return nil, fmt.Errorf("xen: %v beyond max gfn %#x: %w", gfn, uint64(d.maxGfn), driver.ErrOutOfRange)
	}
	if m, ok := d.frames.get(gfn); ok && (m.writable || !write) {
		return unsafe.Slice((*byte)(m.addr), PageSize), nil
	}
	m, err := d.mapFrame(gfn, C.PROT_READ|C.PROT_WRITE)
	if err != nil && !write {
		m, err = d.mapFrame(gfn, C.PROT_READ)
	}
	if err != nil {
		return nil, err
	}
	if err := d.frames.put(gfn, m); err != nil {
		d.log.Warn("unmap of evicted guest frame failed", "err", err)
	}
	return unsafe.Slice((*byte)(m.addr), PageSize), nil
}

func (d *Driver) mapFrame(gfn introspect.Gfn, prot C.int) (mapping, error) {
	pfn := C.xen_pfn_t(gfn)
	var perr C.int
	addr, err := C.xenforeignmemory_map(d.fmem, d.domid, prot, 1, &pfn, &perr)
	if addr == nil {
		return mapping{}, fmt.Errorf("xen: map %v: %w", gfn, err)
	}
	if perr != 0 {
		C.xenforeignmemory_unmap(d.fmem, addr, 1)
		if perr < 0 {
			perr = -perr
		}
		return mapping{}, fmt.Errorf("xen: map %v: %w", gfn, syscall.Errno(perr))
	}
	return mapping{addr: addr, writable: prot&C.PROT_WRITE != 0}, nil
}

// ReadPhysical reads guest physical memory through foreign mappings of
// the frames, which reflect the host (default) p2m.
func (d *Driver) ReadPhysical(pa introspect.Pa, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	for len(p) > 0 {
		off := pa.Offset()
		page, err := d.frame(pa.Gfn(), false)
		if err != nil {
			return err
		}
		n := copy(p, page[off:])
		p, pa = p[n:], pa+introspect.Pa(n)
	}
	return nil
}

// WritePhysical writes guest physical memory (the host p2m's frames, so a
// write to a shadow frame changes the shadow, not the frame it stands for).
func (d *Driver) WritePhysical(pa introspect.Pa, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	for len(p) > 0 {
		off := pa.Offset()
		page, err := d.frame(pa.Gfn(), true)
		if err != nil {
			return err
		}
		n := copy(page[off:], p)
		p, pa = p[n:], pa+introspect.Pa(n)
	}
	return nil
}

// --- registers -------------------------------------------------------------

// Registers reads the vCPU's hvm_hw_cpu save record.
func (d *Driver) Registers(vcpu introspect.VCPU) (amd64.Registers, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return amd64.Registers{}, err
	}
	if err := d.checkVCPU(vcpu); err != nil {
		return amd64.Registers{}, err
	}
	var rec [hvmCPUSize]byte
	if rc, err := C.xc_domain_hvm_getcontext_partial(d.xch, d.domid, HVMSaveCodeCPU, C.uint16_t(vcpu),
		unsafe.Pointer(&rec[0]), C.uint32_t(len(rec))); rc < 0 {
		return amd64.Registers{}, fmt.Errorf("xen: registers of vCPU %d: %w", vcpu, err)
	}
	return DecodeHVMCPU(rec[:])
}

// SetRegisters rewrites the vCPU's hvm_hw_cpu record: the domain is paused,
// its whole HVM context (at most MaxHVMContext bytes) read, the record
// changed and the context loaded back, as LibVMI does. At an event, the
// cheaper way is driver.Response.Registers.
func (d *Driver) SetRegisters(vcpu introspect.VCPU, regs *amd64.Registers) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.checkVCPU(vcpu); err != nil {
		return err
	}
	if rc, err := C.xc_domain_pause(d.xch, d.domid); rc < 0 {
		return fmt.Errorf("xen: pause for set registers: %w", err)
	}
	err := d.setRegisters(vcpu, regs)
	if rc, uerr := C.xc_domain_unpause(d.xch, d.domid); rc < 0 {
		err = errors.Join(err, fmt.Errorf("xen: unpause after set registers: %w", uerr))
	}
	return err
}

func (d *Driver) setRegisters(vcpu introspect.VCPU, regs *amd64.Registers) error {
	size, err := C.xc_domain_hvm_getcontext(d.xch, d.domid, nil, 0)
	if size < 0 {
		return fmt.Errorf("xen: HVM context size: %w", err)
	}
	if size == 0 || size > MaxHVMContext {
		return fmt.Errorf("xen: HVM context of %d bytes (limit %d)", size, MaxHVMContext)
	}
	buf := make([]byte, size)
	got, err := C.xc_domain_hvm_getcontext(d.xch, d.domid, (*C.uint8_t)(&buf[0]), C.uint32_t(len(buf)))
	if got < 0 {
		return fmt.Errorf("xen: read HVM context: %w", err)
	}
	buf = buf[:min(int(got), len(buf))]
	rec, err := FindSaveRecord(buf, HVMSaveCodeCPU, uint16(vcpu))
	if err != nil {
		return fmt.Errorf("xen: vCPU %d: %w", vcpu, err)
	}
	if err := EncodeHVMCPU(rec, regs); err != nil {
		return err
	}
	if rc, err := C.xc_domain_hvm_setcontext(d.xch, d.domid, (*C.uint8_t)(&buf[0]), C.uint32_t(len(buf))); rc < 0 {
		return fmt.Errorf("xen: write HVM context: %w", err)
	}
	return nil
}

// --- pause -----------------------------------------------------------------

// Pause pauses the domain. Xen counts pauses; Close undoes the ones not
// undone by Resume.
func (d *Driver) Pause() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if rc, err := C.xc_domain_pause(d.xch, d.domid); rc < 0 {
		return fmt.Errorf("xen: pause domain %d: %w", d.domid, err)
	}
	d.pauses++
	return nil
}

// Resume undoes one Pause. It never unpauses a domain that someone else
// paused.
func (d *Driver) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if d.pauses == 0 {
		return errors.New("xen: resume without pause")
	}
	if rc, err := C.xc_domain_unpause(d.xch, d.domid); rc < 0 {
		return fmt.Errorf("xen: unpause domain %d: %w", d.domid, err)
	}
	d.pauses--
	return nil
}

// --- injection -------------------------------------------------------------

// InjectPageFault raises #PF for va on the vCPU (CR2 = va), delivered when
// it next enters the guest.
func (d *Driver) InjectPageFault(vcpu introspect.VCPU, va introspect.Va, errorCode uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.checkVCPU(vcpu); err != nil {
		return err
	}
	if rc, err := C.xendevicemodel_inject_event(d.dmod, C.domid_t(d.domid), C.int(vcpu), VectorPageFault,
		EventTypeHWException, C.uint32_t(errorCode), 0, C.uint64_t(va)); rc < 0 {
		return fmt.Errorf("xen: inject #PF at %v on vCPU %d: %w", va, vcpu, err)
	}
	return nil
}
