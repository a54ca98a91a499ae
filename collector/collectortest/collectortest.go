// Package collectortest provides a scripted guest for tests and benchmarks
// of the collector and its exporters: an Attacher whose engine replays
// hits and notices chosen by the test, so that everything after the hook
// engine (decoding contract, supervision, metrics, exporters) runs for
// real without a hypervisor.
package collectortest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Probe names of the scripted guest, one per probe kind (those of the
// Linux OS layer).
const (
	ProbeCreate = "do_sys_openat2"
	ProbeWrite  = "vfs_write"
	ProbeStart  = "wake_up_new_task"
	ProbeExit   = "taskstats_exit"
)

var probeOf = map[collector.Kind]string{
	collector.KindFileCreate:   ProbeCreate,
	collector.KindFileWrite:    ProbeWrite,
	collector.KindProcessStart: ProbeStart,
	collector.KindProcessExit:  ProbeExit,
}

// probeName is the scripted guest's probe of a probe kind: a Linux
// function for the kinds above, the kind's name for any other, so that a
// kind added to the collector's table needs no change here.
func probeName(k collector.Kind) (string, bool) {
	if n, ok := probeOf[k]; ok {
		return n, true
	}
	if k.Info().Source == collector.SourceProbe {
		return k.String(), true
	}
	return "", false
}

// Step is one thing the scripted guest does: a hit of the probe of Kind
// decoded as Process and Path (or failing with Err), or, when Notice is
// set, an engine notice.
type Step struct {
	Kind    collector.Kind
	VCPU    int
	Process collector.Process
	Path    string
	Err     error
	Notice  *hook.Notice
}

// ErrDied is what a scripted engine returns when its script ends with the
// guest dying.
var ErrDied = errors.New("scripted guest died")

// Attacher is a scripted guest.
type Attacher struct {
	// Guest is the identity of every session; its Domain is the
	// configured name, as every Session must report it.
	Guest collector.Guest
	// AttachErr, when set, decides whether attempt n (from 0) fails.
	AttachErr func(attempt int) error
	// Script runs the session of attempt n: it calls emit for each step,
	// in order, and returns nil to keep the guest running until the
	// session ends, or an error to make the engine fail with it.
	Script func(ctx context.Context, attempt int, emit func(Step) error) error
	// Verify, when set, answers the collector's checks of the guest
	// kernel during attempt n; nil answers driver.ErrUnsupported.
	Verify func(attempt int) error
	// Counters, when set, are what each session reports as a
	// collector.CounterSource.
	Counters map[string]uint64

	mu       sync.Mutex
	attempts int
	open     int
	closed   int
	hooks    int
}

// Stats reports attach attempts, sessions still open, sessions closed and
// hooks still installed.
func (a *Attacher) Stats() (attempts, open, closed, hooks int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attempts, a.open, a.closed, a.hooks
}

// Attach starts a scripted session.
func (a *Attacher) Attach(ctx context.Context, g collector.GuestConfig) (collector.Session, error) {
	a.mu.Lock()
	n := a.attempts
	a.attempts++
	a.mu.Unlock()
	if a.AttachErr != nil {
		if err := a.AttachErr(n); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	a.open++
	a.mu.Unlock()
	guest := a.Guest
	guest.Domain = g.Name
	return &session{a: a, attempt: n, guest: &guest}, nil
}

type session struct {
	a       *Attacher
	attempt int
	guest   *collector.Guest
	hooks   []hook.Hook
	cur     *Step // the step being delivered, read by Decode
	once    sync.Once
	paused  bool
}

// Counters implements collector.CounterSource.
func (s *session) Counters() map[string]uint64 { return s.a.Counters }

func (s *session) Guest() *collector.Guest { return s.guest }
func (s *session) OS() collector.GuestOS   { return osLayer{s} }
func (s *session) Engine() hook.Engine     { return s }
func (s *session) Pause() error            { s.paused = true; return nil }
func (s *session) Resume() error           { s.paused = false; return nil }

var _ driver.Pauser = (*session)(nil)

// Verify implements collector.Verifier.
func (s *session) Verify() error {
	if s.a.Verify == nil {
		return fmt.Errorf("scripted guest: %w", driver.ErrUnsupported)
	}
	return s.a.Verify(s.attempt)
}

var _ collector.Verifier = (*session)(nil)

func (s *session) Close() error {
	s.once.Do(func() {
		s.a.mu.Lock()
		s.a.hooks -= len(s.hooks)
		s.a.open--
		s.a.closed++
		s.a.mu.Unlock()
		s.hooks = nil
	})
	return nil
}

// osLayer is the scripted guest's OS layer.
type osLayer struct{ s *session }

func (o osLayer) OS() string     { return o.s.guest.OS }
func (o osLayer) Kernel() string { return o.s.guest.Kernel }
func (o osLayer) Probes(enabled []collector.Kind) ([]collector.Probe, error) {
	return o.s.probes(enabled)
}

func (s *session) probes(enabled []collector.Kind) ([]collector.Probe, error) {
	var ps []collector.Probe
	for i, k := range enabled {
		name, ok := probeName(k)
		if !ok {
			return nil, fmt.Errorf("no probe for %s", k)
		}
		ps = append(ps, collector.Probe{Name: name, Kind: k, Addr: introspect.Va(0xffffffff81000000 + uint64(i)*0x100),
			Decode: s.decode})
	}
	return ps, nil
}

func (s *session) decode(h *hook.Hit, ev *collector.Event) error {
	st := s.cur
	if st.Err != nil {
		return st.Err
	}
	ev.Process = st.Process
	ev.Path = st.Path
	return nil
}

func (s *session) Add(h hook.Hook) error {
	if !s.paused {
		return errors.New("hook added while the guest runs")
	}
	s.hooks = append(s.hooks, h)
	s.a.mu.Lock()
	s.a.hooks++
	s.a.mu.Unlock()
	return nil
}

func (s *session) Run(ctx context.Context, h hook.Handler) error {
	byTag := map[string]*hook.Hook{}
	for i := range s.hooks {
		byTag[s.hooks[i].Tag] = &s.hooks[i]
	}
	var dev driver.Event
	emit := func(st Step) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if st.Notice != nil {
			h.Notice(*st.Notice)
			return nil
		}
		name, _ := probeName(st.Kind)
		hk := byTag[name]
		if hk == nil {
			return nil // probe not enabled: the guest runs the function unseen
		}
		s.cur = &st
		dev = driver.Event{VCPU: introspect.VCPU(st.VCPU), Reason: driver.ReasonBreakpoint}
		dev.Regs.RIP = uint64(hk.Addr)
		return h.HandleHit(&hook.Hit{Hook: hk, Ev: &dev})
	}
	if s.a.Script != nil {
		if err := s.a.Script(ctx, s.attempt, emit); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}
