package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testutil"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/collector/collectortest"
)

// scripted returns attachers whose "qemu" guest runs a small workload.
func scripted(a **collectortest.Attacher) attachersFunc {
	*a = &collectortest.Attacher{
		Guest: collector.Guest{OS: "linux", Kernel: "Linux version 6.1.0-test"},
		Script: func(ctx context.Context, _ int, emit func(collectortest.Step) error) error {
			p := collector.Process{PID: 42, PPID: 1, Name: "sh", Image: "/bin/sh"}
			for _, s := range []collectortest.Step{
				{Kind: collector.KindProcessStart, Process: p},
				{Kind: collector.KindFileCreate, Process: p, Path: "/tmp/x"},
				{Kind: collector.KindFileWrite, Process: p, Path: "/tmp/x"},
				{Kind: collector.KindFileWrite, Process: p, Path: "/tmp/x"},
				{Kind: collector.KindProcessExit, Process: p},
			} {
				if err := emit(s); err != nil {
					return err
				}
			}
			return nil
		},
	}
	return func(*slog.Logger) map[string]collector.Attacher {
		return map[string]collector.Attacher{"qemu": *a}
	}
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// run: config file → supervisor → exporters → /metrics; SIGTERM (ctx) →
// sessions closed, spans and events flushed, clean exit.
func TestRunCommand(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
web: {listen_address: %q}
guests:
  - name: vm1
    qemu: {gdb_socket: /run/vm1.gdb}
otlp: {file: %q}
jsonl: {path: %q}
`, addr, filepath.Join(dir, "spans.json"), filepath.Join(dir, "events.jsonl"))), 0o600)
	var a *collectortest.Attacher
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	var stderr testutil.SyncBuffer
	go func() { errc <- dispatch(ctx, []string{"run", "--config", cfg}, io.Discard, &stderr, scripted(&a)) }()
	eventually(t, "metrics", func() bool {
		return strings.Contains(get("http://"+addr+"/metrics"), "vmi_file_writes_total{domain=\"vm1\"} 2\n")
	})
	m := get("http://" + addr + "/metrics")
	for _, want := range []string{`vmi_guest_up{domain="vm1"} 1`, `vmi_process_exits_total{domain="vm1"} 1`, "vmi_otlp_spans_started_total 4"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if _, open, closed, hooks := a.Stats(); open != 0 || closed != 1 || hooks != 0 {
		t.Errorf("after exit: open=%d closed=%d hooks=%d", open, closed, hooks)
	}
	if n := lines(t, filepath.Join(dir, "events.jsonl")); n != 5 {
		t.Errorf("%d events in the log, want 5", n)
	}
	if n := lines(t, filepath.Join(dir, "spans.json")); n != 4 {
		t.Errorf("%d spans in the file, want 4", n)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Errorf("not JSON: %s", sc.Text())
		}
		n++
	}
	return n
}

func TestTraceCommand(t *testing.T) {
	var a *collectortest.Attacher
	var out testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		errc <- dispatch(ctx, []string{"trace", "--gdb", "127.0.0.1:1234", "--probes", "file.write"}, &out, io.Discard, scripted(&a))
	}()
	eventually(t, "two lines", func() bool { return strings.Count(out.String(), "\n") == 2 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev struct {
			Kind string
			Path string
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Kind != "file.write" || ev.Path != "/tmp/x" {
			t.Errorf("line %s: %v", l, err)
		}
	}
}

func TestTraceCommandErrors(t *testing.T) {
	err := dispatch(context.Background(), []string{"trace", "--probes", "file.shred"}, io.Discard, io.Discard, attachers)
	if err == nil || !strings.Contains(err.Error(), "qemu.gdb_socket is required") || !strings.Contains(err.Error(), `unknown probe kind "file.shred"`) {
		t.Errorf("err %v", err)
	}
	// A guest that cannot be attached ends trace with the error.
	var a *collectortest.Attacher
	f := scripted(&a)
	a.AttachErr = func(int) error { return errors.New("connection refused") }
	err = dispatch(context.Background(), []string{"trace", "--gdb", "/nonexistent"}, io.Discard, io.Discard, f)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err %v", err)
	}
}

// demo wiring, with the test guest replaced by the scripted one.
func TestDemoCommand(t *testing.T) {
	old := bootTestGuest
	defer func() { bootTestGuest = old }()
	stopped := false
	bootTestGuest = func(ctx context.Context, dir string, log *slog.Logger) (collector.GuestConfig, func() error, error) {
		return collector.GuestConfig{Driver: "qemu", OS: "linux", QEMU: collector.QEMUConfig{GDBSocket: filepath.Join(dir, "gdb.sock")}},
			func() error { stopped = true; return nil }, nil
	}
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	var out testutil.SyncBuffer
	var a *collectortest.Attacher
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		errc <- dispatch(ctx, []string{"demo", "--dir", dir, "--web.listen-address", addr, "--otlp.endpoint", ""}, &out, io.Discard, scripted(&a))
	}()
	eventually(t, "metrics", func() bool {
		return strings.Contains(get("http://"+addr+"/metrics"), `vmi_process_starts_total{domain="demo"} 1`)
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !stopped {
		t.Error("test guest not stopped")
	}
	for _, want := range []string{"http://" + addr + "/metrics", filepath.Join(dir, "spans.json"), filepath.Join(dir, "events.jsonl")} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %s:\n%s", want, out.String())
		}
	}
	if n := lines(t, filepath.Join(dir, "spans.json")); n != 4 {
		t.Errorf("%d spans", n)
	}
}
