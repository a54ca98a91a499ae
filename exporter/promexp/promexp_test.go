package promexp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/bcrypt"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// Workload sizes of the scripted guest.
const (
	procs          = 3
	createsPerProc = 2
	writesPerProc  = 3
)

// workload is the scripted guest's run: procs processes, each creating
// and writing files, then exiting; one injected page fault; one write
// whose decode fails.
func workload(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
	var steps []collectortest.Step
	for i := range procs {
		p := collector.Process{PID: uint64(200 + i), PPID: 1, Name: fmt.Sprintf("worker%d", i), Image: "/bin/worker"}
		steps = append(steps, collectortest.Step{Kind: collector.KindProcessStart, Process: p})
		for j := range createsPerProc {
			steps = append(steps, collectortest.Step{Kind: collector.KindFileCreate, Process: p, Path: fmt.Sprintf("/tmp/w%d-%d", i, j)})
		}
		for j := range writesPerProc {
			steps = append(steps, collectortest.Step{Kind: collector.KindFileWrite, Process: p, Path: fmt.Sprintf("/tmp/w%d-%d", i, j%createsPerProc)})
		}
		steps = append(steps, collectortest.Step{Kind: collector.KindProcessExit, Process: p})
	}
	steps = append(steps,
		collectortest.Step{Notice: &hook.Notice{Kind: hook.NoticePageFaultInjected, Tag: collectortest.ProbeWrite, Addr: 0x7f0000001000}},
		collectortest.Step{Kind: collector.KindFileWrite, Err: fmt.Errorf("dentry loop")},
	)
	for _, s := range steps {
		if err := emit(s); err != nil {
			return err
		}
	}
	return nil
}

// traceIDs is an Enricher that gives every process event a trace ID, as
// the OTLP exporter does.
type traceIDs struct{}

func (traceIDs) Enrich(ev *collector.Event) {
	if ev.Process.PID != 0 {
		ev.TraceID = trace.TraceID{0xab, byte(ev.Process.PID)}
	}
}

// runGuest runs the scripted workload through a collector into m and
// returns once it is done; the collector keeps running until the test ends.
func runGuest(t *testing.T, m *promexp.Metrics) {
	t.Helper()
	a := &collectortest.Attacher{Guest: collector.Guest{OS: "linux", Kernel: "Linux version 6.1.0-28-cloud-amd64 \xff"}}
	var finished atomic.Bool
	a.Script = func(ctx context.Context, n int, emit func(collectortest.Step) error) error {
		err := workload(ctx, n, emit)
		finished.Store(true)
		return err
	}
	c, err := collector.New(collector.Options{
		Guests:    []collector.GuestConfig{{Name: "g1", Driver: "test"}},
		Attachers: map[string]collector.Attacher{"test": a},
		Enabled:   collector.ProbeKinds(), Metrics: m,
		Enrichers: []collector.Enricher{traceIDs{}},
		Rules: []collector.Rule{collector.RuleFunc(func(ev *collector.Event) []string {
			if ev.Kind == collector.KindFileWrite && strings.HasPrefix(ev.Path, "/tmp/w0") {
				return []string{"tmp_w0"}
			}
			return nil
		})},
		Sinks: []collector.Sink{discard{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !finished.Load() || value(m, "vmi_guest_up") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("scripted workload did not finish")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type discard struct{}

func (discard) Name() string                { return "discard" }
func (discard) Export(*collector.Event)     {}
func (discard) Close(context.Context) error { return nil }

// value returns the value of the single series of a gauge or counter.
func value(m *promexp.Metrics, name string) float64 {
	mfs, _ := m.Registry().Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			mt := mf.GetMetric()[0]
			return mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	return -1
}

// serve starts the metrics server on a free loopback port.
func serve(t *testing.T, m *promexp.Metrics, webConfig string) string {
	t.Helper()
	return serveWith(t, m, promexp.ServerOptions{WebConfigFile: webConfig, Version: "test"})
}

// serveWith starts the metrics server with o on a free loopback port and
// returns its address.
func serveWith(t *testing.T, m *promexp.Metrics, o promexp.ServerOptions) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Serve(ctx, l, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Error(err)
		}
	})
	return l.Addr().String()
}

func scrape(t *testing.T, url, accept string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestScrapeValuesAndPromtool(t *testing.T) {
	m := promexp.New(promexp.Options{Version: "test"})
	runGuest(t, m)
	addr := serve(t, m, "")
	text := scrape(t, "http://"+addr+"/metrics", "")

	for _, want := range []string{
		`vmi_guest_up{domain="g1"} 1`,
		`vmi_guest_attach_attempts_total{domain="g1",result="success"} 1`,
		`vmi_guest_attach_attempts_total{domain="g1",result="failure"} 0`,
		fmt.Sprintf(`vmi_process_starts_total{domain="g1"} %d`, procs),
		fmt.Sprintf(`vmi_process_exits_total{domain="g1"} %d`, procs),
		fmt.Sprintf(`vmi_file_creates_total{domain="g1"} %d`, procs*createsPerProc),
		fmt.Sprintf(`vmi_file_writes_total{domain="g1"} %d`, procs*writesPerProc),
		// Every write decoded, plus the one hit that failed to decode.
		fmt.Sprintf(`vmi_breakpoint_hits_total{domain="g1",probe="vfs_write"} %d`, procs*writesPerProc+1),
		`vmi_pagefaults_injected_total{domain="g1"} 1`,
		`vmi_page_ins_total{domain="g1"} 0`,
		`vmi_probe_errors_total{domain="g1",probe="vfs_write",reason="decode"} 1`,
		fmt.Sprintf(`vmi_suspicious_file_writes_total{domain="g1",rule="tmp_w0"} %d`, writesPerProc),
		fmt.Sprintf(`vmi_event_handling_seconds_count{domain="g1",probe="do_sys_openat2"} %d`, procs*createsPerProc),
		"vmi_guest_info{domain=\"g1\",kernel=\"Linux version 6.1.0-28-cloud-amd64 \uFFFD\",os=\"linux\"} 1",
		`vmi_exporter_build_info{version="test"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(text, "vmi_process_events_total") {
		t.Error("process-name metric present although not opted in")
	}

	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	om := scrape(t, "http://"+addr+"/metrics", "application/openmetrics-text;version=1.0.0")
	if !strings.Contains(om, `vmi_process_starts_total{domain="g1"} 3.0 # {trace_id="abca0000000000000000000000000000"} 1.0`) {
		t.Errorf("no trace exemplar in OpenMetrics output:\n%s", grep(om, "vmi_process_starts_total"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestProcessLabelCap(t *testing.T) {
	m := promexp.New(promexp.Options{ProcessLabelCap: 2})
	g := &collector.Guest{Domain: "g"}
	for _, name := range []string{"a", "b", "c", "d", "a", "other", "\xff\xfe"} {
		m.Event(&collector.Event{Kind: collector.KindProcessStart, Guest: g, Probe: "p", Process: collector.Process{Name: name}})
	}
	text := scrapeRegistry(t, m)
	for _, want := range []string{
		`vmi_process_events_total{domain="g",kind="process.start",process="a"} 2`,
		`vmi_process_events_total{domain="g",kind="process.start",process="b"} 1`,
		`vmi_process_events_total{domain="g",kind="process.start",process="other"} 4`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("lacks %s in\n%s", want, grep(text, "vmi_process_events_total"))
		}
	}
	if n := strings.Count(text, "vmi_process_events_total{"); n != 3 {
		t.Errorf("%d process series, want 3", n)
	}
}

func scrapeRegistry(t *testing.T, m *promexp.Metrics) string {
	t.Helper()
	return scrape(t, "http://"+serve(t, m, "")+"/metrics", "")
}

func TestBasicAuthAndLandingPage(t *testing.T) {
	m := promexp.New(promexp.Options{})
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfg, []byte("basic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, m, cfg)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated scrape: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.SetBasicAuth("prom", "s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`href="/metrics"`)) {
		t.Fatalf("landing page: %d %s", resp.StatusCode, b)
	}
}

// A hostile guest that starts many names fills its own share of the cap,
// not another guest's: the other guest's sshd keeps its label (before:
// first come, first served, and it became process="other").
func TestProcessLabelCapPerGuest(t *testing.T) {
	m := promexp.New(promexp.Options{ProcessLabelCap: 2})
	hostile, victim := &collector.Guest{Domain: "hostile"}, &collector.Guest{Domain: "victim"}
	for i := range 100 {
		m.Event(&collector.Event{Kind: collector.KindProcessStart, Guest: hostile, Probe: "p",
			Process: collector.Process{Name: fmt.Sprintf("x%d", i)}})
	}
	m.Event(&collector.Event{Kind: collector.KindProcessStart, Guest: victim, Probe: "p", Process: collector.Process{Name: "sshd"}})
	text := scrapeRegistry(t, m)
	if want := `vmi_process_events_total{domain="victim",kind="process.start",process="sshd"} 1`; !strings.Contains(text, want+"\n") {
		t.Errorf("lacks %s in\n%s", want, grep(text, "vmi_process_events_total"))
	}
	if n := strings.Count(text, `vmi_process_events_total{domain="hostile"`); n != 3 {
		t.Errorf("hostile guest has %d series, want 2 names and other", n)
	}
}
