package promexp_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/trace"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.prom with the metrics the tests render")

// ownMetrics gathers the exporter's metrics without the Go runtime and
// process collectors, whose values change from run to run.
func ownMetrics(reg prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := reg.Gather()
		var own []*dto.MetricFamily
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "go_") && !strings.HasPrefix(mf.GetName(), "process_") {
				own = append(own, mf)
			}
		}
		return own, err
	})
}

// goldenSequence updates m as a session of guest g1 would: a failed and a
// successful attach, an event of every kind in the collector's table (so a
// new kind shows up in the golden file), a rule hit, a probe error, an
// engine notice that is not an event and a drop; g2 is configured but
// never attaches.
func goldenSequence(m *promexp.Metrics) {
	m.Queue("jsonl", func() int { return 3 })
	m.Up("g1", nil, false)
	m.Up("g2", nil, false)
	m.Attach("g1", os.ErrDeadlineExceeded)
	m.Down("g1", collector.AttachFailureReason(os.ErrDeadlineExceeded))
	m.Attach("g1", nil)
	g := &collector.Guest{Domain: "g1", OS: "linux", Kernel: "Linux version 6.1.0-28-cloud-amd64"}
	m.Up("g1", g, true)
	m.Down("g1", "")
	// g2 is absent from this host; a reason outside the set is bounded.
	m.Down("g2", collector.DownNotFound)
	m.Down("g2", "disk on fire")
	m.Down("g2", collector.DownNotFound)
	t0 := time.Unix(1700000000, 0)
	for i, k := range collector.Kinds() {
		ev := &collector.Event{Time: t0, Kind: k, Guest: g, Latency: time.Duration(i+1) * 40 * time.Microsecond,
			Process: collector.Process{PID: 100, PPID: 1, Name: "sh"}}
		if k.Info().Source == collector.SourceProbe {
			ev.Probe = "probe_" + strings.ReplaceAll(k.String(), ".", "_")
		}
		if k.Info().Span != collector.SpanNone {
			// Exemplars are not in the text format: they must not matter.
			ev.TraceID = trace.TraceID{0xab, byte(i)}
		}
		m.Event(ev)
	}
	m.Event(&collector.Event{Time: t0, Kind: collector.KindFileWrite, Guest: g, Probe: "probe_file_write",
		Latency: 2 * time.Millisecond, Path: "/etc/passwd", Rules: []string{"linux-etc"},
		Process: collector.Process{PID: 101, PPID: 100, Name: "evil"}})
	m.ProbeError("g1", "probe_file_write", collector.ReasonDecode)
	m.Notice("g1", "read_hidden")
	m.Dropped("g1", "jsonl")
	m.Lost("g1", "jsonl", collector.LossWriteError, 2)
	m.Truncated("g1", collector.FieldPath)
	m.SessionCounters("g1", func() map[string]uint64 { return map[string]uint64{"qemu_resteps": 3} })
}

// TestGoldenMetrics renders the metrics of goldenSequence and compares
// them with testdata/metrics.prom (go test -update rewrites it).
func TestGoldenMetrics(t *testing.T) {
	m := promexp.New(promexp.Options{ProcessLabelCap: 1, Version: "golden"})
	goldenSequence(m)
	reg := ownMetrics(m.Registry())
	golden := filepath.Join("testdata", "metrics.prom")
	if *update {
		// Not testutil.GatherAndFormat: without names it selects nothing.
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run TestGoldenMetrics -update writes it)", err)
	}
	if err := testutil.GatherAndCompare(reg, bytes.NewReader(want)); err != nil {
		t.Errorf("metrics differ from %s (go test -run TestGoldenMetrics -update rewrites it):\n%v", golden, err)
	}
}
