// Package qemu is the driver for a running QEMU guest (TCG or KVM). It
// reads guest RAM from the shared memory-backend-file when one is
// configured and through the gdbstub in physical mode otherwise, reads and
// writes vCPU registers and sets breakpoints through the gdbstub, and uses
// QMP for status.
//
// QEMU stops the guest when a debugger attaches, so Open returns with the
// guest stopped; Resume or WaitEvent lets it run. The gdbstub runs in
// all-stop mode: when one vCPU stops, every vCPU stops. Close removes every
// breakpoint and detaches, which resumes the guest.
//
// Breakpoints are QEMU's own (Z0 under TCG): the guest's memory is never
// changed. QEMU reports a vCPU at a breakpoint again as soon as it resumes,
// so answering a breakpoint event single-steps that vCPU over it first.
package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/gdbstub"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/qmp"
)

// Config says where a QEMU guest's sockets and RAM are.
type Config struct {
	// GDBSocket is the gdbstub address: a unix socket path, or
	// "tcp:host:port".
	GDBSocket string
	// QMPSocket is the QMP address (same forms); optional.
	QMPSocket string
	// RAMPath is the file of a shared memory-backend-file (share=on);
	// optional. Without it, physical reads go through the gdbstub and need
	// the guest stopped.
	RAMPath string
	// RAMSize is the guest RAM size; 0 takes the file's size.
	RAMSize uint64
	// LowMem is how much RAM sits below 4 GiB; 0 applies q35's rule
	// (all of it below 2.75 GiB of RAM, else 2 GiB). For other machine
	// types with more RAM set it explicitly.
	LowMem uint64
	// WriteRAM lets WritePhysical write the shared RAM file directly.
	// By default writes go through the gdbstub.
	WriteRAM bool
	// Timeout bounds each gdbstub or QMP exchange (default 10s).
	Timeout time.Duration
}

// Driver is an attached QEMU guest.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	gdb     *gdbstub.Client
	qmp     resetWatch // QMP, when configured: status and reset events
	ram     *ram
	threads []gdbstub.Thread
	layout  layout

	mu  sync.Mutex
	bps map[introspect.Va]bool

	restepped atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.PhysWriter     = (*Driver)(nil)
	_ driver.RegisterWriter = (*Driver)(nil)
	_ driver.Pauser         = (*Driver)(nil)
	_ driver.Breakpointer   = (*Driver)(nil)
	_ driver.EventSource    = (*Driver)(nil)
	_ driver.Liveness       = (*Driver)(nil)
	_ driver.LiveReader     = (*Driver)(nil)
)

func splitAddr(s string) (network, address string) {
	if a, ok := strings.CutPrefix(s, "tcp:"); ok {
		return "tcp", a
	}
	return "unix", strings.TrimPrefix(s, "unix:")
}

// Open attaches to the guest. The guest is stopped when Open returns.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (_ *Driver, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.GDBSocket == "" {
		return nil, errors.New("qemu: no gdbstub socket configured")
	}
	d := &Driver{cfg: cfg, log: log, bps: make(map[introspect.Va]bool)}
	defer func() {
		if err != nil {
			d.teardown()
		}
	}()
	if cfg.RAMPath != "" {
		if d.ram, err = mapRAM(cfg.RAMPath, cfg.RAMSize, cfg.LowMem, cfg.WriteRAM); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	if err := d.qmp.dial(ctx, cfg.QMPSocket, cfg.Timeout); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if d.gdb, err = d.dialGDB(ctx); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	td := d.gdb.TargetDesc()
	if td == nil {
		return nil, errors.New("qemu: gdbstub sent no target description")
	}
	if d.layout, err = newLayout(td); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	if d.threads, err = d.gdb.Threads(); err != nil {
		return nil, fmt.Errorf("qemu: list vCPUs: %w", err)
	}
	if len(d.threads) == 0 {
		return nil, errors.New("qemu: gdbstub lists no vCPUs")
	}
	// Step exactly one instruction with interrupts and timers masked, so
	// that stepping over a breakpoint never runs an interrupt handler.
	if err := d.gdb.SetStepFlags(gdbstub.SStepEnable | gdbstub.SStepNoIRQ | gdbstub.SStepNoTimer); err != nil {
		log.Warn("qemu: cannot set single-step flags", "err", err)
	}
	log.Debug("qemu: attached", "vcpus", len(d.threads), "shared_ram", d.ram != nil)
	return d, nil
}

func (d *Driver) dialGDB(ctx context.Context) (*gdbstub.Client, error) {
	n, a := splitAddr(d.cfg.GDBSocket)
	return gdbstub.Dial(ctx, n, a, gdbstub.Options{
		Logger:  d.log,
		Timeout: d.cfg.Timeout,
		Output:  func(b []byte) { d.log.Debug("qemu: gdbstub console", "text", string(b)) },
	})
}

// GDB returns the gdbstub connection, for tests and tools.
func (d *Driver) GDB() *gdbstub.Client { return d.gdb }

// Thread returns the gdbstub thread of a vCPU.
func (d *Driver) Thread(vcpu introspect.VCPU) (gdbstub.Thread, error) {
	if int(vcpu) >= len(d.threads) {
		return gdbstub.Thread{}, fmt.Errorf("qemu: vCPU %d of %d: %w", vcpu, len(d.threads), driver.ErrOutOfRange)
	}
	return d.threads[vcpu], nil
}

func (d *Driver) vcpuOf(t gdbstub.Thread) (introspect.VCPU, bool) {
	for i, th := range d.threads {
		if th == t {
			return introspect.VCPU(i), true
		}
	}
	return 0, false
}

// SharedRAM reports whether physical reads use the mapped RAM file.
func (d *Driver) SharedRAM() bool { return d.ram != nil }

// ReadPhysical reads guest physical memory from the shared RAM file, or
// through the gdbstub (guest stopped) when there is none.
func (d *Driver) ReadPhysical(pa introspect.Pa, p []byte) error {
	if d.ram != nil {
		if err := d.ram.read(pa, p); err != nil {
			return fmt.Errorf("qemu: read physical: %w", err)
		}
		return nil
	}
	return d.ReadPhysicalGDB(pa, p)
}

// ReadPhysicalGDB reads guest physical memory through the gdbstub; the
// guest must be stopped.
func (d *Driver) ReadPhysicalGDB(pa introspect.Pa, p []byte) error {
	if err := d.gdb.ReadPhysical(uint64(pa), p); err != nil {
		var er *gdbstub.ErrorReply
		if errors.As(err, &er) {
			return fmt.Errorf("qemu: read physical %v+%d: %w: %w", pa, len(p), driver.ErrOutOfRange, err)
		}
		return fmt.Errorf("qemu: read physical %v+%d: %w", pa, len(p), err)
	}
	return nil
}

// WritePhysical writes guest physical memory through the gdbstub (guest
// stopped), or to the shared RAM file when Config.WriteRAM is set.
func (d *Driver) WritePhysical(pa introspect.Pa, p []byte) error {
	if d.ram != nil && d.cfg.WriteRAM {
		if err := d.ram.write(pa, p); err != nil {
			return fmt.Errorf("qemu: write physical: %w", err)
		}
		return nil
	}
	if err := d.gdb.WritePhysical(uint64(pa), p); err != nil {
		return fmt.Errorf("qemu: write physical %v+%d: %w", pa, len(p), err)
	}
	return nil
}

// VCPUs returns the number of vCPUs.
func (d *Driver) VCPUs() int { return len(d.threads) }

// Registers reads the state of a stopped vCPU. LSTAR, SysenterEIP and the
// segment bases other than FS and GS are not exposed by QEMU's gdbstub
// and are left zero.
func (d *Driver) Registers(vcpu introspect.VCPU) (amd64.Registers, error) {
	t, err := d.Thread(vcpu)
	if err != nil {
		return amd64.Registers{}, err
	}
	raw, err := d.gdb.ReadRegisters(t)
	if err != nil {
		return amd64.Registers{}, fmt.Errorf("qemu: registers of vCPU %d: %w", vcpu, err)
	}
	var r amd64.Registers
	if err := d.layout.decode(raw, &r); err != nil {
		return amd64.Registers{}, fmt.Errorf("qemu: registers of vCPU %d: %w", vcpu, err)
	}
	return r, nil
}

// SetRegisters writes the registers of a stopped vCPU that differ from
// their current values, one P packet each.
func (d *Driver) SetRegisters(vcpu introspect.VCPU, regs *amd64.Registers) error {
	t, err := d.Thread(vcpu)
	if err != nil {
		return err
	}
	raw, err := d.gdb.ReadRegisters(t)
	if err != nil {
		return fmt.Errorf("qemu: set registers of vCPU %d: %w", vcpu, err)
	}
	for _, f := range d.layout.fields {
		if f.reg.Offset+f.reg.BitSize/8 > len(raw) {
			continue
		}
		cur := raw[f.reg.Offset : f.reg.Offset+f.reg.BitSize/8]
		want := make([]byte, len(cur))
		v := f.get(regs)
		if len(want) == 4 {
			binary.LittleEndian.PutUint32(want, uint32(v))
		} else {
			binary.LittleEndian.PutUint64(want, v)
		}
		if string(want) == string(cur) {
			continue
		}
		if err := d.gdb.WriteRegister(t, f.reg.Num, want); err != nil {
			return fmt.Errorf("qemu: set %s of vCPU %d: %w", f.reg.Name, vcpu, err)
		}
	}
	return nil
}

// Pause stops every vCPU. A breakpoint stop that crosses the pause is not
// lost: the vCPU stays at the breakpoint and reports it again on resume.
func (d *Driver) Pause() error {
	if !d.gdb.Running() {
		return nil
	}
	if _, err := d.gdb.Interrupt(); err != nil {
		return fmt.Errorf("qemu: pause: %w", err)
	}
	return nil
}

// Resume lets every vCPU run. Stops are then collected by WaitEvent.
func (d *Driver) Resume() error {
	if d.gdb.Running() {
		return nil
	}
	if err := d.gdb.Continue(); err != nil {
		return fmt.Errorf("qemu: resume: %w", err)
	}
	return nil
}

// Resets returns how many times the guest was reset since Open, after
// reading the events QEMU has sent meanwhile. A reset reboots the guest:
// its kernel comes back elsewhere (KASLR), and breakpoints set on the old
// kernel's addresses sit on other code. It needs the QMP socket.
func (d *Driver) Resets() (uint64, error) { return d.qmp.count() }

// Alive implements driver.Liveness: an error wrapping driver.ErrGone once
// the guest was reset (Resets), wrapping driver.ErrUnsupported without the
// QMP socket.
func (d *Driver) Alive() error { return d.qmp.alive() }

// ReadsWhileRunning implements driver.LiveReader: only the shared RAM file
// can be read while the guest runs.
func (d *Driver) ReadsWhileRunning() bool { return d.SharedRAM() }

// Status returns QEMU's run state from QMP.
func (d *Driver) Status() (qmp.Status, error) {
	if d.qmp.qmp == nil {
		return qmp.Status{}, fmt.Errorf("qemu: status without QMP socket: %w", driver.ErrUnsupported)
	}
	return d.qmp.qmp.QueryStatus()
}

// InsertBreakpoint sets a QEMU breakpoint at va (any address space).
func (d *Driver) InsertBreakpoint(va introspect.Va) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bps[va] {
		return nil
	}
	if err := d.gdb.InsertBreakpoint(gdbstub.SoftwareBreakpoint, uint64(va), 1); err != nil {
		return fmt.Errorf("qemu: insert breakpoint at %v: %w", va, err)
	}
	d.bps[va] = true
	return nil
}

// RemoveBreakpoint removes a breakpoint set with InsertBreakpoint.
func (d *Driver) RemoveBreakpoint(va introspect.Va) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.bps[va] {
		return nil
	}
	if err := d.gdb.RemoveBreakpoint(gdbstub.SoftwareBreakpoint, uint64(va), 1); err != nil {
		return fmt.Errorf("qemu: remove breakpoint at %v: %w", va, err)
	}
	delete(d.bps, va)
	return nil
}

func (d *Driver) hasBreakpoint(va introspect.Va) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bps[va]
}

// EnableMonitor accepts MonitorBreakpoint, which is always on.
func (d *Driver) EnableMonitor(m driver.Monitor) error {
	if m == driver.MonitorBreakpoint {
		return nil
	}
	return fmt.Errorf("qemu: monitor %d: %w", m, driver.ErrUnsupported)
}

// DisableMonitor accepts MonitorBreakpoint only; breakpoints are turned
// off by removing them.
func (d *Driver) DisableMonitor(m driver.Monitor) error { return d.EnableMonitor(m) }

// WaitEvent resumes the guest if it is stopped and waits for a vCPU to stop
// at a breakpoint. Stops of other kinds (a pause from the QEMU monitor)
// are resumed and not reported. When ctx ends the guest is left stopped.
func (d *Driver) WaitEvent(ctx context.Context) (*driver.Event, error) {
	for {
		if err := d.Resume(); err != nil {
			return nil, err
		}
		st, err := d.gdb.Wait(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("qemu: wait for event: %w", err)
		}
		if st.Kind != gdbstub.StopSignal {
			return nil, fmt.Errorf("qemu: guest ended (stop kind %d, status %d)", st.Kind, st.Signal)
		}
		const sigtrap = 5
		if st.Signal != sigtrap || !st.HasThread {
			d.log.Debug("qemu: ignoring stop", "signal", st.Signal)
			continue
		}
		vcpu, ok := d.vcpuOf(st.Thread)
		if !ok {
			return nil, fmt.Errorf("qemu: stop of unknown thread %v", st.Thread)
		}
		regs, err := d.Registers(vcpu)
		if err != nil {
			return nil, err
		}
		return &driver.Event{VCPU: vcpu, Reason: driver.ReasonBreakpoint, Regs: regs}, nil
	}
}

// Respond resumes the guest after an event: it writes r.Registers, steps
// the vCPU over the breakpoint at its RIP if there still is one (QEMU
// reports it again otherwise), and continues every vCPU. Views, single-step
// toggling and reinjection are not available on QEMU.
func (d *Driver) Respond(ev *driver.Event, r driver.Response) error {
	if r.SetView || r.ReinjectInterrupt || r.ToggleSingleStep {
		return fmt.Errorf("qemu: respond %+v: %w", r, driver.ErrUnsupported)
	}
	rip := ev.Regs.RIP
	if r.Registers != nil {
		if err := d.SetRegisters(ev.VCPU, r.Registers); err != nil {
			return err
		}
		rip = r.Registers.RIP
	}
	if d.hasBreakpoint(introspect.Va(rip)) {
		t, err := d.Thread(ev.VCPU)
		if err != nil {
			return err
		}
		if err := d.stepOver(ev.VCPU, t, rip); err != nil {
			return err
		}
	}
	return d.Resume()
}

// maxStepTries bounds how often stepOver asks QEMU to step one vCPU.
const maxStepTries = 8

// stepOver single-steps vCPU v (thread t) off the breakpoint at rip, and
// checks that it left: an instruction at a function's entry never steps to
// itself, so a RIP still at rip means the step did not execute it.
//
// When two vCPUs hit breakpoints at nearly the same time, QEMU can answer
// the step of one with the pending stop of the other, or end the step
// before the instruction ran; resuming then would run the vCPU into the
// same breakpoint again and report one execution twice. So the step is
// repeated, bounded, until v has moved. The other vCPU is still at its
// breakpoint and reports it again on resume.
func (d *Driver) stepOver(v introspect.VCPU, t gdbstub.Thread, rip uint64) error {
	for try := 1; ; try++ {
		st, err := d.gdb.Step(t)
		if err != nil {
			return fmt.Errorf("qemu: step vCPU %d over breakpoint: %w", v, err)
		}
		regs, err := d.Registers(v)
		if err != nil {
			return fmt.Errorf("qemu: step vCPU %d over breakpoint: %w", v, err)
		}
		if regs.RIP != rip {
			return nil
		}
		d.restepped.Add(1)
		d.log.Debug("qemu: step left the vCPU at its breakpoint; stepping again", "vcpu", v, "reply_thread", st.Thread, "try", try)
		if try == maxStepTries {
			return fmt.Errorf("qemu: vCPU %d did not leave the breakpoint at %#x after %d steps", v, rip, try)
		}
	}
}

// Resteps returns how many steps over a breakpoint had to be repeated
// because the vCPU had not moved.
func (d *Driver) Resteps() uint64 { return d.restepped.Load() }

// Close removes every breakpoint, detaches (QEMU resumes the guest) and
// releases the RAM mapping. If the gdbstub connection broke, Close dials
// it again to clean up: QEMU keeps breakpoints and a stopped guest after a
// debugger vanishes. Close is idempotent.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.teardown() })
	return d.closeErr
}

func (d *Driver) teardown() error {
	var errs []error
	if d.gdb != nil {
		errs = append(errs, d.detach())
	}
	if d.qmp.qmp != nil {
		if st, err := d.qmp.qmp.QueryStatus(); err == nil && !st.Running {
			d.log.Warn("qemu: guest not running after detach", "status", st.Status)
		}
		errs = append(errs, d.qmp.close())
	}
	errs = append(errs, d.ram.unmap())
	return errors.Join(errs...)
}

func (d *Driver) detach() error {
	reconnected := false
	if d.gdb.Broken() != nil {
		d.log.Warn("qemu: gdbstub connection lost; reconnecting to detach", "err", d.gdb.Broken())
		ctx, cancel := context.WithTimeout(context.Background(), d.timeout())
		g, err := d.dialGDB(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("qemu: reconnect to detach: %w", err)
		}
		d.gdb = g
		reconnected = true
	}
	if err := d.Pause(); err != nil {
		return errors.Join(err, d.gdb.Close())
	}
	d.mu.Lock()
	var errs []error
	for va := range d.bps {
		err := d.gdb.RemoveBreakpoint(gdbstub.SoftwareBreakpoint, uint64(va), 1)
		var er *gdbstub.ErrorReply
		if reconnected && errors.As(err, &er) {
			// QEMU dropped the breakpoints of the lost connection.
			err = nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("qemu: remove breakpoint at %v: %w", va, err))
			continue
		}
		delete(d.bps, va)
	}
	d.mu.Unlock()
	// Detach also makes QEMU drop any breakpoint left and resume.
	if err := d.gdb.Detach(); err != nil {
		errs = append(errs, fmt.Errorf("qemu: detach: %w", err))
	}
	return errors.Join(errs...)
}

func (d *Driver) timeout() time.Duration {
	if d.cfg.Timeout > 0 {
		return d.cfg.Timeout
	}
	return 10 * time.Second
}
