package dashboards_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
)

// suspiciousRule is the default rule the test guest's workload trips
// every round (vmi-round writes /etc/vmi-test-r<round>.conf).
const suspiciousRule = "linux-etc"

// TestLive runs "vmi-exporter demo" on the QEMU test guest (one boot) and
// checks:
//   - every metric the dashboards and rules use is exposed by the running
//     exporter (histogram series and recording rule outputs included), once
//     the guest's file writes have been counted;
//   - the workload's write under /etc, flagged by the default rule
//     linux-etc, increments vmi_suspicious_file_writes_total{rule=...} and
//     its span carries the vmi.rules attribute.
func TestLive(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the QEMU test guest")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := testutil.BuildExporter(ctx, t)
	// The demo prepares the guest in <dir>/testguest-cache: share the
	// usual test guest cache instead of fetching the packages again.
	dir := filepath.Join(tmp, "demo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cache, err := testguest.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(cache, filepath.Join(dir, "testguest-cache")); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	logf, err := os.Create(filepath.Join(tmp, "demo.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, bin, "demo", "--dir", dir, "--duration", "10m", "--web.listen-address", addr, "--otlp.endpoint", "")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=")
	// SIGINT ends the demo cleanly: hooks removed, spans flushed, guest
	// shut down.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			return err
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			return <-exited
		}
	}
	defer func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("demo log:\n%s", tail(string(b), 60))
		}
	}()

	// Wait until writes and the flagged write have been counted.
	var fams map[string]*dto.MetricFamily
	start := time.Now()
	for {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("demo exited early: %v", err)
		case <-ctx.Done():
			t.Fatalf("no suspicious write counted after %v", time.Since(start))
		case <-time.After(2 * time.Second):
		}
		fams, err = scrape(ctx, addr)
		if err != nil {
			continue
		}
		if value(fams, "vmi_file_writes_total", nil) > 0 && value(fams, "vmi_suspicious_file_writes_total", map[string]string{"rule": suspiciousRule}) > 0 {
			break
		}
	}
	t.Logf("writes counted %v after start: %v file writes, %v flagged by %s", time.Since(start).Round(time.Second),
		value(fams, "vmi_file_writes_total", nil), value(fams, "vmi_suspicious_file_writes_total", map[string]string{"rule": suspiciousRule}), suspiciousRule)
	// Let a few more rounds run so that every counter has moved, then
	// scrape the final set.
	time.Sleep(5 * time.Second)
	if fams, err = scrape(ctx, addr); err != nil {
		t.Fatal(err)
	}

	t.Run("metrics used are exposed", func(t *testing.T) {
		exposed := map[string]bool{}
		for name, f := range fams {
			exposed[name] = true
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				exposed[name+"_bucket"], exposed[name+"_sum"], exposed[name+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				exposed[name+"_sum"], exposed[name+"_count"] = true, true
			}
		}
		rq, recorded := loadRules(t)
		used := uses(t, append(rq, loadDashboards(t)...))
		// Recording rules must be built from exposed metrics too: their
		// expressions are among rq, so they are checked like the rest.
		for name, where := range used {
			if exposed[name] || recorded[name] || slices.Contains(scrapeMetrics, name) {
				continue
			}
			t.Errorf("metric %s is not exposed by the exporter; used by %s", name, strings.Join(where, "; "))
		}
		if len(used) < 20 {
			t.Errorf("only %d metrics used: parsing lost some?", len(used))
		}
		t.Logf("%d metric names used, %d exposed", len(used), len(exposed))
	})

	// Stop the demo: the span file is complete once it exits.
	if err := stop(); err != nil {
		t.Errorf("demo: %v", err)
	}
	t.Run("flagged write on the span", func(t *testing.T) {
		spans := readSpans(t, filepath.Join(dir, "spans.json"))
		var flagged, writes int
		for _, s := range spans {
			if s.Name != "file.write" {
				continue
			}
			writes++
			path, _ := s.attr("file.path").(string)
			rules, _ := s.attr("vmi.rules").([]any)
			hasRule := slices.ContainsFunc(rules, func(r any) bool { return r == suspiciousRule })
			etc := strings.HasPrefix(path, "/etc/vmi-test-r")
			switch {
			case etc && hasRule:
				flagged++
			case etc:
				t.Errorf("write of %s without the %s rule: %v", path, suspiciousRule, rules)
			case len(rules) > 0:
				t.Errorf("write of %s flagged %v", path, rules)
			}
		}
		if flagged == 0 {
			t.Fatalf("no file.write span of /etc/vmi-test-r*.conf with vmi.rules=%s among %d write spans", suspiciousRule, writes)
		}
		t.Logf("%d write spans, %d flagged by %s", writes, flagged, suspiciousRule)
	})
}

func scrape(ctx context.Context, addr string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// value sums the samples of a counter or gauge whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var v float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, w := range want {
			match = match && labels[k] == w
		}
		if !match {
			continue
		}
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return v
}

// span is what the test reads of a stdouttrace JSON span.
type span struct {
	Name       string
	Attributes []struct {
		Key   string
		Value struct {
			Type  string
			Value any
		}
	}
}

func (s span) attr(k string) any {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value.Value
		}
	}
	return nil
}

func readSpans(t *testing.T, path string) []span {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []span
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var s span
		if err := dec.Decode(&s); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, s)
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
