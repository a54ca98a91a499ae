package promexp_test

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/exporter/promexp"
)

// FuzzGuestStrings feeds guest-controlled strings (process name, kernel
// banner, probe name, rule) into the metrics: no panic (client_golang
// panics on invalid UTF-8 label values), the registry still gathers, the
// text output parses, and the process-name series stay within the cap.
func FuzzGuestStrings(f *testing.F) {
	f.Add("bash", "Linux version 6.1.0", "vfs_write", "r1", "other")
	f.Add("\xff\xfe", "\x00\xc3", "\xed\xa0\x80", "", "a\"b\\c\nd")
	f.Add(strings.Repeat("é", 300), strings.Repeat("x", 5000), "p", "rule", "")
	f.Fuzz(func(t *testing.T, name, kernel, probe, rule, name2 string) {
		m := promexp.New(promexp.Options{ProcessLabelCap: 2})
		g := &collector.Guest{Domain: "vm", OS: "linux", Kernel: kernel}
		m.Up("vm", g, true)
		for _, n := range []string{name, name2, name + "x", name2 + "y"} {
			m.Event(&collector.Event{Kind: collector.KindFileWrite, Guest: g, Probe: probe,
				Process: collector.Process{Name: n}, Rules: []string{rule}})
		}
		m.ProbeError("vm", probe, collector.ReasonDecode)
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		if n := len(fams["vmi_process_events_total"].GetMetric()); n > 3 {
			t.Fatalf("%d process series with a cap of 2 (+other)", n)
		}
	})
}
