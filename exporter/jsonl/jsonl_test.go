package jsonl_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/exporter/jsonl"
)

func TestLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	w, err := jsonl.Open(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g := &collector.Guest{Domain: "vm1", OS: "linux", Kernel: "Linux version 6.1"}
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	w.Export(&collector.Event{Time: at, Kind: collector.KindFileWrite, Guest: g, VCPU: 1, Probe: "vfs_write",
		Process: collector.Process{PID: 7, PPID: 1, Name: "sh"}, Path: "/tmp/<a>", Latency: 1500,
		Rules: []string{"r"}, TraceID: trace.TraceID{1}})
	w.Export(&collector.Event{Time: at, Kind: collector.KindPageOut, Guest: g, Address: 0x1000})
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	l := lines[0]
	if l["kind"] != "file.write" || l["path"] != "/tmp/<a>" || l["latency_ns"] != 1500.0 || l["time"] != "2026-11-25T12:00:00Z" ||
		l["guest"].(map[string]any)["domain"] != "vm1" || l["process"].(map[string]any)["pid"] != 7.0 ||
		l["trace_id"] != "01000000000000000000000000000000" {
		t.Errorf("line %v", l)
	}
	if _, ok := lines[1]["trace_id"]; ok || lines[1]["kind"] != "page.out" {
		t.Errorf("line %v", lines[1])
	}
}
