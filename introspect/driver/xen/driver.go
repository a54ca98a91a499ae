package xen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// ErrClosed is returned (wrapped) by a Driver used after Close.
var ErrClosed = errors.New("xen driver closed")

// ErrDomainGone is returned (wrapped) by Alive and WaitEvent once the
// domain shut down (poweroff, reboot, crash, ...), is dying, or no longer
// exists. A rebooted HVM guest comes back as a new domain with a new id,
// so the driver cannot follow it: the caller attaches again by name. It
// wraps driver.ErrGone, the sentinel of every backend's Alive.
var ErrDomainGone = fmt.Errorf("xen domain gone: %w", driver.ErrGone)

// DefaultLivenessInterval is how often WaitEvent checks, while no event
// comes, that the domain still runs: a domain that dies sends no event.
const DefaultLivenessInterval = time.Second

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
	// LivenessInterval is how often WaitEvent checks the domain while no
	// event comes; 0 means DefaultLivenessInterval, negative never.
	LivenessInterval time.Duration
	// LockDir is where the driver records its claim on the domain, so that
	// a later exporter can tell the vm_event ring of a dead exporter (an
	// orphan it tears down at attach) from the ring of a live introspector
	// (an error). OpenDomain uses DefaultLockDir when it is empty; drivers
	// built on other hypervisor handles take no claim then.
	LockDir string
}

// Driver is attached to one HVM domain. Open and OpenDomain (build tag
// xen) create it. Its methods are safe for concurrent use; WaitEvent is
// meant to be called from one event loop.
type Driver struct {
	log    *slog.Logger
	domid  uint32
	nvcpus int
	hv     hypervisor

	// life is held shared by WaitEvent while it waits on the event
	// channel and exclusively by Close, so handles are not closed under
	// a waiter.
	life    sync.RWMutex
	closing atomic.Bool

	mu     sync.Mutex
	closed bool
	maxGfn introspect.Gfn
	frames *frameCache[mapping]

	ring     *BackRing
	monitors map[driver.Monitor]bool
	pending  map[introspect.VCPU]*pendingEvent
	stepping map[introspect.VCPU]bool // single-step toggled on by our responses
	stepped  bool                     // any single-step was ever asked for

	altp2mOn   bool
	altp2mByUs bool
	views      map[introspect.View]bool
	current    introspect.View
	origAccess map[introspect.Gfn]uint32 // default view, before our first change

	allocated map[introspect.Gfn]bool
	pauses    int // Pause calls not yet matched by Resume

	liveness  time.Duration
	lastAlive time.Time // last liveness check by WaitEvent

	claim     *claim // nil: no claim taken (Config.LockDir empty)
	reclaimed bool   // an orphaned ring was torn down (once per driver)
}

type mapping struct {
	page     []byte
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
	_ driver.Liveness       = (*Driver)(nil)
)

// newDriver wraps an attached hypervisor handle. On error the caller still
// owns hv.
func newDriver(hv hypervisor, domid uint32, nvcpus int, cfg Config) (*Driver, error) {
	d := &Driver{
		log:        cfg.Logger,
		domid:      domid,
		nvcpus:     nvcpus,
		hv:         hv,
		monitors:   map[driver.Monitor]bool{},
		pending:    map[introspect.VCPU]*pendingEvent{},
		stepping:   map[introspect.VCPU]bool{},
		views:      map[introspect.View]bool{},
		origAccess: map[introspect.Gfn]uint32{},
		allocated:  map[introspect.Gfn]bool{},
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("domid", domid)
	d.liveness = cfg.LivenessInterval
	if d.liveness == 0 {
		d.liveness = DefaultLivenessInterval
	}
	if nvcpus < 1 {
		return nil, fmt.Errorf("xen: domain %d has %d vCPUs", domid, nvcpus)
	}
	if err := d.refreshMaxGfn(); err != nil {
		return nil, err
	}
	if cfg.LockDir != "" {
		c, err := takeClaim(cfg.LockDir, domid)
		if err != nil {
			return nil, err
		}
		d.claim = c
	}
	capacity := cfg.CacheFrames
	if capacity <= 0 {
		capacity = DefaultCacheFrames
	}
	d.frames = newFrameCache(capacity, func(_ introspect.Gfn, m mapping) error { return hv.unmapFrame(m.page) })
	return d, nil
}

func (d *Driver) refreshMaxGfn() error {
	g, err := d.hv.maxGfn()
	if err != nil {
		return fmt.Errorf("xen: domain %d maximum gpfn: %w", d.domid, err)
	}
	d.maxGfn = max(d.maxGfn, g)
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

func (d *Driver) checkGfn(g introspect.Gfn) error {
	if g > d.maxGfn && !d.allocated[g] {
		return fmt.Errorf("xen: %v beyond max gfn %#x: %w", g, uint64(d.maxGfn), driver.ErrOutOfRange)
	}
	return nil
}

// --- physical memory -------------------------------------------------------

// frame returns the mapped page of gfn, mapping it read-write, or
// read-only when the frame refuses writes and write is false.
func (d *Driver) frame(gfn introspect.Gfn, write bool) ([]byte, error) {
	if err := d.checkGfn(gfn); err != nil {
		return nil, err
	}
	if m, ok := d.frames.get(gfn); ok && (m.writable || !write) {
		return m.page, nil
	}
	m := mapping{writable: true}
	page, err := d.hv.mapFrame(gfn, true)
	if err != nil && !write {
		m.writable = false
		page, err = d.hv.mapFrame(gfn, false)
	}
	if err != nil {
		return nil, fmt.Errorf("xen: map %v: %w", gfn, err)
	}
	if len(page) != abi.PageSize {
		return nil, errors.Join(fmt.Errorf("xen: map %v: %d-byte mapping", gfn, len(page)), d.hv.unmapFrame(page))
	}
	m.page = page
	if err := d.frames.put(gfn, m); err != nil {
		d.log.Warn("unmap of a cached guest frame failed", "err", err)
	}
	return page, nil
}

// ReadPhysical reads guest physical memory through foreign mappings of
// the frames, which show the host (default) p2m.
func (d *Driver) ReadPhysical(pa introspect.Pa, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	for len(p) > 0 {
		page, err := d.frame(pa.Gfn(), false)
		if err != nil {
			return err
		}
		n := copy(p, page[pa.Offset():])
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
		page, err := d.frame(pa.Gfn(), true)
		if err != nil {
			return err
		}
		n := copy(page[pa.Offset():], p)
		p, pa = p[n:], pa+introspect.Pa(n)
	}
	return nil
}

// --- registers -------------------------------------------------------------

// Registers reads the vCPU's hvm_hw_cpu save record.
func (d *Driver) Registers(vcpu introspect.VCPU) (amd64.Registers, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := errors.Join(d.check(), d.checkVCPU(vcpu)); err != nil {
		return amd64.Registers{}, err
	}
	var rec [abi.HVMCPUSize]byte
	if err := d.hv.hvmCPU(vcpu, rec[:]); err != nil {
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
	if err := errors.Join(d.check(), d.checkVCPU(vcpu)); err != nil {
		return err
	}
	if err := d.hv.pause(); err != nil {
		return fmt.Errorf("xen: pause for set registers: %w", err)
	}
	err := d.setRegisters(vcpu, regs)
	if uerr := d.hv.unpause(); uerr != nil {
		err = errors.Join(err, fmt.Errorf("xen: unpause after set registers: %w", uerr))
	}
	return err
}

func (d *Driver) setRegisters(vcpu introspect.VCPU, regs *amd64.Registers) error {
	ctx, err := d.hv.hvmContext(MaxHVMContext)
	if err != nil {
		return fmt.Errorf("xen: read HVM context: %w", err)
	}
	rec, err := FindSaveRecord(ctx, abi.HVMSaveCodeCPU, uint16(vcpu))
	if err != nil {
		return fmt.Errorf("xen: vCPU %d: %w", vcpu, err)
	}
	if err := EncodeHVMCPU(rec, regs); err != nil {
		return err
	}
	if err := d.hv.setHVMContext(ctx); err != nil {
		return fmt.Errorf("xen: write HVM context: %w", err)
	}
	return nil
}

// --- pause and injection ---------------------------------------------------

// Pause pauses the domain. Xen counts pauses; Close undoes the ones not
// undone by Resume.
func (d *Driver) Pause() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.hv.pause(); err != nil {
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
	if err := d.hv.unpause(); err != nil {
		return fmt.Errorf("xen: unpause domain %d: %w", d.domid, err)
	}
	d.pauses--
	return nil
}

// InjectPageFault raises #PF for va on the vCPU (CR2 = va), delivered when
// it next enters the guest.
func (d *Driver) InjectPageFault(vcpu introspect.VCPU, va introspect.Va, errorCode uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := errors.Join(d.check(), d.checkVCPU(vcpu)); err != nil {
		return err
	}
	if err := d.hv.injectEvent(vcpu, abi.VectorPageFault, abi.EventTypeHWException, errorCode, 0, uint64(va)); err != nil {
		return fmt.Errorf("xen: inject #PF at %v on vCPU %d: %w", va, vcpu, err)
	}
	return nil
}

// --- views and frames ------------------------------------------------------

// ensureAltp2m turns altp2m on for the domain if it is off, remembering to
// turn it off again in Close. The domain must have been created with
// altp2m = "external" (HVM_PARAM_ALTP2M) for this to succeed.
func (d *Driver) ensureAltp2m() error {
	if d.altp2mOn {
		return nil
	}
	on, err := d.hv.altp2mState()
	if err != nil {
		return fmt.Errorf("xen: altp2m state: %w (is the domain configured with altp2m=\"external\"?)", err)
	}
	if !on {
		if err := d.hv.setAltp2mState(true); err != nil {
			return fmt.Errorf("xen: enable altp2m: %w (is the domain configured with altp2m=\"external\"?)", err)
		}
		d.altp2mByUs = true
	}
	d.altp2mOn = true
	return nil
}

func (d *Driver) ownView(v introspect.View) error {
	if v == introspect.DefaultView {
		return errors.New("xen: the default view cannot be changed this way")
	}
	if !d.views[v] {
		return fmt.Errorf("xen: view %d was not created by this driver", v)
	}
	return nil
}

// CreateView creates an altp2m view whose frames map to themselves with
// access def.
func (d *Driver) CreateView(def introspect.Access) (introspect.View, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	acc, err := XenmemAccess(def)
	if err != nil {
		return 0, err
	}
	if err := d.ensureAltp2m(); err != nil {
		return 0, err
	}
	v, err := d.hv.createView(acc)
	if err != nil {
		return 0, fmt.Errorf("xen: create view: %w", err)
	}
	d.views[v] = true
	d.log.Debug("altp2m view created", "view", v, "access", def)
	return v, nil
}

// DestroyView destroys a view this driver created. If the domain runs in
// it, every vCPU is first switched to the default view (Xen refuses to
// destroy an active view).
func (d *Driver) DestroyView(v introspect.View) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := errors.Join(d.check(), d.ownView(v)); err != nil {
		return err
	}
	if d.current == v {
		if err := d.switchView(introspect.DefaultView); err != nil {
			return err
		}
	}
	if err := d.hv.destroyView(v); err != nil {
		return fmt.Errorf("xen: destroy view %d: %w", v, err)
	}
	delete(d.views, v)
	return nil
}

func (d *Driver) switchView(v introspect.View) error {
	if err := d.hv.switchView(v); err != nil {
		return fmt.Errorf("xen: switch to view %d: %w", v, err)
	}
	d.current = v
	return nil
}

// SwitchView moves every vCPU to view v.
func (d *Driver) SwitchView(v introspect.View) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if v != introspect.DefaultView {
		if err := d.ownView(v); err != nil {
			return err
		}
	} else if !d.altp2mOn {
		return nil // without altp2m every vCPU runs in the host p2m
	}
	return d.switchView(v)
}

// ChangeGFN maps guest frame from to the machine frame of guest frame to
// in view v. to == from removes the remapping (INVALID_GFN), after which
// Xen maps the frame to itself again with the view's default access.
func (d *Driver) ChangeGFN(v introspect.View, from, to introspect.Gfn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := errors.Join(d.check(), d.ownView(v)); err != nil {
		return err
	}
	if err := errors.Join(d.checkGfn(from), d.checkGfn(to)); err != nil {
		return err
	}
	target := to
	if to == from {
		target = invalidGfn
	}
	if err := d.hv.changeGFN(v, from, target); err != nil {
		return fmt.Errorf("xen: view %d: change %v to %v: %w", v, from, to, err)
	}
	return nil
}

// SetAccess sets the access rights of gfn in view v. Changes in the
// default view (the host p2m) are undone by Close.
func (d *Driver) SetAccess(v introspect.View, gfn introspect.Gfn, a introspect.Access) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	acc, err := XenmemAccess(a)
	if err != nil {
		return err
	}
	if err := d.checkGfn(gfn); err != nil {
		return err
	}
	if v == introspect.DefaultView {
		if _, seen := d.origAccess[gfn]; !seen {
			orig, err := d.hv.getAccess(v, gfn)
			if err != nil {
				return fmt.Errorf("xen: access of %v: %w", gfn, err)
			}
			d.origAccess[gfn] = orig
		}
	} else if err := d.ownView(v); err != nil {
		return err
	}
	if err := d.hv.setAccess(v, gfn, acc); err != nil {
		return fmt.Errorf("xen: view %d: set access of %v to %v: %w", v, gfn, a, err)
	}
	return nil
}

// GetAccess returns the access rights of gfn in view v.
func (d *Driver) GetAccess(v introspect.View, gfn introspect.Gfn) (introspect.Access, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	if v != introspect.DefaultView {
		if err := d.ownView(v); err != nil {
			return 0, err
		}
	}
	acc, err := d.hv.getAccess(v, gfn)
	if err != nil {
		return 0, fmt.Errorf("xen: view %d: access of %v: %w", v, gfn, err)
	}
	return AccessFromXenmem(acc)
}

// AllocateFrame populates a new frame just above the guest's highest one,
// so the guest's own memory map never contains it.
func (d *Driver) AllocateFrame() (introspect.Gfn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	if err := d.refreshMaxGfn(); err != nil {
		return 0, err
	}
	gfn := d.maxGfn + 1
	if gfn > maxGuestGfn {
		return 0, fmt.Errorf("xen: no frame number left above %v", d.maxGfn)
	}
	if err := d.hv.populate(gfn); err != nil {
		return 0, fmt.Errorf("xen: populate %v: %w", gfn, err)
	}
	d.allocated[gfn] = true
	d.maxGfn = gfn
	return gfn, nil
}

// FreeFrame returns a frame from AllocateFrame to Xen.
func (d *Driver) FreeFrame(gfn introspect.Gfn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	return d.freeFrame(gfn)
}

func (d *Driver) freeFrame(gfn introspect.Gfn) error {
	if !d.allocated[gfn] {
		return fmt.Errorf("xen: %v was not allocated by this driver", gfn)
	}
	err := d.frames.remove(gfn)
	if ferr := d.hv.decrease(gfn); ferr != nil {
		return errors.Join(err, fmt.Errorf("xen: free %v: %w", gfn, ferr))
	}
	delete(d.allocated, gfn)
	return err
}

// --- events ----------------------------------------------------------------

// ensureRing enables the vm_event monitor ring and initialises the shared
// header (SHARED_RING_INIT), as xen-access does after xc_monitor_enable.
func (d *Driver) ensureRing() error {
	if d.ring != nil {
		return nil
	}
	page, err := d.hv.monitorEnable()
	if err != nil && d.claim != nil && d.claim.stale != 0 && !d.reclaimed {
		// The ring is enabled and the exporter that recorded this domain
		// died without Close: its hooks may still sit in views and vCPUs
		// may wait for answers no one will send. Tear it down and retry.
		if rerr := d.reclaimOrphan(); rerr != nil {
			return fmt.Errorf("xen: enable vm_event monitor: %w; tearing down the ring of dead exporter pid %d: %w", err, d.claim.stale, rerr)
		}
		page, err = d.hv.monitorEnable()
	}
	if err != nil {
		return fmt.Errorf("xen: enable vm_event monitor (is another introspector attached?): %w", err)
	}
	ring, err := NewBackRing(page)
	if err != nil {
		return errors.Join(fmt.Errorf("xen: %w", err), d.hv.monitorDisable())
	}
	ring.InitShared()
	d.ring = ring
	return nil
}

// EnableMonitor starts reporting events of kind m, setting up the vm_event
// ring on first use. Memory-access violations need no switch: they reach
// the ring as soon as it exists.
func (d *Driver) EnableMonitor(m driver.Monitor) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.ensureRing(); err != nil {
		return err
	}
	if err := d.hv.setMonitor(m, true); err != nil {
		return fmt.Errorf("xen: enable monitor %d: %w", m, err)
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
	if err := d.hv.setMonitor(m, false); err != nil {
		return fmt.Errorf("xen: disable monitor %d: %w", m, err)
	}
	delete(d.monitors, m)
	return nil
}

// put encodes and publishes a response and kicks Xen. Xen's vm_event code
// checks the ring on each notification; notify always rather than trust
// rsp_event on a shared page. published reports whether the response is on
// the ring, which it is even when only the notification failed (Xen then
// sees it with the next one).
func (d *Driver) put(w WireResponse) (published bool, err error) {
	var b [abi.ResponseSize]byte
	w.Encode(&b)
	if _, err := d.ring.PutResponse(&b); err != nil {
		return false, fmt.Errorf("xen: %w", err)
	}
	if err := d.hv.notify(); err != nil {
		return true, fmt.Errorf("xen: notify event channel: %w", err)
	}
	return true, nil
}

// echo answers a request that could not be decoded or validated, so the
// slot accounting stays one response per request and a vCPU paused by it
// resumes.
func (d *Driver) echo(raw *[abi.RequestSize]byte) error {
	_, err := d.put(WireResponse{
		Flags:  le.Uint32(raw[abi.OffFlags:]) & abi.FlagVCPUPaused,
		Reason: le.Uint32(raw[abi.OffReason:]),
		VCPU:   le.Uint32(raw[abi.OffVCPUID:]),
	})
	return err
}

// takeEvent consumes one request. It returns nil, nil when the ring is
// empty. Requests that are invalid or of reasons the driver does not report
// are answered at once and returned as errors.
func (d *Driver) takeEvent() (*driver.Event, error) {
	var raw [abi.RequestSize]byte
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
			if _, dup := d.pending[ev.VCPU]; !dup {
				d.pending[ev.VCPU] = &pendingEvent{ev: ev, req: q}
				return ev, nil
			}
			err = fmt.Errorf("%w: vCPU %d reported an event while its previous one is unanswered", ErrBadRequest, ev.VCPU)
		}
	}
	return nil, errors.Join(fmt.Errorf("xen: %w", err), d.echo(&raw))
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
			if more, err = d.ring.FinalCheck(); more {
				d.mu.Unlock()
				continue
			}
		}
		d.mu.Unlock()
		if ev != nil || err != nil {
			return ev, err
		}
		if err := d.hv.wait(pollInterval); err != nil {
			return nil, fmt.Errorf("xen: wait for event channel: %w", err)
		}
		if d.liveness > 0 && time.Since(d.lastAlive) >= d.liveness {
			d.lastAlive = time.Now()
			if err := d.alive(); err != nil {
				return nil, err
			}
		}
	}
}

// Alive implements driver.Liveness. It reports whether the domain still
// runs: nil, or ErrDomainGone
// (wrapped, with the shutdown reason) once it shut down, is dying or no
// longer exists; another error if Xen could not be asked.
func (d *Driver) Alive() error {
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closing.Load() {
		return ErrClosed
	}
	return d.alive()
}

// alive is Alive for callers that hold life.
func (d *Driver) alive() error {
	info, err := d.hv.domainInfo()
	switch {
	case errors.Is(err, ErrNoDomain):
		return fmt.Errorf("xen: domain %d no longer exists: %w", d.domid, ErrDomainGone)
	case err != nil:
		return fmt.Errorf("xen: check domain %d: %w", d.domid, err)
	case info.shutdown:
		return fmt.Errorf("xen: domain %d shut down (%s): %w", d.domid, shutdownReason(info.reason), ErrDomainGone)
	case info.dying:
		return fmt.Errorf("xen: domain %d is dying: %w", d.domid, ErrDomainGone)
	}
	return nil
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
	if r.SetView && r.View != introspect.DefaultView && !d.views[r.View] {
		return fmt.Errorf("xen: view %d was not created by this driver", r.View)
	}
	var injErr error
	if r.ReinjectInterrupt {
		vec, typ, n, err := p.req.Reinjection()
		if err != nil {
			return fmt.Errorf("xen: %w", err)
		}
		if err := d.hv.injectEvent(ev.VCPU, vec, typ, abi.NoErrorCode, n, 0); err != nil {
			// Still resume the vCPU; the caller learns the INT3 was lost.
			injErr = fmt.Errorf("xen: reinject #BP on vCPU %d: %w", ev.VCPU, err)
		}
	}
	published, err := d.put(w)
	if !published {
		return errors.Join(injErr, err)
	}
	// Answered, even if the notification failed: answering again would
	// put a second response on the ring for one request.
	injErr = errors.Join(injErr, err)
	delete(d.pending, ev.VCPU)
	if r.ToggleSingleStep {
		d.stepping[ev.VCPU] = !d.stepping[ev.VCPU]
	}
	if r.ToggleSingleStep || r.FastSingleStep {
		d.stepped = true
	}
	return injErr
}

// --- teardown --------------------------------------------------------------

// Close detaches and leaves the domain running as it was found, whatever
// state the driver is in: with the domain paused it disables the monitors,
// restores default-view access rights, moves every vCPU to the default
// view, destroys the views, turns altp2m off if this driver turned it on,
// frees shadow frames, answers every outstanding and queued event (turning
// single-step off where our responses turned it on), disables the vm_event
// ring and its event channel, unmaps guest frames and unpauses the domain as
// often as this driver paused it. Each step runs even when an earlier one
// failed; the errors are joined.
func (d *Driver) Close() error {
	d.closing.Store(true)
	d.life.Lock() // wait for WaitEvent to leave its wait
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

	// Stop the guest so no new events arrive while we unwind.
	perr := d.hv.pause()
	step("pause (tearing down while the domain runs)", perr)

	for _, m := range slices.Sorted(maps.Keys(d.monitors)) {
		step(fmt.Sprintf("disable monitor %d", m), d.hv.setMonitor(m, false))
		delete(d.monitors, m)
	}
	for _, gfn := range slices.Sorted(maps.Keys(d.origAccess)) {
		step(fmt.Sprintf("restore access of %v", gfn), d.hv.setAccess(introspect.DefaultView, gfn, d.origAccess[gfn]))
		delete(d.origAccess, gfn)
	}
	if d.altp2mOn {
		step("switch to the default view", d.switchView(introspect.DefaultView))
		for _, v := range slices.Sorted(maps.Keys(d.views)) {
			step(fmt.Sprintf("destroy view %d", v), d.hv.destroyView(v))
			delete(d.views, v)
		}
		if d.altp2mByUs {
			step("disable altp2m", d.hv.setAltp2mState(false))
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
			step(fmt.Sprintf("single-step off on vCPU %d", v), d.hv.singleStepOff(introspect.VCPU(v)))
		}
	}
	if d.ring != nil {
		step("disable vm_event ring", d.hv.monitorDisable())
		d.ring = nil
	}
	step("unmap guest frames", d.frames.flush())
	n := d.pauses
	if perr == nil {
		n++
	}
	for range n {
		step("unpause", d.hv.unpause())
	}
	d.pauses = 0
	step("close handles", d.hv.close())
	step("release the claim on the domain", d.claim.release())
	return errors.Join(errs...)
}

// Reclaimed reports whether this driver tore down the orphaned vm_event
// ring of a dead exporter when it enabled its own.
func (d *Driver) Reclaimed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reclaimed
}

// reclaimOrphan undoes what a dead exporter left enabled, with the domain
// paused: its vm_event ring (Xen unpauses every vCPU waiting on it for an
// answer), its monitors, its altp2m views (with them its hidden
// breakpoints: left in place, an INT3 with no monitor would reach the
// guest's own handler) and single-step. The frames it populated for shadow
// pages stay allocated to the domain, as no record names them; no view maps
// them any more, so the guest cannot see them.
func (d *Driver) reclaimOrphan() error {
	d.reclaimed = true
	d.log.Warn("tearing down the vm_event ring of a dead exporter", "stale_pid", d.claim.stale)
	if err := d.hv.pause(); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	var errs []error
	if err := d.hv.forceMonitorDisable(); err != nil {
		errs = append(errs, fmt.Errorf("disable the orphaned ring: %w", err))
	}
	if on, err := d.hv.altp2mState(); err != nil {
		errs = append(errs, fmt.Errorf("altp2m state: %w", err))
	} else if on {
		if err := d.hv.setAltp2mState(false); err != nil {
			errs = append(errs, fmt.Errorf("disable altp2m (the dead exporter's views): %w", err))
		}
	}
	for v := range d.nvcpus {
		if err := d.hv.singleStepOff(introspect.VCPU(v)); err != nil {
			errs = append(errs, fmt.Errorf("single-step off on vCPU %d: %w", v, err))
		}
	}
	if err := d.hv.unpause(); err != nil {
		errs = append(errs, fmt.Errorf("unpause: %w", err))
	}
	return errors.Join(errs...)
}

// drain answers the events handed out and not yet answered, then every
// request still queued, each with a plain resume (plus a single-step toggle
// for vCPUs our responses left stepping). It is bounded by the ring size.
func (d *Driver) drain() error {
	var errs []error
	resume := func(q *Request) error {
		r := driver.Response{}
		if q.Flags&abi.FlagVCPUPaused != 0 && d.stepping[introspect.VCPU(q.VCPU)] {
			r.ToggleSingleStep = true
		}
		w, err := BuildResponse(q, r)
		if err != nil {
			return err
		}
		published, err := d.put(w)
		if published && r.ToggleSingleStep {
			delete(d.stepping, introspect.VCPU(q.VCPU))
		}
		return err
	}
	for _, v := range slices.Sorted(maps.Keys(d.pending)) {
		errs = append(errs, resume(&d.pending[v].req))
		delete(d.pending, v)
	}
	var raw [abi.RequestSize]byte
	for range 2 * abi.RingEntries {
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

// maxGuestGfn is the largest frame number of a 52-bit guest physical
// address, the architectural limit on x86-64.
const maxGuestGfn = 1<<40 - 1
