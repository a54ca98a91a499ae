package promexp_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// serveWith starts the metrics server with o on a free loopback port.
func serveWith(t *testing.T, o promexp.ServerOptions) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- promexp.New(promexp.Options{}).Serve(ctx, l, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	return "http://" + l.Addr().String()
}

func status(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /-/healthy answers while the server runs; /-/ready follows Ready.
func TestHealthAndReadiness(t *testing.T) {
	var ready atomic.Bool
	base := serveWith(t, promexp.ServerOptions{Ready: ready.Load})
	if code, _ := status(t, base+promexp.HealthyPath); code != 200 {
		t.Errorf("healthy: %d", code)
	}
	if code, _ := status(t, base+promexp.ReadyPath); code != http.StatusServiceUnavailable {
		t.Errorf("ready before exporters run: %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := status(t, base+promexp.ReadyPath); code != 200 {
		t.Errorf("ready: %d", code)
	}
}

// The landing page links pprof only when it is served (before: links that
// 404ed).
func TestPprofBehindFlag(t *testing.T) {
	off := serveWith(t, promexp.ServerOptions{})
	if _, page := status(t, off+"/"); strings.Contains(page, "debug/pprof") || !strings.Contains(page, `href="/-/healthy"`) {
		t.Errorf("landing page without pprof:\n%s", page)
	}
	if code, _ := status(t, off+"/debug/pprof/heap"); code == 200 {
		t.Error("pprof served while off")
	}
	on := serveWith(t, promexp.ServerOptions{EnablePprof: true})
	if _, page := status(t, on+"/"); !strings.Contains(page, "debug/pprof/heap") {
		t.Errorf("landing page with pprof lacks its links:\n%s", page)
	}
	for _, p := range []string{"/debug/pprof/heap", "/debug/pprof/"} {
		if code, _ := status(t, on+p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
}
