package sim

import (
	"context"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

func monitorOf(r driver.Reason) driver.Monitor {
	switch r {
	case driver.ReasonInterrupt:
		return driver.MonitorBreakpoint
	case driver.ReasonSingleStep:
		return driver.MonitorSingleStep
	}
	return driver.MonitorMemoryAccess
}

// EnableMonitor turns on reporting of a kind of event.
func (m *Machine) EnableMonitor(mon driver.Monitor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("EnableMonitor"); err != nil {
		return err
	}
	if mon < 0 || int(mon) >= len(m.monitors) {
		return fmt.Errorf("sim: monitor %d: %w", mon, driver.ErrUnsupported)
	}
	m.monitors[mon] = true
	return nil
}

// DisableMonitor turns off a kind of event. Queued, undelivered events of
// that kind are dropped and their vCPUs retry; disabling single-step clears
// every vCPU's single-step flag.
func (m *Machine) DisableMonitor(mon driver.Monitor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("DisableMonitor"); err != nil {
		return err
	}
	if mon < 0 || int(mon) >= len(m.monitors) {
		return fmt.Errorf("sim: monitor %d: %w", mon, driver.ErrUnsupported)
	}
	m.monitors[mon] = false
	q := m.queue[:0]
	for _, c := range m.queue {
		if monitorOf(c.ev.Reason) == mon {
			c.queued, c.stopped = false, false
			continue
		}
		q = append(q, c)
	}
	m.queue = q
	if mon == driver.MonitorSingleStep {
		for _, c := range m.vcpus {
			c.singleStep, c.trap = false, false
			m.completed(c) // a pending fast single-step is abandoned
		}
	}
	return nil
}

func (c *vcpu) runnable() bool {
	return !c.stopped && (c.pc < len(c.script) || len(c.injected) > 0 || c.singleStep || c.fast)
}

// WaitEvent runs the guest until a vCPU raises an event and returns it. The
// event stays valid until it is answered with Respond. It returns ErrIdle
// when no vCPU can run.
func (m *Machine) WaitEvent(ctx context.Context) (*driver.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("WaitEvent"); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		if i&63 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		n := 0
		var pick, stepping *vcpu
		if m.paused == 0 {
			// Reservoir-pick a runnable vCPU without allocating.
			for _, c := range m.vcpus {
				if c.runnable() {
					n++
					if n == 1 || m.rng.IntN(n) == 0 {
						pick = c
					}
					if stepping == nil && (c.singleStep || c.fast) {
						stepping = c
					}
				}
			}
		}
		if stepping != nil && m.cfg.Latency <= 0 {
			pick = stepping // prompt stepping, see the package documentation
		}
		if len(m.queue) > 0 && (n == 0 || m.cfg.Latency <= 0 || m.rng.Float64() >= m.cfg.Latency) {
			c := m.queue[0]
			copy(m.queue, m.queue[1:])
			m.queue = m.queue[:len(m.queue)-1]
			c.queued = false
			return &c.ev, nil
		}
		if n == 0 {
			if m.paused > 0 {
				return nil, fmt.Errorf("guest paused: %w", ErrIdle)
			}
			return nil, ErrIdle
		}
		if i >= m.cfg.MaxSteps {
			return nil, fmt.Errorf("sim: no event after %d steps", i)
		}
		if m.step(pick) {
			pick.stopped, pick.queued = true, true
			m.queue = append(m.queue, pick)
		}
	}
}

// step executes one step of c and reports whether it raised an event.
func (m *Machine) step(c *vcpu) bool {
	m.steps++
	if c.trap {
		c.trap = false
	} else {
		if m.exec(c) {
			return true
		}
		m.completed(c)
	}
	if c.singleStep {
		if m.monitors[driver.MonitorSingleStep] {
			c.ev = driver.Event{VCPU: c.id, View: c.view, Reason: driver.ReasonSingleStep, Regs: c.regs}
			return true
		}
		c.singleStep = false
		m.record(Observation{VCPU: c.id, Kind: ObsUnmonitored, Note: "single-step"})
	}
	return false
}

// completed ends a fast single-step after a step that completed.
func (m *Machine) completed(c *vcpu) {
	if c.fast {
		c.view, c.fast = c.fastRet, false
		if c.view != introspect.DefaultView && m.views[c.view] == nil {
			c.view = introspect.DefaultView
		}
	}
}

// Respond resumes the vCPU of ev as r says (see the package documentation).
func (m *Machine) Respond(ev *driver.Event, r driver.Response) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("Respond"); err != nil {
		return err
	}
	if ev == nil || int(ev.VCPU) >= len(m.vcpus) {
		return fmt.Errorf("sim: respond to an unknown event")
	}
	c := m.vcpus[ev.VCPU]
	if !c.stopped || c.queued || ev != &c.ev {
		return fmt.Errorf("sim: vCPU %d has no outstanding event", ev.VCPU)
	}
	if r.SetView && r.View != introspect.DefaultView && m.views[r.View] == nil {
		return fmt.Errorf("sim: respond: no view %d", r.View)
	}
	c.stopped = false
	if r.Registers != nil {
		c.regs = *r.Registers
	}
	prev := c.view
	if r.SetView {
		c.view = r.View
	}
	if r.FastSingleStep && !c.fast {
		c.fast, c.fastRet = true, prev
	}
	if r.ToggleSingleStep {
		c.singleStep = !c.singleStep
	}
	if r.ReinjectInterrupt && ev.Reason == driver.ReasonInterrupt && c.pc < len(c.script) {
		// Delivering the #BP completes the INT3 instruction; a pending
		// single-step traps right after the delivery, before the guest's
		// next op.
		m.deliverBP(c, introspect.Va(c.regs.RIP))
		c.regs.RIP++
		c.pc++
		m.completed(c)
		c.trap = c.singleStep
	}
	return nil
}

// Monitoring reports whether a monitor is enabled (for tests).
func (m *Machine) Monitoring(mon driver.Monitor) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.monitors[mon]
}

// View returns the view a vCPU is in (for tests).
func (m *Machine) View(v introspect.VCPU) introspect.View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vcpus[v].view
}

var (
	_ driver.Driver         = (*Machine)(nil)
	_ driver.PhysWriter     = (*Machine)(nil)
	_ driver.RegisterWriter = (*Machine)(nil)
	_ driver.Pauser         = (*Machine)(nil)
	_ driver.Views          = (*Machine)(nil)
	_ driver.FrameAllocator = (*Machine)(nil)
	_ driver.Injector       = (*Machine)(nil)
	_ driver.EventSource    = (*Machine)(nil)
)
