package promexp_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// prometheusServer starts Debian's Prometheus scraping target every
// 200ms, with exemplar storage on, and returns its base URL.
func prometheusServer(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("the Prometheus server is required (apt-get install prometheus): %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
  - job_name: vmi
    static_configs:
      - targets: [%q]
`, target)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--enable-feature=exemplar-storage")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// query returns the value of a PromQL expression yielding one sample, or
// false when it yields none.
func query(t *testing.T, base, expr string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %s %v", expr, r.Status, err)
	}
	if len(r.Data.Result) != 1 {
		return 0, false
	}
	v, err := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// The real Prometheus server scrapes the exporter and its HTTP API
// returns the workload's counts.
func TestPrometheusServerScrapes(t *testing.T) {
	m := promexp.New(promexp.Options{Version: "test"})
	runGuest(t, m)
	base := prometheusServer(t, serve(t, m, ""))

	want := map[string]float64{
		`vmi_guest_up{domain="g1"}`:                                       1,
		`vmi_process_starts_total{domain="g1"}`:                           procs,
		`vmi_process_exits_total{domain="g1"}`:                            procs,
		`vmi_file_creates_total{domain="g1"}`:                             procs * createsPerProc,
		`vmi_file_writes_total{domain="g1"}`:                              procs * writesPerProc,
		`vmi_breakpoint_hits_total{domain="g1",probe="wake_up_new_task"}`: procs,
		`vmi_pagefaults_injected_total{domain="g1"}`:                      1,
		`vmi_probe_errors_total{domain="g1",reason="decode"}`:             1,
		`sum(vmi_event_handling_seconds_count{domain="g1"})`:              procs * (2 + createsPerProc + writesPerProc),
		`vmi_suspicious_file_writes_total{domain="g1",rule="tmp_w0"}`:     writesPerProc,
		`vmi_guest_attach_attempts_total{domain="g1",result="success"}`:   1,
		`count(vmi_guest_info{domain="g1",os="linux"})`:                   1,
		`up{job="vmi"}`: 1,
		`count(vmi_exporter_queue_length{exporter="discard"})`:                1,
		`sum(vmi_events_dropped_total{domain="g1"})`:                          0, // zero series from the start
		`count(vmi_process_events_total) or vector(0)`:                        0,
		`vmi_breakpoint_hits_total{domain="g1",probe="do_sys_openat2"}`:       procs * createsPerProc,
		`vmi_breakpoint_reinjections_total{domain="g1"}`:                      0,
		`vmi_page_outs_total{domain="g1"}`:                                    0,
		`vmi_exporter_build_info{version="test"}`:                             1,
		`vmi_guest_attach_attempts_total{domain="g1",result="failure"}`:       0,
		`vmi_breakpoint_hits_total{domain="g1",probe="vfs_write"}`:            procs*writesPerProc + 1, // + the hit that failed to decode
		`vmi_breakpoint_hits_total{domain="g1",probe="do_exit"}`:              procs,
		`vmi_page_ins_total{domain="g1"}`:                                     0,
		`vmi_probe_errors_total{domain="g1",probe="vfs_write",reason="skip"}`: -1, // no series
	}
	deadline := time.Now().Add(30 * time.Second)
	for expr, v := range want {
		for {
			got, ok := query(t, base, expr)
			if (v == -1 && !ok) || (ok && got == v) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v (present %v), want %v", expr, got, ok, v)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// The exemplars reached Prometheus too.
	resp, err := http.Get(base + "/api/v1/query_exemplars?query=" + url.QueryEscape(`vmi_process_starts_total`) +
		fmt.Sprintf("&start=%d&end=%d", time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Minute).Unix()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ex struct {
		Data []struct {
			Exemplars []struct{ Labels map[string]string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil {
		t.Fatal(err)
	}
	if len(ex.Data) == 0 || len(ex.Data[0].Exemplars) == 0 || ex.Data[0].Exemplars[0].Labels["trace_id"] != "abca0000000000000000000000000000" {
		t.Errorf("exemplars in Prometheus: %+v", ex)
	}
}
