package xen

import (
	"errors"
	"slices"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

func TestXenmemAccess(t *testing.T) {
	want := map[introspect.Access]uint32{
		introspect.AccessNone: 0, introspect.AccessR: 1, introspect.AccessW: 2, introspect.AccessRW: 3,
		introspect.AccessX: 4, introspect.AccessRX: 5, introspect.AccessW | introspect.AccessX: 6, introspect.AccessRWX: 7,
	}
	for a, x := range want {
		got, err := XenmemAccess(a)
		if err != nil || got != x {
			t.Errorf("XenmemAccess(%v) = %d, %v; want %d", a, got, err, x)
		}
		back, err := AccessFromXenmem(x)
		if err != nil || back != a {
			t.Errorf("AccessFromXenmem(%d) = %v, %v; want %v", x, back, err, a)
		}
	}
	if _, err := XenmemAccess(0x80); err == nil {
		t.Error("bogus access accepted")
	}
	for _, x := range []uint32{xenmemAccessRX2RW, xenmemAccessN2RWX, xenmemAccessDefault, 99} {
		if _, err := AccessFromXenmem(x); err == nil {
			t.Errorf("AccessFromXenmem(%d) accepted", x)
		}
	}
}

func TestFrameCache(t *testing.T) {
	var unmapped []introspect.Gfn
	fail := introspect.Gfn(99)
	c := newFrameCache(3, func(g introspect.Gfn, v int) error {
		if int(g) != v {
			t.Fatalf("unmap %v got value %d", g, v)
		}
		unmapped = append(unmapped, g)
		if g == fail {
			return errors.New("boom")
		}
		return nil
	})
	for g := range introspect.Gfn(3) {
		if err := c.put(g, int(g)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := c.get(0); !ok { // 0 becomes most recent; 1 is now oldest
		t.Fatal("0 missing")
	}
	c.put(3, 3)
	if !slices.Equal(unmapped, []introspect.Gfn{1}) {
		t.Fatalf("evicted %v, want [1]", unmapped)
	}
	if _, ok := c.get(1); ok {
		t.Fatal("1 still cached")
	}
	// Replacing an entry unmaps the old mapping.
	c.put(3, 3)
	if !slices.Equal(unmapped, []introspect.Gfn{1, 3}) || c.len() != 3 {
		t.Fatalf("replace: unmapped %v len %d", unmapped, c.len())
	}
	c.put(fail, int(fail))
	if err := c.flush(); err == nil {
		t.Fatal("flush hid the unmap error")
	}
	if c.len() != 0 {
		t.Fatalf("flush left %d entries", c.len())
	}
	if err := c.remove(12345); err != nil {
		t.Fatal(err)
	}
}

func TestMatchDomain(t *testing.T) {
	entries := []domainEntry{{"0", "Domain-0"}, {"3", "win10"}, {"x", "win7"}, {"7", "win11"}, {"70000", "big"}}
	if id, err := matchDomain(entries, "win10"); err != nil || id != 3 {
		t.Fatalf("win10 = %d, %v", id, err)
	}
	if _, err := matchDomain(entries, "win7"); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("non-numeric id: %v", err)
	}
	if _, err := matchDomain(entries, "big"); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("id beyond domid_t: %v", err)
	}
	if _, err := matchDomain(entries, "nope"); !errors.Is(err, ErrNoDomain) {
		t.Fatalf("missing: %v", err)
	}
	dup := append(entries, domainEntry{"9", "win11"})
	if _, err := matchDomain(dup, "win11"); err == nil || errors.Is(err, ErrNoDomain) {
		t.Fatalf("duplicate name: %v", err)
	}
}
