package profile

import (
	"errors"
	"os"
	"reflect"
	"testing"
)

func testProfile() *Profile {
	p := New("Linux version 6.1.0-test (x@y) #1 SMP")
	p.Symbols["init_task"] = 0xffffffff82a1aa40
	p.Symbols["current_task"] = 0x1fb80
	elem := &Type{Kind: KindBase, Name: "char", Size: 1}
	p.Types["task_struct"] = &Struct{Name: "task_struct", Size: 9728, Fields: map[string]Field{
		"comm":        {Name: "comm", Offset: 2976, Type: Type{Kind: KindArray, Size: 16, Count: 16, Elem: elem}},
		"real_parent": {Name: "real_parent", Offset: 2432, Type: Type{Kind: KindPointer, Size: 8, Elem: &Type{Kind: KindStruct, Name: "task_struct", Size: 9728}}},
		"in_execve":   {Name: "in_execve", Offset: 2344, Type: Type{Kind: KindBitfield, Size: 4, BitPos: 3, BitLen: 1, Elem: &Type{Kind: KindBase, Name: "unsigned int", Size: 4}}},
	}}
	p.Types["u"] = &Struct{Name: "u", Size: 8, Union: true, Fields: map[string]Field{}}
	return p
}

func TestCacheRoundTrip(t *testing.T) {
	c := Cache{Dir: t.TempDir() + "/sub"}
	p := testProfile()
	if _, err := c.Load(p.Name); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("empty cache: %v", err)
	}
	if err := c.Store(p); err != nil {
		t.Fatal(err)
	}
	got, err := c.Load(p.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("round trip differs:\n%+v\n%+v", got, p)
	}
	if err := c.StoreAlias("image-sha", p.Name); err != nil {
		t.Fatal(err)
	}
	if got, err := c.LoadAlias("image-sha"); err != nil || got.Name != p.Name {
		t.Fatalf("LoadAlias: %v", err)
	}
	if _, err := c.LoadAlias("other"); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("unknown alias: %v", err)
	}
	if _, err := c.Load("another banner"); !errors.Is(err, ErrCacheMiss) {
		t.Fatalf("other name: %v", err)
	}
	if err := c.Store(New("")); err == nil {
		t.Fatal("stored a profile without a name")
	}
}

func TestCacheRejectsBadFiles(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	p := testProfile()
	if err := c.Store(p); err != nil {
		t.Fatal(err)
	}
	path := c.Path(p.Name)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Another format version is a miss, so the caller rebuilds.
	old := append([]byte(nil), good...)
	old[8] = CacheVersion + 1
	os.WriteFile(path, old, 0o644)
	if _, err := c.Load(p.Name); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("other version: %v, want ErrCacheMiss", err)
	}
	// A file of another profile under this name's path (renamed by hand).
	q := testProfile()
	q.Name = "other"
	if err := c.Store(q); err != nil {
		t.Fatal(err)
	}
	os.Rename(c.Path("other"), path)
	if _, err := c.Load(p.Name); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("renamed file: %v, want ErrCacheMiss", err)
	}
	// Truncations and garbage are errors, not panics.
	for _, n := range []int{0, 4, 20, len(good) / 2, len(good) - 1} {
		os.WriteFile(path, good[:n], 0o644)
		if _, err := c.Load(p.Name); err == nil {
			t.Errorf("truncated to %d: no error", n)
		}
	}
}

// FuzzDecodeProfile feeds arbitrary payloads to the cache decoder: a
// corrupt cache file is an error, never a panic or a runaway allocation.
func FuzzDecodeProfile(f *testing.F) {
	f.Add(encodeProfile(testProfile()))
	f.Add(encodeProfile(New("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeProfile(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to an equivalent profile.
		q, err := decodeProfile(encodeProfile(p))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatal("re-encoding changed the profile")
		}
	})
}
