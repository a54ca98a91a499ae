package hook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// PluginOption configures a Plugin engine.
type PluginOption func(*Plugin)

// WithPluginFlush is WithFlush for the Plugin engine: flush is called
// before each hit is handled.
func WithPluginFlush(flush func()) PluginOption {
	return func(p *Plugin) { p.flush = flush }
}

// WithStatsInterval sets how often Run turns the driver's miss counters
// into notices (default 1s).
func WithStatsInterval(d time.Duration) PluginOption {
	return func(p *Plugin) { p.statsEvery = d }
}

// maxNoticesPerPoll bounds the notices one counter poll emits, so that a
// flood of async overflows cannot starve the hits; the rest are dropped
// from the notices (the driver's counters keep them).
const maxNoticesPerPoll = 4096

// Plugin is the Engine for instrumentation the hypervisor runs at hooked
// addresses itself (driver.HookTable: the vmi-hooks QEMU plugin). The VM
// never stops: only the vCPU of a hit waits until HandleHit returns, or
// until its hold deadline. Like Native's breakpoints, the plugin's hooks
// match an address in every address space; hooks that are not Global are
// filtered by the hitting vCPU's CR3. The plugin cannot inject a page
// fault, so a handler that needs a page the guest has paged out drops the
// hit (NoticeUnreadable).
type Plugin struct {
	drv        driver.HookTable
	stats      driver.HookStatter // nil when the driver has no counters
	flush      func()
	statsEvery time.Duration

	mu    sync.Mutex
	hooks map[introspect.Va][]*Hook
	last  driver.HookStats // counters already turned into notices
}

var _ Engine = (*Plugin)(nil)

// NewPlugin returns a Plugin engine on drv.
func NewPlugin(drv driver.HookTable, opts ...PluginOption) *Plugin {
	p := &Plugin{drv: drv, hooks: make(map[introspect.Va][]*Hook), statsEvery: time.Second}
	p.stats, _ = drv.(driver.HookStatter)
	if p.stats != nil {
		p.last, _ = p.stats.HookStats()
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func (p *Plugin) tableLocked() []introspect.Va {
	vas := make([]introspect.Va, 0, len(p.hooks))
	for va := range p.hooks {
		vas = append(vas, va)
	}
	return vas
}

// Add installs a hook. The guest need not be paused: the plugin applies
// the new table within about a second (WaitApplied waits for it).
func (p *Plugin) Add(h Hook) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	hc := h
	fresh := len(p.hooks[h.Addr]) == 0
	p.hooks[h.Addr] = append(p.hooks[h.Addr], &hc)
	if fresh {
		if err := p.drv.SetHooks(p.tableLocked()); err != nil {
			p.hooks[h.Addr] = p.hooks[h.Addr][:len(p.hooks[h.Addr])-1]
			if len(p.hooks[h.Addr]) == 0 {
				delete(p.hooks, h.Addr)
			}
			return fmt.Errorf("hook %s at %v: %w", h.Tag, h.Addr, err)
		}
	}
	return nil
}

// Remove uninstalls every hook at addr.
func (p *Plugin) Remove(addr introspect.Va) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.hooks[addr]) == 0 {
		return nil
	}
	delete(p.hooks, addr)
	if err := p.drv.SetHooks(p.tableLocked()); err != nil {
		return fmt.Errorf("remove hook at %v: %w", addr, err)
	}
	return nil
}

// WaitApplied blocks until the plugin instruments the hooks added so far.
func (p *Plugin) WaitApplied(ctx context.Context) error {
	return p.drv.WaitHooksApplied(ctx)
}

func (p *Plugin) match(va introspect.Va, root introspect.Pa) (hs []*Hook, found bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return applicable(p.hooks[va], root)
}

// Run waits for hits on every vCPU, hands each matching hook's hit to h
// (one at a time: handlers are never called concurrently) and releases
// the vCPU, until ctx ends or the driver fails.
func (p *Plugin) Run(ctx context.Context, h Handler) error {
	// One goroutine waits and handles: a hand-off between goroutines would
	// add to the time every held vCPU waits. The wait is cut every
	// statsEvery to turn the driver's counters into notices.
	every := p.statsEvery
	if p.stats == nil || every <= 0 {
		every = time.Hour
	}
	next := time.Now().Add(every)
	for {
		if time.Now().After(next) {
			p.notices(h)
			next = time.Now().Add(every)
		}
		wctx, cancel := context.WithDeadline(ctx, next)
		ev, err := p.drv.WaitHit(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				p.notices(h)
				return nil
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return fmt.Errorf("hook: wait for hit: %w", err)
		}
		p.dispatch(ev, h)
		held, err := p.drv.ReleaseHit(ev)
		if err != nil {
			return fmt.Errorf("hook: release vCPU %d: %w", ev.VCPU, err)
		}
		if !held && p.stats == nil {
			// Without counters this is all that tells of a missed hold.
			h.Notice(Notice{Kind: NoticeHoldMissed, VCPU: ev.VCPU, Addr: introspect.Va(ev.Regs.RIP)})
		}
	}
}

// notices turns the growth of the driver's counters of missed holds,
// hits not held and overflows into notices. Missed holds are counted here
// rather than at release, so that a hit whose vCPU went on before the
// driver even read it (and that was dropped) is counted too.
func (p *Plugin) notices(h Handler) {
	if p.stats == nil {
		return
	}
	s, err := p.stats.HookStats()
	if err != nil {
		return
	}
	emit := func(kind NoticeKind, now, before uint64) {
		if now < before {
			return
		}
		for range min(now-before, maxNoticesPerPoll) {
			h.Notice(Notice{Kind: kind})
		}
	}
	emit(NoticeHoldMissed, s.MissedDeadline, p.last.MissedDeadline)
	emit(NoticeNotHeld, s.MissedNoConsumer, p.last.MissedNoConsumer)
	emit(NoticeOverflow, s.Overflow, p.last.Overflow)
	p.last = s
}

// dispatch is Native's without an injector: the plugin cannot inject a
// page fault, so a handler's missing page drops the hit (NoticeUnreadable).
func (p *Plugin) dispatch(ev *driver.Event, h Handler) {
	dispatch(ev, h, p.match, p.flush, nil)
}

// Close empties the plugin's table, which drops every instrumentation,
// and waits up to two seconds for the plugin to apply it. Held vCPUs are
// released by Run's return and the driver's Close; the guest never
// stopped.
func (p *Plugin) Close() error {
	p.mu.Lock()
	clear(p.hooks)
	err := p.drv.SetHooks(nil)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("hook: clear plugin table: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.drv.WaitHooksApplied(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("hook: clear plugin table: %w", err)
	}
	return nil
}
