package collector_test

import (
	"regexp"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
)

// TestKindTable checks every row of the kind table is complete: the
// exporters, rules and configuration trust it.
func TestKindTable(t *testing.T) {
	metricName := regexp.MustCompile(`^vmi_[a-z_]+_total$`)
	kindName := regexp.MustCompile(`^[a-z]+\.[a-z]+$`)
	names, metrics, notices := map[string]bool{}, map[string]bool{}, map[hook.NoticeKind]bool{}
	for _, k := range collector.Kinds() {
		i := k.Info()
		if !kindName.MatchString(i.Name) || names[i.Name] {
			t.Errorf("kind %d: name %q not dotted lower case, or used twice", k, i.Name)
		}
		names[i.Name] = true
		if k2, err := collector.ParseKind(i.Name); err != nil || k2 != k {
			t.Errorf("%s: ParseKind = %v, %v", i.Name, k2, err)
		}
		if !metricName.MatchString(i.Metric.Name) || i.Metric.Help == "" || metrics[i.Metric.Name] {
			t.Errorf("%s: metric %+v: want a unique vmi_..._total counter with help", i.Name, i.Metric)
		}
		metrics[i.Metric.Name] = true
		switch i.Source {
		case collector.SourceProbe:
			if i.Notice != 0 {
				t.Errorf("%s: a probe kind with notice %s", i.Name, i.Notice)
			}
		case collector.SourceEngine:
			if i.Notice == 0 || notices[i.Notice] {
				t.Errorf("%s: engine kind with notice %s (none, or used twice)", i.Name, i.Notice)
			}
			notices[i.Notice] = true
			if got, ok := collector.KindOfNotice(i.Notice); !ok || got != k {
				t.Errorf("%s: KindOfNotice(%s) = %v, %v", i.Name, i.Notice, got, ok)
			}
			if i.Span != collector.SpanNone || i.RuleTarget {
				t.Errorf("%s: engine notices concern no process: span %d, rule target %v", i.Name, i.Span, i.RuleTarget)
			}
		default:
			t.Errorf("%s: no source", i.Name)
		}
	}
	if len(collector.ProbeKinds()) == 0 || len(collector.RuleKinds()) == 0 {
		t.Errorf("probe kinds %v, rule kinds %v", collector.ProbeKinds(), collector.RuleKinds())
	}
	if _, ok := collector.KindOfNotice(hook.NoticeReadHidden); ok {
		t.Error("a hidden read is an event")
	}
	if s := collector.Kind(0).String(); s != "unknown" {
		t.Errorf("Kind(0) = %q", s)
	}
}
