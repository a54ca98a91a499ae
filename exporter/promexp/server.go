package promexp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// MetricsPath is where the metrics are served.
const MetricsPath = "/metrics"

// HealthyPath and ReadyPath are the Prometheus convention's liveness and
// readiness endpoints.
const (
	HealthyPath = "/-/healthy"
	ReadyPath   = "/-/ready"
)

// Handler serves the metrics in the Prometheus text format or, when the
// scraper asks for it, OpenMetrics (the format that carries exemplars).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		Registry:          m.reg, // promhttp_metric_handler_errors_total
		ErrorHandling:     promhttp.ContinueOnError,
	})
}

// ServerOptions configure the HTTP server.
type ServerOptions struct {
	// ListenAddresses are host:port pairs (used by ListenAndServe).
	ListenAddresses []string
	// WebConfigFile is the exporter-toolkit web configuration (TLS, basic
	// auth); empty serves plain HTTP without authentication.
	WebConfigFile string
	Version       string
	Logger        *slog.Logger
	// Ready says whether the exporter is ready (configuration loaded,
	// exporters up) for ReadyPath; nil is always ready. Whether guests
	// are attached is in the metrics (vmi_guest_up), not here: a host
	// without its guests is a working exporter.
	Ready func() bool
	// EnablePprof serves net/http/pprof under /debug/pprof/ and links it
	// from the landing page; off, neither.
	EnablePprof bool
}

// NewServer returns an HTTP server with the landing page at /, the
// metrics at /metrics, the health endpoints at /-/healthy and /-/ready
// and, with EnablePprof, the Go profiles at /debug/pprof/.
func (m *Metrics) NewServer(o ServerOptions) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, m.Handler())
	mux.HandleFunc(HealthyPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "vmi-exporter is Healthy.")
	})
	mux.HandleFunc(ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if o.Ready != nil && !o.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "vmi-exporter is not ready.")
			return
		}
		fmt.Fprintln(w, "vmi-exporter is Ready.")
	})
	if o.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "vmi-exporter",
		Description: "Guest kernel events seen from the hypervisor, as Prometheus metrics and OpenTelemetry traces",
		Version:     o.Version,
		Links: []web.LandingLinks{
			{Address: MetricsPath, Text: "Metrics"},
			{Address: HealthyPath, Text: "Health"},
			{Address: ReadyPath, Text: "Readiness"},
		},
		// The toolkit links the pprof pages unless told otherwise.
		Profiling: strconv.FormatBool(o.EnablePprof),
	})
	if err != nil {
		return nil, fmt.Errorf("landing page: %w", err)
	}
	mux.Handle("/", landing)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, nil
}

// ListenAndServe serves on o.ListenAddresses until ctx ends.
func (m *Metrics) ListenAndServe(ctx context.Context, o ServerOptions) error {
	srv, err := m.NewServer(o)
	if err != nil {
		return err
	}
	systemd := false
	flags := &web.FlagConfig{WebListenAddresses: &o.ListenAddresses, WebSystemdSocket: &systemd, WebConfigFile: &o.WebConfigFile}
	return serve(ctx, srv, logger(o), func() error { return web.ListenAndServe(srv, flags, logger(o)) })
}

// Serve serves on l until ctx ends.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, o ServerOptions) error {
	srv, err := m.NewServer(o)
	if err != nil {
		return err
	}
	flags := &web.FlagConfig{WebConfigFile: &o.WebConfigFile}
	return serve(ctx, srv, logger(o), func() error { return web.Serve(l, srv, flags, logger(o)) })
}

func logger(o ServerOptions) *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func serve(ctx context.Context, srv *http.Server, log *slog.Logger, run func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- run() }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("metrics server shutdown", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
