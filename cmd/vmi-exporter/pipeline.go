package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/otel"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/rules"
	"github.com/vmi-exporter/vmi-exporter/exporter/jsonl"
	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
	"github.com/vmi-exporter/vmi-exporter/internal/config"
	"github.com/vmi-exporter/vmi-exporter/internal/redact"
)

// pipeline is a configured collector with its exporters.
type pipeline struct {
	collector *collector.Collector
	metrics   *promexp.Metrics // nil without metrics
	spans     string           // where spans go, for people
	// ready is set once the collector runs its exporter queues, and
	// cleared when it stops: /-/ready.
	ready atomic.Bool
}

// pipelineOpts say how a command uses the pipeline.
type pipelineOpts struct {
	metrics bool      // serve Prometheus metrics (not for trace)
	once    bool      // attach once, no retries (trace)
	stdout  io.Writer // where jsonl.path "-" writes
}

// newPipeline builds the exporters and the collector of cfg.
func newPipeline(ctx context.Context, cfg *config.Config, attachers map[string]collector.Attacher, po pipelineOpts, log *slog.Logger) (*pipeline, error) {
	p := &pipeline{}
	o := collector.Options{
		Guests:         cfg.Guests,
		Attachers:      attachers,
		Enabled:        cfg.Kinds(),
		QueueSize:      cfg.Queues.Size,
		Backoff:        cfg.Backoff,
		Logger:         log,
		VerifyInterval: cfg.Verify.Interval,
		Once:           po.once,
		// Bounded in bytes as well: a guest sets the size of its events.
		QueueBytes: cfg.Queues.Bytes,
		Limits:     cfg.Limits,
		Detached:   detached.fire,
		Started:    func() { p.ready.Store(true) },
	}
	eng, err := newRules(cfg)
	if err != nil {
		return nil, err
	}
	o.Rules = []collector.Rule{eng}
	var sinks []collector.Sink
	closeAll := func() {
		for _, s := range sinks {
			s.Close(context.Background())
		}
	}
	if po.metrics {
		p.metrics = promexp.New(promexp.Options{ProcessLabelCap: cfg.Metrics.ProcessLabelCap, Version: buildVersion()})
		o.Metrics = p.metrics
	}
	if cfg.OTLP.Endpoint != "" || cfg.OTLP.File != "" {
		// The SDK reports export failures through a process-wide handler
		// (stderr by default); send them to our log instead.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("span export", "err", redact.Error(err, cfg.OTLP.Endpoint))
		}))
		exp, err := otlp.New(ctx, otlp.Options{
			Endpoint: cfg.OTLP.Endpoint, Protocol: cfg.OTLP.Protocol, Insecure: cfg.OTLP.Insecure,
			Headers: cfg.OTLP.Headers, File: cfg.OTLP.File, MaxOpenProcesses: cfg.OTLP.MaxOpenProcesses,
			Version: buildVersion(), Logger: log,
			MaxMessageBytes: cfg.OTLP.MaxMessageBytes, MaxAttributeLen: cfg.Limits.MaxStringLen,
		})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, exp)
		o.Enrichers = append(o.Enrichers, exp.Tracker())
		if p.metrics != nil {
			p.metrics.Registry().MustRegister(exp.Collector())
		}
		p.spans = cfg.OTLP.File
		if cfg.OTLP.Endpoint != "" {
			// Logged: no user:password@ or token from the URL.
			p.spans = cfg.OTLP.Protocol + " " + redact.URL(cfg.OTLP.Endpoint)
		}
	}
	if cfg.JSONL.Path != "" {
		var w *jsonl.Writer
		if cfg.JSONL.Path == "-" {
			w = jsonl.New(po.stdout, nil, 0)
		} else {
			if w, err = jsonl.Open(cfg.JSONL.Path, 0); err != nil {
				closeAll()
				return nil, err
			}
		}
		w.SetLogger(log)
		sinks = append(sinks, w)
	}
	o.Sinks = sinks
	c, err := collector.New(o)
	if err != nil {
		closeAll()
		return nil, err
	}
	p.collector = c
	return p, nil
}

// serve runs the collector and, when there are metrics, the HTTP server,
// until ctx ends or the server fails; then every session is closed and the
// exporters flushed before it returns.
func (p *pipeline) serve(ctx context.Context, web config.Web, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srvErr := make(chan error, 1)
	if p.metrics != nil {
		go func() {
			err := p.metrics.ListenAndServe(ctx, promexp.ServerOptions{
				ListenAddresses: []string{web.ListenAddress}, WebConfigFile: web.ConfigFile,
				Version: buildVersion(), Logger: log, Ready: p.ready.Load, EnablePprof: web.EnablePprof,
			})
			if err != nil {
				log.Error("metrics server failed", "err", err)
				cancel()
			}
			srvErr <- err
		}()
	} else {
		srvErr <- nil
	}
	err := p.collector.Run(ctx)
	p.ready.Store(false)
	cancel()
	if serr := <-srvErr; serr != nil {
		err = errors.Join(serr, err)
	}
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// newRules compiles the default suspicious-write rules with cfg.Rules
// applied over them.
func newRules(cfg *config.Config) (*rules.Engine, error) {
	user, err := rules.Decode(cfg.Rules)
	if err != nil {
		return nil, err
	}
	return rules.New(rules.Merge(rules.Defaults(), user), rules.Options{})
}
