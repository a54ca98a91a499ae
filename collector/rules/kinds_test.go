package rules

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// TestKindTable: the rules accept exactly the kinds the collector's table
// marks as rule targets, and every kind fits the engine's kind bit mask.
func TestKindTable(t *testing.T) {
	for _, k := range collector.Kinds() {
		if k >= 32 {
			t.Errorf("%s: kind %d does not fit the uint32 kind masks", k, k)
		}
		_, err := New([]Config{{Name: "a", Kinds: []string{k.String()}, Paths: []string{"/x"}}}, Options{})
		if target := k.Info().RuleTarget; (err == nil) != target {
			t.Errorf("%s: rule target %v, but New: %v", k, target, err)
		}
	}
}
