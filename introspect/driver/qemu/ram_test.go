package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// TestRAMLayout checks the mapping of guest physical addresses to the RAM
// file, with RAM split around the PCI hole: [0, low) at offset 0 and
// [4 GiB, 4 GiB+size-low) at offset low.
func TestRAMLayout(t *testing.T) {
	const size, low = 4 * introspect.PageSize, 3 * introspect.PageSize
	mem := make([]byte, size)
	for i := range mem {
		mem[i] = byte(i / introspect.PageSize)
	}
	r := &ram{mem: mem, lowMem: low}
	ok := map[introspect.Pa]byte{0: 0, 0x1000: 1, 0x2fff: 2, fourGiB: 3, fourGiB + 0xfff: 3}
	for pa, want := range ok {
		b, err := r.slice(pa, 1)
		if err != nil || b[0] != want {
			t.Errorf("%v: %v %v, want page %d", pa, b, err, want)
		}
	}
	bad := []struct {
		pa introspect.Pa
		n  int
	}{{0x3000, 1}, {0x2fff, 2}, {fourGiB - 1, 1}, {fourGiB + 0x1000, 1}, {fourGiB + 0xfff, 2}, {1 << 50, 1}}
	for _, c := range bad {
		if _, err := r.slice(c.pa, c.n); !errors.Is(err, driver.ErrOutOfRange) {
			t.Errorf("%v+%d: %v, want ErrOutOfRange", c.pa, c.n, err)
		}
	}
}

func TestMapRAM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := mapRAM(path, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.unmap()
	if len(r.mem) != 8192 || r.lowMem != 8192 {
		t.Errorf("mapped %d bytes, low %d", len(r.mem), r.lowMem)
	}
	if _, err := mapRAM(path, 16384, 0, false); err == nil {
		t.Error("mapped more than the file holds")
	}
	if _, err := mapRAM(path, 8192, 16384, false); err == nil {
		t.Error("accepted low memory above the size")
	}
}

// A RAM file truncated under the mapping (QEMU restarted, a file on a
// full tmpfs) makes reads fault with SIGBUS: an error, not a crash.
func TestTruncatedRAMFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := mapRAM(path, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.unmap()
	p := make([]byte, 16)
	if err := r.read(0x8000, p); err != nil {
		t.Fatalf("read before truncation: %v", err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	err = r.read(0x8000, p)
	if !errors.Is(err, ErrRAMFault) {
		t.Fatalf("read after truncation: %v, want ErrRAMFault", err)
	}
	// The goroutine's fault setting is restored.
	if debug.SetPanicOnFault(false) {
		t.Error("SetPanicOnFault left on")
	}
}
