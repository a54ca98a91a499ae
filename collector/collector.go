package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Options configure a Collector.
type Options struct {
	// Guests to watch; names must be unique.
	Guests []GuestConfig
	// Attachers by driver name ("qemu", "xen").
	Attachers map[string]Attacher
	// Enabled are the event kinds whose probes are installed.
	Enabled []Kind
	// Metrics is updated in the event loop (nil: none).
	Metrics Metrics
	// Sinks each get a bounded queue of QueueSize events.
	Sinks     []Sink
	QueueSize int
	// QueueBytes bounds each queue by the estimated memory of the events
	// it holds as well (DefaultQueueBytes if 0), so that large events
	// cannot grow the heap QueueSize times their size.
	QueueBytes int64
	// Limits bound the guest-controlled strings of every event.
	Limits Limits
	// Enrichers and Rules run on every event, in that order, before
	// metrics and export.
	Enrichers []Enricher
	Rules     []Rule
	// Backoff between attach attempts of a guest.
	Backoff Backoff
	// Detached, when set, is called once every session has ended at
	// exit (hooks removed, guests resumed), before the queues drain:
	// from then on the process may be killed without harm to a guest.
	Detached func()
	// Started, when set, is called by Run once the exporter queues run
	// and every supervisor has started (readiness: the exporters are up).
	Started func()
	// CloseTimeout bounds draining and closing the sinks at exit.
	CloseTimeout time.Duration
	Logger       *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// VerifyInterval is how often a session that implements Verifier has
	// its guest checked while the event loop runs; 0 (or negative) never,
	// as verify.interval: 0 in the configuration. A failed check ends the
	// session, as a dead guest does, and the supervisor attaches again.
	VerifyInterval time.Duration
	// Once makes each supervisor attach only once: a failed attach or a
	// failed session ends it, and Run returns the errors (for one-shot
	// commands such as trace, where retrying forever would hide them).
	Once bool
}

// Collector runs one supervisor per guest and the exporter queues.
type Collector struct {
	o Options
	p *pipeline
}

// DefaultQueueSize is the queue length used when Options.QueueSize is 0.
const DefaultQueueSize = 4096

// DefaultVerifyInterval is the default of verify.interval, the
// configuration's VerifyInterval.
const DefaultVerifyInterval = 5 * time.Second

// New checks the options and builds a collector. No guests is allowed:
// Run then waits for its context (the exporter's own metrics are still
// served).
func New(o Options) (*Collector, error) {
	seen := map[string]bool{}
	for _, g := range o.Guests {
		if g.Name == "" {
			return nil, errors.New("collector: guest without a name")
		}
		if seen[g.Name] {
			return nil, fmt.Errorf("collector: guest %q listed twice", g.Name)
		}
		seen[g.Name] = true
		if o.Attachers[g.Driver] == nil {
			return nil, fmt.Errorf("collector: guest %q: no attacher for driver %q", g.Name, g.Driver)
		}
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = time.Second
	}
	if o.Backoff.Max < o.Backoff.Initial {
		o.Backoff.Max = max(o.Backoff.Initial, time.Minute)
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 10 * time.Second
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	p := &pipeline{enrichers: o.Enrichers, rules: o.Rules, metrics: o.Metrics, maxString: o.Limits.maxString()}
	for _, s := range o.Sinks {
		p.queues = append(p.queues, newQueue(s, o.QueueSize, o.QueueBytes, o.Metrics, o.Logger))
	}
	return &Collector{o: o, p: p}, nil
}

// Run supervises every guest until ctx ends, then closes every session
// (removing its hooks), drains the queues and closes the sinks.
func (c *Collector) Run(ctx context.Context) error {
	for _, q := range c.p.queues {
		go q.run()
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, g := range c.o.Guests {
		s := &supervisor{cfg: g, attacher: c.o.Attachers[g.Driver], o: &c.o, p: c.p,
			log: c.o.Logger.With("domain", g.Name)}
		c.o.Metrics.Up(g.Name, nil, false)
		wg.Go(func() {
			if err := s.run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("guest %s: %w", g.Name, err))
				mu.Unlock()
			}
		})
	}
	if c.o.Started != nil {
		c.o.Started()
	}
	if len(c.o.Guests) == 0 && !c.o.Once {
		c.o.Logger.Info("no guests configured: waiting")
		<-ctx.Done()
	}
	wg.Wait()
	if c.o.Detached != nil {
		c.o.Detached()
	}
	errs = append(errs, closeQueues(c.p.queues, c.o.CloseTimeout)...)
	return errors.Join(errs...)
}

// supervisor attaches to one guest, runs its event loop and detaches,
// again and again with backoff, until its context ends.
type supervisor struct {
	cfg      GuestConfig
	attacher Attacher
	o        *Options
	p        *pipeline
	log      *slog.Logger
}

// run returns only when ctx ends, or, with Options.Once, after one
// session (with its error).
func (s *supervisor) run(ctx context.Context) error {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.o.Backoff.Initial,
		MaxInterval:         s.o.Backoff.Max,
		Multiplier:          2,
		RandomizationFactor: s.o.Backoff.Jitter,
	}
	b.Reset()
	for {
		started := time.Now()
		attached, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if s.o.Once {
			return err
		}
		reason := DownSessionEnded
		if !attached {
			reason = AttachFailureReason(err)
		}
		s.down(reason)
		// A session that lived longer than the longest delay was healthy:
		// start over from the shortest delay. One that dies at once keeps
		// growing the delay, so a crash loop does not hammer the guest.
		if attached && time.Since(started) > s.o.Backoff.Max {
			b.Reset()
		}
		d := b.NextBackOff()
		s.log.Warn("guest down, retrying", "reason", reason, "err", err, "retry_in", d.String())
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// down reports the guest down for reason ("" once it is attached) to
// Metrics that say why (DownMetrics).
func (s *supervisor) down(reason string) {
	if dm, ok := s.o.Metrics.(DownMetrics); ok {
		dm.Down(s.cfg.Name, reason)
	}
}

// session runs one attachment. attached reports whether the attach
// succeeded (the guest was up for a while).
func (s *supervisor) session(ctx context.Context) (attached bool, err error) {
	sess, err := s.attacher.Attach(ctx, s.cfg)
	s.o.Metrics.Attach(s.cfg.Name, err)
	if err != nil {
		return false, fmt.Errorf("attach: %w", err)
	}
	defer func() {
		if cerr := sess.Close(); cerr != nil {
			s.log.Error("detach failed", "err", cerr)
			err = errors.Join(err, fmt.Errorf("detach: %w", cerr))
		} else {
			s.log.Info("detached: hooks removed, guest resumed")
		}
		s.o.Metrics.Up(s.cfg.Name, nil, false)
	}()
	gp := sess.Guest()
	if gp == nil {
		return true, errors.New("session has no guest identity")
	}
	g := *gp
	probes, err := sess.OS().Probes(s.o.Enabled)
	if err != nil {
		return true, fmt.Errorf("probes: %w", err)
	}
	l := &loop{guest: &g, probes: make(map[string]*Probe, len(probes)), p: s.p, log: s.log, now: s.o.Now}
	if err := s.install(sess, probes, l); err != nil {
		return true, err
	}
	if err := applied(ctx, sess.Engine()); err != nil {
		return true, err
	}
	s.log.Info("attached", "os", g.OS, "kernel", g.Kernel, "probes", len(probes))
	s.o.Metrics.Up(s.cfg.Name, &g, true)
	s.down("")
	if cm, ok := s.o.Metrics.(CounterMetrics); ok {
		if read := sessionCounters(sess); read != nil {
			cm.SessionCounters(s.cfg.Name, read)
			defer cm.SessionCounters(s.cfg.Name, nil)
		}
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if v, ok := sess.(Verifier); ok && s.o.VerifyInterval > 0 {
		go s.verify(runCtx, v, stop)
	}
	err = runEngine(runCtx, sess, l)
	if ctx.Err() != nil {
		return true, nil
	}
	if cause := context.Cause(runCtx); runCtx.Err() != nil && cause != nil {
		return true, cause
	}
	if err == nil {
		err = errors.New("engine stopped")
	}
	return true, fmt.Errorf("event loop: %w", err)
}

// verify checks the session's guest kernel every VerifyInterval until ctx
// ends, and stops the session (through stop) when a check fails: the guest
// rebooted, so the hooks no longer sit on the functions they were set on.
func (s *supervisor) verify(ctx context.Context, v Verifier, stop context.CancelCauseFunc) {
	t := time.NewTicker(s.o.VerifyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := v.Verify()
		switch {
		case err == nil:
		case errors.Is(err, driver.ErrUnsupported):
			s.log.Debug("guest kernel cannot be checked while it runs", "err", err)
			return
		default:
			stop(fmt.Errorf("guest kernel check: %w", err))
			return
		}
	}
}

// install adds a hook per probe, with the guest paused when the session
// can pause it.
func (s *supervisor) install(sess Session, probes []Probe, l *loop) (err error) {
	if p, ok := sess.(driver.Pauser); ok {
		if err := p.Pause(); err != nil {
			return fmt.Errorf("pause: %w", err)
		}
		defer func() {
			if rerr := p.Resume(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
			}
		}()
	}
	for i := range probes {
		pr := &probes[i]
		if _, dup := l.probes[pr.Name]; dup {
			return fmt.Errorf("probe %q listed twice", pr.Name)
		}
		l.probes[pr.Name] = pr
		// Kernel functions run under every process's page tables, so the
		// hooks are global.
		if err := sess.Engine().Add(hook.Hook{Addr: pr.Addr, Root: pr.Root, Global: true, Tag: pr.Name}); err != nil {
			return fmt.Errorf("hook %s at %#x: %w", pr.Name, uint64(pr.Addr), err)
		}
	}
	return nil
}

// applied waits, boundedly, until the hooks of an engine whose hooks apply
// later (hook.Applier: the plugin's) are in effect, so that the guest is
// marked up only once its hooks see what it does. The guest runs: its
// vCPUs apply the table.
func applied(ctx context.Context, eng hook.Engine) error {
	a, ok := eng.(hook.Applier)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	if err := a.WaitApplied(ctx); err != nil {
		return fmt.Errorf("hooks not applied within %v: %w", applyTimeout, err)
	}
	return nil
}

// applyTimeout bounds the wait for an Applier engine's hooks to take
// effect (the plugin applies a table within a second).
const applyTimeout = 10 * time.Second

type nopMetrics struct{}

func (nopMetrics) Event(*Event)                      {}
func (nopMetrics) ProbeError(string, string, string) {}
func (nopMetrics) Notice(string, string)             {}
func (nopMetrics) Attach(string, error)              {}
func (nopMetrics) Up(string, *Guest, bool)           {}
func (nopMetrics) Dropped(string, string)            {}
func (nopMetrics) Queue(string, func() int)          {}
