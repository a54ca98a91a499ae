package dashboards_test

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// TestEveryKindHasAPanel: the counter of every event kind in the
// collector's table is shown by at least one dashboard panel, so that a
// new kind without a panel fails here rather than going unseen.
func TestEveryKindHasAPanel(t *testing.T) {
	used := uses(t, loadDashboards(t))
	for _, k := range collector.Kinds() {
		m := k.Info().Metric.Name
		if len(used[m]) == 0 {
			t.Errorf("%s: no dashboard panel shows %s", k, m)
		}
	}
}
