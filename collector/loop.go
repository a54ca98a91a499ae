package collector

import (
	"errors"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// pipeline is what every event goes through once decoded: enrichers,
// rules, metrics (all synchronous), then the exporter queues.
type pipeline struct {
	enrichers []Enricher
	rules     []Rule
	metrics   Metrics
	queues    []*queue
	maxString int // Limits.MaxStringLen resolved
}

func (p *pipeline) emit(ev *Event) {
	// Cap first: rules then match the capped form, at a bounded cost, and
	// nothing downstream holds more than the cap of guest data.
	if capEvent(ev, p.maxString) > 0 {
		if lm, ok := p.metrics.(LossMetrics); ok {
			for _, f := range ev.Truncated {
				lm.Truncated(ev.Guest.Domain, f)
			}
		}
	}
	for _, e := range p.enrichers {
		e.Enrich(ev)
	}
	for _, r := range p.rules {
		if names := r.Match(ev); len(names) > 0 {
			ev.Rules = append(ev.Rules, names...)
		}
	}
	p.metrics.Event(ev)
	for _, q := range p.queues {
		q.push(ev)
	}
}

// loop is the hook.Handler of one session: it turns hits and notices into
// events.
type loop struct {
	guest  *Guest
	probes map[string]*Probe
	p      *pipeline
	log    *slog.Logger
	now    func() time.Time
}

var _ hook.Handler = (*loop)(nil)

// HandleHit decodes a hit with its probe. Only a missing-page error is
// returned, so that the engine can have the guest page it in and deliver
// the hit again; every other failure is counted here and the hit dropped.
func (l *loop) HandleHit(h *hook.Hit) (err error) {
	// A decoder, enricher or rule that panics on what a guest wrote must
	// not take the process down: the hit is answered (the guest resumes),
	// counted as a panic, and the session goes on.
	defer func() {
		if r := recover(); r != nil {
			tag := ""
			if h != nil && h.Hook != nil {
				tag = h.Hook.Tag
			}
			l.p.metrics.ProbeError(l.guest.Domain, tag, ReasonPanic)
			l.log.Error("probe handler panicked; hit dropped", "probe", tag, "panic", r, "stack", string(debug.Stack()))
			err = nil
		}
	}()
	// The handler is called as soon as the engine has the stopped vCPU's
	// state, so this is the stop time as far as the collector can tell.
	start := l.now()
	var tag string
	if h.Hook != nil {
		tag = h.Hook.Tag
	}
	pr := l.probes[tag]
	if pr == nil || pr.Decode == nil {
		l.p.metrics.ProbeError(l.guest.Domain, tag, ReasonUnknown)
		return nil
	}
	ev := &Event{Time: start, Kind: pr.Kind, Guest: l.guest, Probe: pr.Name}
	if h.Ev != nil {
		ev.VCPU = int(h.Ev.VCPU)
	}
	if err := pr.Decode(h, ev); err != nil {
		switch {
		case errors.Is(err, ErrSkip):
			l.p.metrics.ProbeError(l.guest.Domain, pr.Name, ReasonSkip)
			return nil
		case isPageFault(err):
			return err
		}
		l.p.metrics.ProbeError(l.guest.Domain, pr.Name, ReasonDecode)
		l.log.Debug("decode failed", "probe", pr.Name, "vcpu", ev.VCPU, "err", err)
		return nil
	}
	ev.Latency = l.now().Sub(start)
	l.p.emit(ev)
	return nil
}

func isPageFault(err error) bool {
	_, ok := paging.PageFault(err)
	return ok
}

// Notice turns page and reinjection notices into events, failures into
// probe errors, and counts the rest.
func (l *loop) Notice(n hook.Notice) {
	defer func() {
		if r := recover(); r != nil {
			l.p.metrics.ProbeError(l.guest.Domain, n.Tag, ReasonPanic)
			l.log.Error("notice handler panicked; notice dropped", "notice", n.Kind.String(), "panic", r)
		}
	}()
	switch n.Kind {
	case hook.NoticeHandlerError:
		l.p.metrics.ProbeError(l.guest.Domain, n.Tag, ReasonHandler)
		l.log.Debug("handler error", "probe", n.Tag, "err", n.Err)
		return
	case hook.NoticeUnreadable:
		l.p.metrics.ProbeError(l.guest.Domain, n.Tag, ReasonUnreadable)
		return
	}
	k, ok := KindOfNotice(n.Kind)
	if !ok {
		l.p.metrics.Notice(l.guest.Domain, n.Kind.String())
		return
	}
	l.p.emit(&Event{Time: l.now(), Kind: k, Guest: l.guest, VCPU: int(n.VCPU), Address: uint64(n.Addr)})
}
