package promexp_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
	"github.com/vmi-exporter/vmi-exporter/internal/promtest"
)

// The real Prometheus server scrapes the exporter and its HTTP API
// returns the workload's counts.
func TestPrometheusServerScrapes(t *testing.T) {
	m := promexp.New(promexp.Options{Version: "test"})
	runGuest(t, m)
	base := promtest.Server(t, serve(t, m, ""), 200*time.Millisecond)

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
		`vmi_breakpoint_hits_total{domain="g1",probe="taskstats_exit"}`:       procs,
		`vmi_page_ins_total{domain="g1"}`:                                     0,
		`vmi_probe_errors_total{domain="g1",probe="vfs_write",reason="skip"}`: -1, // no series
	}
	deadline := time.Now().Add(30 * time.Second)
	for expr, v := range want {
		for {
			got, ok := promtest.Query(t, base, expr)
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
