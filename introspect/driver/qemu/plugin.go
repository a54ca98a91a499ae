package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// PluginConfig says where a QEMU guest run with the vmi-hooks plugin
// (-plugin libvmi-hooks.so,shm=PATH) keeps its shared files.
type PluginConfig struct {
	// SHMPath is the plugin's shared file (its shm= argument).
	SHMPath string
	// RAMPath is the guest's shared memory-backend-file (share=on), read
	// for guest memory; RAMSize and LowMem as in Config.
	RAMPath string
	RAMSize uint64
	LowMem  uint64
	// QMPSocket is QEMU's QMP address (as Config's); optional. With it the
	// driver reports the guest's resets (driver.Liveness).
	QMPSocket string
	// Timeout bounds each QMP exchange (default 10s).
	Timeout time.Duration
	// Heartbeat is how often the driver tells the plugin it is alive
	// (default 50ms). The plugin stops holding vCPUs when the heartbeat is
	// older than its heartbeat_ms argument (default 500ms), and after a
	// missed hold deadline until the next heartbeat.
	Heartbeat time.Duration
	// OpenTimeout bounds the wait for the plugin to create its file and
	// for register samples (default 10s).
	OpenTimeout time.Duration
}

// PluginDriver is a QEMU guest attached through the vmi-hooks plugin: it
// reads guest RAM from the shared RAM file and learns of hooked addresses
// through the plugin's mailboxes, without a gdbstub. The guest keeps
// running while attached; only a vCPU at a hooked address waits (held
// mode), or none (async mode).
type PluginDriver struct {
	cfg  PluginConfig
	log  *slog.Logger
	shm  []byte
	file *os.File // the shared file, kept open to probe QEMU's lock on it
	hdr  shmHeader
	ram  *ram
	qmp  resetWatch
	hits chan *driver.Event // async mode: the ring pollers hand their records to WaitHit

	mu     sync.Mutex
	table  []introspect.Va // the hooked addresses in table order
	gen    uint32
	cur    []atomic.Pointer[driver.Event] // the held hit of each vCPU
	posted []atomic.Uint64                // when the plugin posted it (CLOCK_MONOTONIC ns)
	rt     atomic.Int64                   // round trip of the last release, ns

	// Held mode: WaitHit itself waits on the doorbell and scans the
	// mailboxes, so that the goroutine that decodes a hit is the one the
	// plugin woke (no hand-off through a channel). waitMu serialises
	// WaitHit callers over seen (the last post taken from each mailbox)
	// and next (where the next scan starts, for fairness); shmMu is held
	// for reading while WaitHit touches the mapping, and for writing by
	// teardown to unmap it.
	waitMu sync.Mutex
	seen   []uint32
	next   int
	shmMu  sync.RWMutex
	closed chan struct{}
	wg     sync.WaitGroup

	// gone is closed, with goneErr set, once QEMU no longer runs the
	// plugin of the shared file (it exited, or a new QEMU replaced the
	// file): WaitHit fails, as a gdbstub read fails on a closed socket.
	gone    chan struct{}
	goneErr error

	// counters of the driver's own, for what it saw in the mailboxes
	torn atomic.Uint64 // hits overwritten before they were read

	closeOnce sync.Once
	closeErr  error
}

var (
	_ driver.Driver      = (*PluginDriver)(nil)
	_ driver.HookTable   = (*PluginDriver)(nil)
	_ driver.HookStatter = (*PluginDriver)(nil)
	_ driver.Liveness    = (*PluginDriver)(nil)
	_ driver.LiveReader  = (*PluginDriver)(nil)
)

// OpenPlugin attaches to the plugin's shared file and the guest RAM. It
// waits for the plugin to create the file (QEMU loads plugins before the
// guest starts), refuses a file another live exporter is attached to, and
// releases any vCPU still held for a previous exporter.
func OpenPlugin(ctx context.Context, cfg PluginConfig, log *slog.Logger) (_ *PluginDriver, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.SHMPath == "" || cfg.RAMPath == "" {
		return nil, errors.New("qemu plugin: SHMPath and RAMPath are required")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 50 * time.Millisecond
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 10 * time.Second
	}
	d := &PluginDriver{cfg: cfg, log: log, closed: make(chan struct{}), gone: make(chan struct{})}
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	if err := d.mapSHM(ctx); err != nil {
		return nil, err
	}
	if d.load32(hdrAttached) != 0 && d.heartbeatFresh() {
		return nil, fmt.Errorf("qemu plugin: %s: another exporter is attached", cfg.SHMPath)
	}
	if d.ram, err = mapRAM(cfg.RAMPath, cfg.RAMSize, cfg.LowMem, false); err != nil {
		return nil, fmt.Errorf("qemu plugin: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if err := d.qmp.dial(ctx, cfg.QMPSocket, cfg.Timeout); err != nil {
		return nil, fmt.Errorf("qemu plugin: %w", err)
	}
	d.cur = make([]atomic.Pointer[driver.Event], d.hdr.VCPUs)
	d.posted = make([]atomic.Uint64, d.hdr.VCPUs)
	d.hits = make(chan *driver.Event, d.hdr.VCPUs)
	d.seen = make([]uint32, d.hdr.VCPUs)
	// The table may hold a previous exporter's hooks: empty it before
	// saying we are here, so that nothing is held for hooks nobody wants.
	d.gen = d.load32(hdrTableGen) &^ 1
	if err := d.writeTable(nil); err != nil {
		return nil, err
	}
	d.beat()
	d.store32(hdrAttached, 1)
	d.wg.Add(1)
	go d.heartbeat()
	for v := range d.hdr.VCPUs {
		off, _ := d.hdr.mailboxOff(v)
		// Release what a previous exporter left held; hits from now on
		// are ours.
		last := d.load32(off + mbPost)
		d.store32(off+mbAck, last)
		futexWake(d.word(off + mbAck))
		d.seen[v] = last
		if d.hdr.Mode == shmModeAsync {
			d.wg.Add(1)
			go d.pollRing(v)
		}
	}
	log.Info("attached to vmi-hooks plugin", "shm", cfg.SHMPath, "vcpus", d.hdr.VCPUs,
		"mode", d.Mode(), "hold_us", d.hdr.HoldUS, "pid", d.hdr.PluginPID)
	return d, nil
}

func (d *PluginDriver) mapSHM(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpenTimeout)
	defer cancel()
	for {
		err := d.tryMap()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu plugin: %s: %w", d.cfg.SHMPath, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *PluginDriver) tryMap() (err error) {
	f, err := os.OpenFile(d.cfg.SHMPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < shmHeaderSize || fi.Size() > shmMaxSize {
		return fmt.Errorf("%w: %d bytes", errSHMShort, fi.Size())
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	h, err := parseSHMHeader(m)
	if err != nil {
		syscall.Munmap(m)
		return err
	}
	d.shm, d.hdr, d.file = m, h, f
	if err := d.pluginGone(); err != nil {
		// A dead QEMU's file: wait for the next QEMU's.
		syscall.Munmap(m)
		d.shm, d.file = nil, nil
		return err
	}
	return nil
}

// pluginGone returns an error once QEMU no longer runs the plugin of the
// mapped file: the plugin holds a shared flock on it for QEMU's life, so
// an exclusive lock succeeds only when QEMU has exited; and a restarted
// QEMU's plugin makes a new file at the path. Nil while QEMU runs it, and
// for a plugin that holds no lock (then only a replaced file is seen).
func (d *PluginDriver) pluginGone() error {
	fd := int(d.file.Fd())
	if d.load32(hdrLocked) == 1 {
		switch err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err {
		case nil:
			_ = unix.Flock(fd, unix.LOCK_UN)
			return fmt.Errorf("qemu plugin: QEMU (pid %d) exited: %w", d.hdr.PluginPID, driver.ErrGone)
		case unix.EWOULDBLOCK:
		default:
			return nil // cannot tell; the next probe may
		}
	}
	var cur, mapped unix.Stat_t
	if unix.Fstat(fd, &mapped) != nil {
		return nil
	}
	if err := unix.Stat(d.cfg.SHMPath, &cur); err != nil || cur.Ino != mapped.Ino || cur.Dev != mapped.Dev {
		return fmt.Errorf("qemu plugin: %s was removed or replaced (QEMU restarted): %w", d.cfg.SHMPath, driver.ErrGone)
	}
	return nil
}

// word returns the 32-bit word at off of the shared file. Offsets come
// from the validated header, 4-aligned.
func (d *PluginDriver) word(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&d.shm[off]))
}

func (d *PluginDriver) load32(off int) uint32     { return atomic.LoadUint32(d.word(off)) }
func (d *PluginDriver) store32(off int, v uint32) { atomic.StoreUint32(d.word(off), v) }
func (d *PluginDriver) store64(off int, v uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&d.shm[off])), v)
}
func (d *PluginDriver) load64(off int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&d.shm[off])))
}

func monotonicNS() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}

func (d *PluginDriver) heartbeatFresh() bool {
	hb, now := d.load64(hdrHeartbeat), monotonicNS()
	return hb != 0 && (now < hb || now-hb < max(d.hdr.HBTimeoutNS, uint64(time.Second)))
}

func (d *PluginDriver) beat() { d.store64(hdrHeartbeat, monotonicNS()) }

func (d *PluginDriver) heartbeat() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.Heartbeat)
	defer t.Stop()
	probe := time.Now()
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
			d.beat()
		}
		if time.Since(probe) < goneProbeInterval {
			continue
		}
		probe = time.Now()
		if err := d.pluginGone(); err != nil {
			d.goneErr = err
			close(d.gone)
			d.log.Warn("vmi-hooks plugin gone", "err", err)
			return
		}
	}
}

// goneProbeInterval is how often the heartbeat checks that QEMU still runs
// the plugin: a guest that died is noticed within it.
const goneProbeInterval = 250 * time.Millisecond

// Futex operations (linux/futex.h); x/sys/unix has the syscall number
// but not these.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

// futexWait sleeps while *w == val, at most timeout. The word is in a
// MAP_SHARED mapping, so the futex is not process-private.
func futexWait(w *uint32, val uint32, timeout time.Duration) {
	ts := unix.NsecToTimespec(timeout.Nanoseconds())
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWaitOp, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

func futexWake(w *uint32) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWakeOp, 1<<30, 0, 0, 0)
}

// doorbellSpin is how long WaitHit polls the doorbell before it sleeps
// on it: a flood's next hit often comes within a few microseconds of the
// release, and a futex sleep and wake-up costs about as much again.
const doorbellSpin = 20 * time.Microsecond

// doorbellSleep bounds one futex sleep on the doorbell, so that a closed
// driver, a gone plugin or an ended context is noticed even without a
// wake-up.
const doorbellSleep = 50 * time.Millisecond

// waitHeld is WaitHit in held mode: it scans the mailboxes for a hit
// posted and not yet taken, and between scans waits for the plugin to
// ring the doorbell (spin, then futex). The caller holds waitMu.
func (d *PluginDriver) waitHeld(ctx context.Context) (*driver.Event, error) {
	// A cancelled context wakes the sleep rather than waiting it out.
	stop := context.AfterFunc(ctx, d.ring)
	defer stop()
	for {
		if err := d.waitErr(ctx); err != nil {
			return nil, err
		}
		ev, err := d.scanOnce(ctx)
		if ev != nil || err != nil {
			return ev, err
		}
	}
}

// waitErr is why WaitHit should stop waiting, or nil.
func (d *PluginDriver) waitErr(ctx context.Context) error {
	select {
	case <-d.closed:
		return errors.New("qemu plugin: closed")
	case <-d.gone:
		return d.goneErr
	default:
	}
	return ctx.Err()
}

// ring wakes a WaitHit sleeping on the doorbell, if the file is mapped.
func (d *PluginDriver) ring() {
	d.shmMu.RLock()
	defer d.shmMu.RUnlock()
	if d.shm != nil {
		futexWake(d.word(hdrDoorbell))
	}
}

// scanOnce takes one posted hit, or waits once for the doorbell to
// change. Nil, nil: nothing yet.
func (d *PluginDriver) scanOnce(ctx context.Context) (*driver.Event, error) {
	d.shmMu.RLock()
	defer d.shmMu.RUnlock()
	if d.shm == nil {
		return nil, errors.New("qemu plugin: closed")
	}
	// The doorbell is read before the scan: a post the scan misses
	// bumped it after this read, so the futex sleep below returns at once.
	db := d.load32(hdrDoorbell)
	if ev := d.scan(); ev != nil {
		return ev, nil
	}
	for t0 := monotonicNS(); monotonicNS()-t0 < uint64(doorbellSpin); {
		if d.load32(hdrDoorbell) != db {
			return nil, nil
		}
		runtime.Gosched()
	}
	sleep := doorbellSleep
	if dl, ok := ctx.Deadline(); ok {
		sleep = min(sleep, max(time.Until(dl), 0))
	}
	if d.waitErr(ctx) == nil {
		futexWait(d.word(hdrDoorbell), db, sleep)
	}
	return nil, nil
}

// scan returns the first hit posted and not yet taken, starting after the
// vCPU of the last one. A hit the vCPU gave up (deadline passed) or that
// was overwritten meanwhile is counted torn and dropped; a corrupt one is
// released.
func (d *PluginDriver) scan() *driver.Event {
	n := d.hdr.VCPUs
	for i := range n {
		v := (d.next + i) % n
		off, _ := d.hdr.mailboxOff(v)
		p := d.load32(off + mbPost)
		if p == d.seen[v] {
			continue
		}
		d.seen[v] = p
		h, err := decodeMailbox(d.shm[off:off+shmMailboxSize], d.hdr.MaxHooks)
		// The vCPU waits for us unless its deadline passed: then it may
		// already be writing its next hit over this one.
		if d.load32(off+mbPost) != p || d.load32(off+mbAbandoned) == p {
			d.torn.Add(1)
			continue
		}
		if err != nil {
			d.log.Debug("bad mailbox", "vcpu", v, "err", err)
			d.release(v, p)
			continue
		}
		ev := d.event(v, h)
		ev.Seq = uint64(p)
		d.posted[v].Store(h.TimeNS)
		d.cur[v].Store(ev)
		d.next = v + 1
		return ev
	}
	return nil
}

// event makes the Event of a hit. RIP is the hooked address: the plugin's
// callback runs before the instruction, and the address is what matched.
func (d *PluginDriver) event(v int, h shmHit) *driver.Event {
	ev := &driver.Event{VCPU: introspect.VCPU(v), Reason: driver.ReasonBreakpoint, Regs: h.Regs}
	ev.Regs.RIP = h.VA
	return ev
}

// pollRing turns one vCPU's async ring records into events. Records are
// copies: the vCPU did not wait, so guest memory may have moved on.
func (d *PluginDriver) pollRing(v int) {
	defer d.wg.Done()
	size := shmRingHeader + d.hdr.RingEntries*shmRecordSize
	base := d.hdr.RingOff + v*size
	for {
		select {
		case <-d.closed:
			return
		default:
		}
		head, tail := d.load64(base), d.load64(base+8)
		if head == tail {
			time.Sleep(time.Millisecond)
			continue
		}
		if head-tail > uint64(d.hdr.RingEntries) {
			// Not something the plugin writes: resynchronise.
			d.store64(base+8, head)
			continue
		}
		for ; tail != head; tail++ {
			r := base + shmRingHeader + int(tail%uint64(d.hdr.RingEntries))*shmRecordSize
			h, vcpu, err := decodeRecord(d.shm[r:r+shmRecordSize], d.hdr.MaxHooks, d.hdr.VCPUs)
			if err != nil || vcpu != v {
				d.torn.Add(1)
				continue
			}
			ev := d.event(v, h)
			ev.Seq = h.Seq
			select {
			case d.hits <- ev:
			case <-d.closed:
				return
			}
		}
		d.store64(base+8, tail)
	}
}

// Mode returns "held" or "async", as the plugin was loaded.
func (d *PluginDriver) Mode() string {
	if d.hdr.Mode == shmModeAsync {
		return "async"
	}
	return "held"
}

// HoldDeadline is the plugin's hold deadline.
func (d *PluginDriver) HoldDeadline() time.Duration {
	return time.Duration(d.hdr.HoldUS) * time.Microsecond
}

// WaitHit implements driver.HookTable.
func (d *PluginDriver) WaitHit(ctx context.Context) (*driver.Event, error) {
	if d.hdr.Mode != shmModeAsync {
		d.waitMu.Lock()
		defer d.waitMu.Unlock()
		return d.waitHeld(ctx)
	}
	select {
	case ev := <-d.hits:
		return ev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.closed:
		return nil, errors.New("qemu plugin: closed")
	case <-d.gone:
		return nil, d.goneErr
	}
}

// ReleaseHit implements driver.HookTable.
func (d *PluginDriver) ReleaseHit(ev *driver.Event) (bool, error) {
	v := int(ev.VCPU)
	if v < 0 || v >= d.hdr.VCPUs {
		return false, fmt.Errorf("qemu plugin: release vCPU %d of %d", v, d.hdr.VCPUs)
	}
	if d.hdr.Mode == shmModeAsync {
		return true, nil // no hold, nothing missed
	}
	d.cur[v].CompareAndSwap(ev, nil)
	// Timed before the release, so that being descheduled after it does
	// not count as the vCPU's wait.
	if t := d.posted[v].Load(); t != 0 {
		d.rt.Store(int64(monotonicNS() - t))
	}
	return d.release(v, uint32(ev.Seq)), nil
}

// LastRoundTrip is how long the last released hit's vCPU waited: from
// the plugin's post to the release (both on CLOCK_MONOTONIC).
func (d *PluginDriver) LastRoundTrip() time.Duration { return time.Duration(d.rt.Load()) }

// release acknowledges hit seq of vCPU v and wakes the vCPU. It reports
// whether the vCPU was still waiting (a hold that ran out just now may
// still read as held).
func (d *PluginDriver) release(v int, seq uint32) bool {
	off, _ := d.hdr.mailboxOff(v)
	d.store32(off+mbAck, seq)
	futexWake(d.word(off + mbAck))
	return d.load32(off+mbAbandoned) != seq
}

// SetHooks implements driver.HookTable: it writes the table under the
// seqlock (odd generation while writing) for the plugin to pick up.
func (d *PluginDriver) SetHooks(vas []introspect.Va) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writeTable(vas)
}

func (d *PluginDriver) writeTable(vas []introspect.Va) error {
	if len(vas) > d.hdr.MaxHooks {
		return fmt.Errorf("qemu plugin: %d hooks, the plugin has room for %d (max_hooks=)", len(vas), d.hdr.MaxHooks)
	}
	uniq := append([]introspect.Va(nil), vas...)
	sort.Slice(uniq, func(i, j int) bool { return uniq[i] < uniq[j] })
	n := 0
	for i, va := range uniq {
		if i == 0 || va != uniq[n-1] {
			uniq[n] = va
			n++
		}
	}
	uniq = uniq[:n]
	gen := d.gen + 1 // odd: writing
	d.store32(hdrTableGen, gen)
	t := d.hdr.TableOff
	d.store32(t, uint32(len(uniq)))
	for i, va := range uniq {
		d.store64(t+8+8*i, uint64(va))
	}
	d.gen = gen + 1
	d.store32(hdrTableGen, d.gen)
	d.table = uniq
	return nil
}

// WaitHooksApplied implements driver.HookTable: the plugin reports the
// generation it instrumented.
func (d *PluginDriver) WaitHooksApplied(ctx context.Context) error {
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	for {
		if d.load32(hdrAppliedGen) == gen && d.load32(hdrAppliedAlive) == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu plugin: table generation %d not applied (plugin at %d): %w", gen, d.load32(hdrAppliedGen), ctx.Err())
		case <-d.closed:
			return errors.New("qemu plugin: closed")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Counters returns the plugin's counters, summed over vCPUs.
func (d *PluginDriver) Counters() (PluginCounters, error) {
	return decodeCounters(d.shm[d.hdr.CountersOff:], d.hdr.VCPUs)
}

// HookStats implements driver.HookStatter.
func (d *PluginDriver) HookStats() (driver.HookStats, error) {
	c, err := d.Counters()
	if err != nil {
		return driver.HookStats{}, err
	}
	return driver.HookStats{Hits: c.Hits, Held: c.Held, MissedDeadline: c.MissedDeadline,
		MissedNoConsumer: c.MissedNoConsumer, Overflow: c.RingOverflow}, nil
}

// Torn counts hits the driver found overwritten before it could read them
// (their hold had passed its deadline).
func (d *PluginDriver) Torn() uint64 { return d.torn.Load() }

// AppliedHooks is the number of addresses the plugin has instrumented.
func (d *PluginDriver) AppliedHooks() int { return int(d.load32(hdrAppliedHooks)) }

// ReadPhysical reads guest RAM from the shared RAM file.
func (d *PluginDriver) ReadPhysical(pa introspect.Pa, p []byte) error {
	b, err := d.ram.slice(pa, len(p))
	if err != nil {
		return fmt.Errorf("qemu plugin: read physical: %w", err)
	}
	copy(p, b)
	return nil
}

// VCPUs returns the number of vCPUs the plugin has mailboxes for.
func (d *PluginDriver) VCPUs() int { return d.hdr.VCPUs }

// Registers returns the registers of vCPU v: those of its held hit when
// it has one, else a sample the plugin takes the next time the vCPU runs
// kernel code (a vCPU that stays halted past OpenTimeout fails). The OS
// layers need this at attach, before any hook, to find the kernel.
func (d *PluginDriver) Registers(vcpu introspect.VCPU) (amd64.Registers, error) {
	v := int(vcpu)
	off, err := d.hdr.mailboxOff(v)
	if err != nil {
		return amd64.Registers{}, fmt.Errorf("qemu plugin: %w", err)
	}
	if ev := d.cur[v].Load(); ev != nil {
		return ev.Regs, nil
	}
	req := atomic.AddUint32(d.word(hdrSampleReq), 1)
	deadline := time.Now().Add(d.cfg.OpenTimeout)
	for {
		seq := d.load32(off + mbSampleSeq)
		if int32(seq-req) >= 0 {
			_, r, err := decodeSample(d.shm[off : off+shmMailboxSize])
			if err != nil {
				return r, fmt.Errorf("qemu plugin: vCPU %d sample: %w", v, err)
			}
			return r, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return amd64.Registers{}, fmt.Errorf("qemu plugin: vCPU %d gave no register sample in %v (halted?)", v, d.cfg.OpenTimeout)
		}
		futexWait(d.word(off+mbSampleSeq), seq, min(left, 50*time.Millisecond))
	}
}

// Alive implements driver.Liveness: gone once QEMU exited (pluginGone),
// and from QMP's RESET events; without the QMP socket and with QEMU
// running it answers driver.ErrUnsupported.
func (d *PluginDriver) Alive() error {
	select {
	case <-d.gone:
		return d.goneErr
	default:
	}
	return d.qmp.alive()
}

// ReadsWhileRunning implements driver.LiveReader: guest memory comes from
// the shared RAM file, readable while the guest runs.
func (d *PluginDriver) ReadsWhileRunning() bool { return true }

// Close empties the hook table, releases every held vCPU, tells the
// plugin the exporter is gone and unmaps. The plugin then drops all
// instrumentation; the guest never stops.
func (d *PluginDriver) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.teardown() })
	return d.closeErr
}

func (d *PluginDriver) teardown() error {
	qerr := d.qmp.close()
	d.qmp = resetWatch{}
	if d.shm == nil {
		return errors.Join(qerr, d.ram.unmap())
	}
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	futexWake(d.word(hdrDoorbell)) // a WaitHit asleep on it returns
	d.wg.Wait()
	errs := []error{qerr}
	if d.cur != nil {
		d.mu.Lock()
		if err := d.writeTable(nil); err != nil {
			errs = append(errs, err)
		}
		d.mu.Unlock()
		d.store32(hdrAttached, 0)
		for v := range d.hdr.VCPUs {
			off, _ := d.hdr.mailboxOff(v)
			d.store32(off+mbAck, d.load32(off+mbPost))
			futexWake(d.word(off + mbAck))
		}
	}
	d.shmMu.Lock() // no WaitHit in the mapping
	if err := syscall.Munmap(d.shm); err != nil {
		errs = append(errs, fmt.Errorf("qemu plugin: unmap: %w", err))
	}
	d.shm = nil
	d.shmMu.Unlock()
	if d.file != nil {
		d.file.Close()
	}
	if err := d.ram.unmap(); err != nil {
		errs = append(errs, fmt.Errorf("qemu plugin: unmap RAM: %w", err))
	}
	return errors.Join(errs...)
}
