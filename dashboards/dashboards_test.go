// Package dashboards_test checks the Grafana dashboards and Prometheus rules
// of this directory: their structure, that every PromQL expression parses,
// and, against the exporter really running on the QEMU test guest, that
// every metric they use is exposed and that a write the default rules flag
// shows in the counter and on the span.
package dashboards_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// query is one PromQL expression and where it was found.
type query struct{ where, expr string }

// grafanaVars replaces Grafana's variables by values PromQL accepts.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__range", "1h", "$__interval", "1m",
	"${domain}", ".*", "$domain", ".*",
)

// scrapeMetrics are made by Prometheus itself when it scrapes, not by the
// exporter.
var scrapeMetrics = []string{"up"}

// metricNames returns the metric names expr selects.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if name == "" && m.Name == "__name__" && m.Type.String() == "=" {
				name = m.Value
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s has no fixed metric name", vs)
		}
		names = append(names, name)
		return nil
	})
	return names, bad
}

// ruleFile is the part of a Prometheus rules file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Record, Alert, Expr, For string
			Labels                   map[string]string
			Annotations              map[string]string
		}
	}
}

// readRuleFile parses the Prometheus rule file.
func readRuleFile(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "vmi-exporter.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

func loadRules(t *testing.T) (qs []query, recorded map[string]bool) {
	t.Helper()
	rf := readRuleFile(t)
	recorded = map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "rules: " + r.Record + r.Alert
			qs = append(qs, query{where, r.Expr})
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	return qs, recorded
}

func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("grafana", "*.json"))
	if err != nil || len(files) < 3 {
		t.Fatalf("dashboards: %v, %v", files, err)
	}
	return files
}

// loadDashboards checks the structure of every dashboard and returns its
// queries (panel targets and variable queries).
func loadDashboards(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, f := range dashboardFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID, Title    string
			SchemaVersion int
			Templating    struct {
				List []struct {
					Name, Type, Definition string
					Query                  any
					Multi, IncludeAll      bool
				}
			}
			Panels []struct {
				Type, Title string
				Datasource  *struct{ UID string }
				Targets     []struct {
					Expr     string
					Exemplar bool
				}
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		if d.SchemaVersion < 39 || d.UID == "" || d.Title == "" {
			t.Errorf("%s: schemaVersion %d, uid %q, title %q", name, d.SchemaVersion, d.UID, d.Title)
		}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			switch v.Name {
			case "datasource":
				if v.Type != "datasource" || v.Query != "prometheus" {
					t.Errorf("%s: datasource variable %+v", name, v)
				}
			case "domain":
				if v.Definition != "label_values(vmi_guest_up, domain)" || !v.Multi || !v.IncludeAll {
					t.Errorf("%s: domain variable %+v", name, v)
				}
				qs = append(qs, query{name + ": variable domain", "vmi_guest_up"})
			}
		}
		if !vars["datasource"] || !vars["domain"] {
			t.Errorf("%s: variables %v, want datasource and domain", name, vars)
		}
		for _, p := range d.Panels {
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q does not use ${datasource}", name, p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", name, p.Title)
			}
			for _, tg := range p.Targets {
				if (p.Type == "timeseries" || p.Type == "heatmap") && !tg.Exemplar {
					t.Errorf("%s: panel %q: exemplars off", name, p.Title)
				}
				if strings.Contains(tg.Expr, "vmi_") && !strings.Contains(tg.Expr, "vmi_exporter_") && !strings.Contains(tg.Expr, `domain=~"$domain"`) && !strings.HasPrefix(tg.Expr, "vmi:") {
					t.Errorf("%s: panel %q ignores the domain variable: %s", name, p.Title, tg.Expr)
				}
				qs = append(qs, query{name + ": " + p.Title, tg.Expr})
			}
		}
	}
	return qs
}

// TestQueriesParse parses every expression and checks the rules'
// annotations point into the runbook.
func TestQueriesParse(t *testing.T) {
	rq, _ := loadRules(t)
	qs := append(rq, loadDashboards(t)...)
	for _, q := range qs {
		if _, err := metricNames(q.expr); err != nil {
			t.Errorf("%s: %s: %v", q.where, q.expr, err)
		}
	}
	rf := readRuleFile(t)
	runbook, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	alerts, n := map[string]bool{}, 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				if !strings.HasPrefix(r.Record, "vmi:") {
					t.Errorf("recording rule %s is not named vmi:...", r.Record)
				}
				continue
			}
			alerts[r.Alert] = true
			n++
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[k] == "" {
					t.Errorf("alert %s: no %s", r.Alert, k)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "RUNBOOK.md#"+anchor) || !bytes.Contains(runbook, []byte("## "+r.Alert+"\n")) {
				t.Errorf("alert %s: runbook_url %s has no section in RUNBOOK.md", r.Alert, r.Annotations["runbook_url"])
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s: no severity", r.Alert)
			}
		}
	}
	want := []string{"VMISuspiciousFileWrite", "VMIGuestDown", "VMIEventsDropped", "VMIPageFaultInjectionStorm", "VMIExporterDown"}
	for _, a := range want {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}
	if n != len(want) {
		t.Errorf("%d alerts, want %d", n, len(want))
	}
}

// TestChartCopies: the Helm chart ships the rules and dashboards as copies
// (Helm cannot read files outside the chart); they must not drift.
func TestChartCopies(t *testing.T) {
	files := append(dashboardFiles(t), filepath.Join("prometheus", "vmi-exporter.rules.yml"))
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join("..", "helm", "vmi-exporter", "files", filepath.Base(f))
		got, err := os.ReadFile(cp)
		if err != nil {
			t.Errorf("chart copy: %v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: cp %s %s", cp, f, f, cp)
		}
	}
	// And nothing in files/ that is not a copy.
	all, _ := filepath.Glob(filepath.Join("..", "helm", "vmi-exporter", "files", "*"))
	for _, f := range all {
		if !slices.ContainsFunc(files, func(s string) bool { return filepath.Base(s) == filepath.Base(f) }) {
			t.Errorf("%s is not a copy of a dashboards/ file", f)
		}
	}
}

// uses maps each metric name the queries use to where.
func uses(t *testing.T, qs []query) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	for _, q := range qs {
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		for _, n := range names {
			m[n] = append(m[n], q.where)
		}
	}
	return m
}
