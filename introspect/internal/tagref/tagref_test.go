package tagref

import (
	"slices"
	"testing"
)

func TestCounts(t *testing.T) {
	var c Counts
	c.Add("a")
	c.Add("b")
	c.Add("a")
	if !slices.Equal(c.Tags(), []string{"a", "b"}) || c.Total() != 3 || !c.Has("a") || c.Has("c") {
		t.Fatalf("after adds: %v total %d", c.Tags(), c.Total())
	}
	if c.Drop("a") || !c.Has("a") || !slices.Equal(c.Tags(), []string{"a", "b"}) {
		t.Fatalf("one a dropped: %v", c.Tags())
	}
	if c.Drop("a") || c.Has("a") || !slices.Equal(c.Tags(), []string{"b"}) {
		t.Fatalf("a gone: %v", c.Tags())
	}
	if !c.Drop("b") || c.Total() != 0 || len(c.Tags()) != 0 {
		t.Fatalf("last dropped: %v total %d", c.Tags(), c.Total())
	}
}
