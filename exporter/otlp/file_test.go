package otlp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/exporter/otlp"
)

// Without an endpoint the spans go to a file, one JSON object per line.
func TestFileFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spans.json")
	exp, err := otlp.New(context.Background(), otlp.Options{File: path})
	if err != nil {
		t.Fatal(err)
	}
	run(t, exp, script)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s struct {
			Name        string
			SpanContext struct{ TraceID string }
			Parent      struct{ SpanID string }
		}
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if s.SpanContext.TraceID == "" {
			t.Errorf("span without trace: %s", sc.Text())
		}
		names[s.Name]++
	}
	if names["process"] != 3 || names["file.create"] != 1 || names["file.write"] != 2 {
		t.Errorf("spans in file: %v", names)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []otlp.Options{{}, {Endpoint: "127.0.0.1:4317", Protocol: "udp"}, {File: "/nonexistent/dir/spans.json"}} {
		if _, err := otlp.New(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
