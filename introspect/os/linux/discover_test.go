package linux

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

type ram []byte

func (r ram) ReadPhysical(pa introspect.Pa, p []byte) error {
	if uint64(pa)+uint64(len(p)) > uint64(len(r)) {
		return fmt.Errorf("read %v: %w", pa, driver.ErrOutOfRange)
	}
	copy(p, r[pa:])
	return nil
}

func TestFindBanners(t *testing.T) {
	mem := make(ram, 3*scanChunk+4096)
	put := func(at int, s string) { copy(mem[at:], s) }
	// One banner straddles the first chunk boundary, one is repeated, one
	// has no newline within the bound, one holds a control byte.
	put(scanChunk-10, "Linux version 6.1.0-a (x) #1\n")
	put(100, "Linux version 6.1.0-b #2\n")
	put(2*scanChunk+5, "Linux version 6.1.0-b #2\n")
	put(2*scanChunk+500, "Linux version \x01bad\n")
	big := make([]byte, maxBannerLen+10)
	for i := range big {
		big[i] = 'x'
	}
	put(3*scanChunk, "Linux version "+string(big)+"\n")
	got, err := FindBanners(mem, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Linux version 6.1.0-b #2", "Linux version 6.1.0-a (x) #1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("banners %q, want %q", got, want)
	}
	if got, _ := FindBanners(mem, 1); len(got) != 1 {
		t.Fatalf("max 1: got %d", len(got))
	}
}

func FuzzFindBanners(f *testing.F) {
	f.Add([]byte("Linux version 6.1\n"))
	f.Add([]byte("xxLinux version Linux version \n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := FindBanners(ram(b), maxBanners)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range got {
			if len(s) > maxBannerLen || !isPrintable(s) {
				t.Fatalf("bad banner %q", s)
			}
		}
	})
}
