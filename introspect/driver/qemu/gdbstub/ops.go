package gdbstub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Breakpoint kinds of Z/z packets.
const (
	SoftwareBreakpoint = 0
	HardwareBreakpoint = 1
)

// maxThreads bounds the thread list the client accepts.
const maxThreads = 4096

// Threads lists the target's threads (QEMU: one per vCPU, in order).
func (c *Client) Threads() ([]Thread, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Thread
	cmd := "qfThreadInfo"
	for {
		rep, err := c.exchange(cmd)
		if err != nil {
			return nil, err
		}
		if err := check(cmd, rep); err != nil {
			return nil, err
		}
		if string(rep) == "l" {
			return out, nil
		}
		if rep[0] != 'm' {
			return nil, fmt.Errorf("%s: reply %q: %w", cmd, rep, ErrMalformed)
		}
		for f := range strings.SplitSeq(string(rep[1:]), ",") {
			t, err := parseThread([]byte(f))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", cmd, err)
			}
			if len(out) >= maxThreads {
				return nil, fmt.Errorf("%s: more than %d threads: %w", cmd, maxThreads, ErrMalformed)
			}
			out = append(out, t)
		}
		cmd = "qsThreadInfo"
	}
}

// selectThread makes t the thread of register and memory commands.
func (c *Client) selectThread(t Thread) error {
	if c.hasThr && c.thread == t {
		return nil
	}
	if err := c.expectOK("Hg" + t.String()); err != nil {
		return err
	}
	c.thread, c.hasThr = t, true
	return nil
}

// ReadRegisters returns the raw reply to g for thread t: every register
// of the g set, in number order, in target byte order. Use the target
// description's offsets to find one.
func (c *Client) ReadRegisters(t Thread) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.selectThread(t); err != nil {
		return nil, err
	}
	rep, err := c.exchange("g")
	if err != nil {
		return nil, err
	}
	if err := check("g", rep); err != nil {
		return nil, err
	}
	regs, err := unhex(rep)
	if err != nil {
		return nil, fmt.Errorf("g: %w", err)
	}
	return regs, nil
}

// ReadRegister reads register num of thread t (p packet).
func (c *Client) ReadRegister(t Thread, num int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.selectThread(t); err != nil {
		return nil, err
	}
	cmd := "p" + strconv.FormatUint(uint64(num), 16)
	rep, err := c.exchange(cmd)
	if err != nil {
		return nil, err
	}
	if err := check(cmd, rep); err != nil {
		return nil, err
	}
	v, err := unhex(rep)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return v, nil
}

// WriteRegister writes register num of thread t (P packet); val is in
// target byte order and as wide as the register.
func (c *Client) WriteRegister(t Thread, num int, val []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.selectThread(t); err != nil {
		return err
	}
	return c.expectOK(fmt.Sprintf("P%x=%x", num, val))
}

// WriteRegisters writes the whole g set of thread t (G packet).
func (c *Client) WriteRegisters(t Thread, regs []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.selectThread(t); err != nil {
		return err
	}
	return c.expectOK(fmt.Sprintf("G%x", regs))
}

// setPhys switches QEMU's memory commands between virtual addresses (of
// the selected vCPU) and guest physical addresses.
func (c *Client) setPhys(on bool) error {
	if c.phys == on {
		return nil
	}
	v := 0
	if on {
		v = 1
	}
	if err := c.expectOK(fmt.Sprintf("Qqemu.PhyMemMode:%d", v)); err != nil {
		return err
	}
	c.phys = on
	return nil
}

// chunk is the most memory bytes one m/M packet carries.
func (c *Client) chunk() int {
	return max(16, (c.pktSize-32)/2)
}

func (c *Client) readMem(addr uint64, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), c.chunk())
		cmd := fmt.Sprintf("m%x,%x", addr, n)
		rep, err := c.exchange(cmd)
		if err != nil {
			return err
		}
		if err := check(cmd, rep); err != nil {
			return err
		}
		if len(rep) != 2*n {
			return fmt.Errorf("%s: %d hex digits back: %w", cmd, len(rep), ErrMalformed)
		}
		b, err := unhex(rep)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		copy(p, b)
		p, addr = p[n:], addr+uint64(n)
	}
	return nil
}

func (c *Client) writeMem(addr uint64, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), c.chunk())
		if err := c.expectOK(fmt.Sprintf("M%x,%x:%x", addr, n, p[:n])); err != nil {
			return err
		}
		p, addr = p[n:], addr+uint64(n)
	}
	return nil
}

// ReadVirtual reads memory at a virtual address as thread t's vCPU sees it.
func (c *Client) ReadVirtual(t Thread, addr uint64, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.selectThread(t); err != nil {
		return err
	}
	if err := c.setPhys(false); err != nil {
		return err
	}
	return c.readMem(addr, p)
}

// ReadPhysical reads guest physical memory (QEMU's PhyMemMode).
func (c *Client) ReadPhysical(addr uint64, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setPhys(true); err != nil {
		return err
	}
	return c.readMem(addr, p)
}

// WritePhysical writes guest physical memory (QEMU's PhyMemMode).
func (c *Client) WritePhysical(addr uint64, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setPhys(true); err != nil {
		return err
	}
	return c.writeMem(addr, p)
}

// InsertBreakpoint sets a breakpoint of kind (SoftwareBreakpoint, ...) at
// addr; size is the Z packet's kind field (1 on x86).
func (c *Client) InsertBreakpoint(kind int, addr uint64, size int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expectOK(fmt.Sprintf("Z%d,%x,%x", kind, addr, size))
}

// RemoveBreakpoint removes a breakpoint set with InsertBreakpoint.
func (c *Client) RemoveBreakpoint(kind int, addr uint64, size int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expectOK(fmt.Sprintf("z%d,%x,%x", kind, addr, size))
}

// QEMU single-step flags (qqemu.sstep): step with interrupts and timers
// masked, so that a step executes exactly the instruction at RIP.
const (
	SStepEnable  = 0x1
	SStepNoIRQ   = 0x2
	SStepNoTimer = 0x4
)

// StepFlags returns QEMU's single-step flags.
func (c *Client) StepFlags() (int, error) {
	rep, err := c.Command("qqemu.sstep")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(string(rep), "0x"), 16, 16)
	if err != nil {
		return 0, fmt.Errorf("qqemu.sstep reply %q: %w", rep, ErrMalformed)
	}
	return int(v), nil
}

// SetStepFlags sets QEMU's single-step flags.
func (c *Client) SetStepFlags(flags int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expectOK(fmt.Sprintf("Qqemu.sstep=%x", flags))
}

// Continue resumes every thread. The stop reply arrives later; collect it
// with Wait.
func (c *Client) Continue() error {
	return c.resume("vCont;c")
}

// Step single-steps thread t while every other thread stays stopped, and
// waits for the stop reply.
func (c *Client) Step(t Thread) (*Stop, error) {
	if err := c.resume("vCont;s:" + t.String()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.Timeout)
	defer cancel()
	return c.Wait(ctx)
}

func (c *Client) resume(cmd string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	if c.running {
		return fmt.Errorf("%s: %w", cmd, ErrRunning)
	}
	if err := c.send(cmd); err != nil {
		return err
	}
	c.running = true
	return nil
}

// Running reports whether the target was resumed and has not reported a
// stop yet.
func (c *Client) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// Wait waits for the stop reply after Continue or Step. Console output is
// passed to Options.Output. When ctx ends first, Wait interrupts the target,
// collects its stop reply (the target is then stopped) and returns it with
// ctx's error.
func (c *Client) Wait(ctx context.Context) (*Stop, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, c.broken
	}
	if !c.running {
		return nil, errors.New("wait: target is not running")
	}
	// Wake the blocked read when ctx ends. The read deadline is only used
	// while peeking for the first byte of a packet, so that a packet is
	// never cut in half.
	woke := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetReadDeadline(time.Now())
		close(woke)
	})
	// quiesce makes sure the wake-up is not pending, so that it cannot
	// cut short a later read.
	quiet := false
	quiesce := func() {
		if !quiet && !stop() {
			<-woke
		}
		quiet = true
	}
	defer quiesce()
	for {
		if ctx.Err() != nil {
			quiesce()
			return c.interrupt(ctx.Err())
		}
		c.conn.SetReadDeadline(time.Time{})
		if ctx.Err() != nil {
			continue // the wake-up may have run before the reset
		}
		_, err := c.r.Peek(1)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() != nil {
				continue
			}
			return nil, c.fail(fmt.Errorf("wait for stop: %w", err))
		}
		c.conn.SetReadDeadline(time.Now().Add(c.opt.Timeout))
		st, err := c.readStop()
		if err != nil {
			return nil, err
		}
		if st != nil {
			return st, nil
		}
	}
}

// readStop reads one packet while running: nil for console output, the
// stop otherwise.
func (c *Client) readStop() (*Stop, error) {
	p, err := c.readPacket()
	if err != nil {
		return nil, c.fail(fmt.Errorf("wait for stop: %w", err))
	}
	if isOutput(p) {
		c.output(p[1:])
		return nil, nil
	}
	st, err := ParseStop(p)
	if err != nil {
		return nil, c.fail(err)
	}
	c.running = false
	c.hasThr = false // QEMU selects the stopping thread
	return st, nil
}

// interrupt sends the interrupt byte and reads the stop reply it causes
// (or the one that crossed it). It returns the stop with cause.
func (c *Client) interrupt(cause error) (*Stop, error) {
	c.conn.SetWriteDeadline(time.Now().Add(c.opt.Timeout))
	if _, err := c.conn.Write([]byte{0x03}); err != nil {
		return nil, c.fail(fmt.Errorf("interrupt: %w", err))
	}
	c.conn.SetReadDeadline(time.Now().Add(c.opt.Timeout))
	for {
		st, err := c.readStop()
		if err != nil {
			return nil, err
		}
		if st != nil {
			return st, cause
		}
	}
}

// Interrupt stops a running target and returns its stop reply.
func (c *Client) Interrupt() (*Stop, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := c.Wait(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return st, err
}

// Detach ends the debugging session: QEMU removes its breakpoints and
// resumes the guest. The connection is closed afterwards.
func (c *Client) Detach() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	if c.running {
		if _, err := c.interrupt(nil); err != nil {
			return fmt.Errorf("detach: %w", err)
		}
	}
	cmd := "D"
	if c.multi {
		cmd = "D;1"
	}
	err := c.expectOK(cmd)
	c.fail(errors.New("detached"))
	return err
}

// Close closes the connection without detaching. QEMU then keeps the guest
// stopped with every breakpoint set: callers should Detach.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail(errors.New("closed"))
	return nil
}

// Broken returns the error that ended the connection, or nil.
func (c *Client) Broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}
