package testguest

import (
	"context"
	"testing"
	"time"
)

// TestGuestFlood runs the write-flood between two rounds: it reports its
// file with the exact count, and the rounds around it keep their numbers
// and complete manifests (the flood is no round).
func TestGuestFlood(t *testing.T) {
	g, _ := BootForTest(t, "vfl", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := g.Flood(ctx, 0); err == nil {
		t.Error("flood of 0 writes accepted")
	}
	m1, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	f, err := g.Flood(ctx, 5000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %+v in %v", f, time.Since(t0))
	if f.Opens != 1 || f.Bytes != 2*5000 || f.PID == 0 || f.Round != 0 {
		t.Errorf("flood record %+v", f)
	}
	m2, err := g.Run(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Manifest{m1, m2} {
		if err := m.Check(); err != nil {
			t.Error(err)
		}
	}
	if len(m2.Rounds) != 1 || m2.Rounds[0] != 2 {
		t.Errorf("round after the flood: %v, want [2]", m2.Rounds)
	}
}
