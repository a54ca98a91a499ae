package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"

	"github.com/vmi-exporter/vmi-exporter/internal/config"
)

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer, newAttachers attachersFunc) error {
	fs := pflag.NewFlagSet("vmi-exporter run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(fs, nil)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	p, err := newPipeline(ctx, cfg, newAttachers(log), pipelineOpts{metrics: true, stdout: stdout}, log)
	if err != nil {
		return err
	}
	log.Info("vmi-exporter running", "version", buildVersion(), "guests", len(cfg.Guests),
		"metrics", cfg.Web.ListenAddress, "spans", p.spans, "events", cfg.JSONL.Path)
	return p.serve(ctx, cfg.Web, log)
}
