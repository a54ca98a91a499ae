package promexp_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// serveHTTP serves fresh metrics with o and returns the base URL.
func serveHTTP(t *testing.T, o promexp.ServerOptions) string {
	t.Helper()
	return "http://" + serveWith(t, promexp.New(promexp.Options{}), o)
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
	base := serveHTTP(t, promexp.ServerOptions{Ready: ready.Load})
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
	off := serveHTTP(t, promexp.ServerOptions{})
	if _, page := status(t, off+"/"); strings.Contains(page, "debug/pprof") || !strings.Contains(page, `href="/-/healthy"`) {
		t.Errorf("landing page without pprof:\n%s", page)
	}
	if code, _ := status(t, off+"/debug/pprof/heap"); code == 200 {
		t.Error("pprof served while off")
	}
	on := serveHTTP(t, promexp.ServerOptions{EnablePprof: true})
	if _, page := status(t, on+"/"); !strings.Contains(page, "debug/pprof/heap") {
		t.Errorf("landing page with pprof lacks its links:\n%s", page)
	}
	for _, p := range []string{"/debug/pprof/heap", "/debug/pprof/"} {
		if code, _ := status(t, on+p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
}
