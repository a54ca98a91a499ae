package paging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// physMem is guest physical memory as a byte slice, for hand-built tables.
type physMem struct {
	b     []byte
	reads int
}

func (m *physMem) ReadPhysical(pa introspect.Pa, p []byte) error {
	m.reads++
	if uint64(pa)+uint64(len(p)) > uint64(len(m.b)) || uint64(pa)+uint64(len(p)) < uint64(pa) {
		return fmt.Errorf("read %v: %w", pa, driver.ErrOutOfRange)
	}
	copy(p, m.b[pa:])
	return nil
}

func (m *physMem) put(pa uint64, v uint64) { binary.LittleEndian.PutUint64(m.b[pa:], v) }

// builder lays out page tables in physMem, allocating table frames upward
// from next.
type builder struct {
	m    *physMem
	root uint64
	next uint64
	mode Mode
}

func newBuilder(size int, mode Mode) *builder {
	b := &builder{m: &physMem{b: make([]byte, size)}, root: 0x1000, next: 0x2000, mode: mode}
	return b
}

func (b *builder) alloc() uint64 {
	pa := b.next
	b.next += 0x1000
	return pa
}

// mapPage maps va to pa with a page of size (4K, 2M or 1G).
func (b *builder) mapPage(va, pa uint64, size uint64, extra uint64) {
	table := b.root
	stop := Level(1)
	switch size {
	case Size2M:
		stop = 2
	case Size1G:
		stop = 3
	}
	for level := Level(b.mode); ; level-- {
		idx := (va >> (12 + 9*uint(level-1))) & 0x1ff
		epa := table + idx*8
		if level == stop {
			e := pa | PTEPresent | PTEWrite | extra
			if stop > 1 {
				e |= PTELarge
			}
			b.m.put(epa, e)
			return
		}
		e := binary.LittleEndian.Uint64(b.m.b[epa:])
		if e&PTEPresent == 0 {
			e = b.alloc() | PTEPresent | PTEWrite
			b.m.put(epa, e)
		}
		table = e & AddrMask
	}
}

func TestTranslate4K(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	va := uint64(0xffff_8880_1234_5000)
	b.mapPage(va, 0x80000, Size4K, 0)
	pa, err := Translate(b.m, introspect.Pa(b.root), introspect.Va(va+0x123), Level4)
	if err != nil {
		t.Fatal(err)
	}
	if pa != 0x80123 {
		t.Fatalf("pa = %v, want 0x80123", pa)
	}
}

func TestTranslateLargePagesMaskPAT(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	// 2 MiB page with the PAT bit (bit 12) set in the entry: it must not
	// leak into the frame address.
	b.mapPage(0x7f00_0020_0000, 0x4000_0000|1<<12, Size2M, 0)
	pa, err := Translate(b.m, introspect.Pa(b.root), 0x7f00_0021_2345, Level4)
	if err != nil {
		t.Fatal(err)
	}
	if want := introspect.Pa(0x4001_2345); pa != want {
		t.Fatalf("2M: pa = %v, want %v", pa, want)
	}
	b.mapPage(0x40_0000_0000, 0x1_c000_0000|1<<12, Size1G, 0)
	pa, err = Translate(b.m, introspect.Pa(b.root), 0x40_0123_4567, Level4)
	if err != nil {
		t.Fatal(err)
	}
	if want := introspect.Pa(0x1_c123_4567); pa != want {
		t.Fatalf("1G: pa = %v, want %v", pa, want)
	}
	w, _ := WalkVA(b.m, introspect.Pa(b.root), 0x40_0123_4567, Level4)
	if w.PageSize != Size1G || w.N != 2 {
		t.Fatalf("1G walk: size %d steps %d", w.PageSize, w.N)
	}
}

func TestTranslateFiveLevel(t *testing.T) {
	b := newBuilder(1<<20, Level5)
	va := uint64(0xff11_2233_4455_6000) // canonical with 57 bits, not with 48
	b.mapPage(va, 0x9000, Size4K, 0)
	pa, err := Translate(b.m, introspect.Pa(b.root), introspect.Va(va|0x7), Level5)
	if err != nil {
		t.Fatal(err)
	}
	if pa != 0x9007 {
		t.Fatalf("pa = %v", pa)
	}
	if _, err := Translate(b.m, introspect.Pa(b.root), introspect.Va(va), Level4); !errors.Is(err, ErrNonCanonical) {
		t.Fatalf("4-level translation of a 57-bit address: err = %v, want non-canonical", err)
	}
}

func TestTranslateNotPresent(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	b.mapPage(0x40_0000, 0x9000, Size4K, 0)
	// Clear the PTE: the walk must stop at level 1 and name the address.
	w, _ := WalkVA(b.m, introspect.Pa(b.root), 0x40_0000, Level4)
	b.m.put(uint64(w.Steps[3].EntryPA), 0x9000) // present bit clear
	_, err := Translate(b.m, introspect.Pa(b.root), 0x40_0010, Level4)
	va, ok := PageFault(err)
	if !ok || va != 0x40_0010 {
		t.Fatalf("PageFault(%v) = %v, %v", err, va, ok)
	}
	var te *TranslationError
	if !errors.As(err, &te) || te.Level != 1 || te.Root != introspect.Pa(b.root) {
		t.Fatalf("error %#v does not name level 1 and the root", err)
	}
	// An unmapped upper level fails at the PML4.
	_, err = Translate(b.m, introspect.Pa(b.root), 0x7000_0000_0000, Level4)
	if !errors.As(err, &te) || te.Level != 4 || !errors.Is(err, ErrNotPresent) {
		t.Fatalf("err = %v, want not present at PML4", err)
	}
}

func TestTranslatePCIDStripped(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	b.mapPage(0x1000_0000, 0x5000, Size4K, 0)
	// A CR3 with PCID 0x7 and the no-flush bit: root bits only are used.
	cr3 := b.root | 0x7 | 1<<63
	pa, err := Translate(b.m, introspect.Pa(cr3), 0x1000_0008, Level4)
	if err != nil || pa != 0x5008 {
		t.Fatalf("pa = %v, err = %v", pa, err)
	}
}

func TestTranslateTableOutsideMemory(t *testing.T) {
	b := newBuilder(1<<16, Level4)
	// A forged PML4 entry pointing far outside guest memory.
	b.m.put(b.root, 0x7_0000_0000|PTEPresent)
	_, err := Translate(b.m, introspect.Pa(b.root), 0x10, Level4)
	if !errors.Is(err, driver.ErrOutOfRange) {
		t.Fatalf("err = %v, want out of range", err)
	}
	if _, ok := PageFault(err); ok {
		t.Fatal("an unreadable table is not a page fault")
	}
}

func TestMemoryReadAcrossPages(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	// Two virtually adjacent pages mapped to non-adjacent frames.
	b.mapPage(0x10_0000, 0x8_0000, Size4K, 0)
	b.mapPage(0x10_1000, 0x6_0000, Size4K, 0)
	copy(b.m.b[0x8_0ffc:], "abcd")
	copy(b.m.b[0x6_0000:], "efgh\x00")
	m := NewMemory(b.m, Level4)
	root := introspect.Pa(b.root)
	buf := make([]byte, 8)
	if err := m.Read(root, 0x10_0ffc, buf); err != nil || string(buf) != "abcdefgh" {
		t.Fatalf("read %q, %v", buf, err)
	}
	s, err := m.ReadCString(root, 0x10_0ffc, 64)
	if err != nil || s != "abcdefgh" {
		t.Fatalf("cstring %q, %v", s, err)
	}
	s, err = m.ReadCString(root, 0x10_0ffc, 3)
	if !errors.Is(err, ErrTooLong) || s != "abc" {
		t.Fatalf("bounded cstring %q, %v", s, err)
	}
	if _, err := m.ReadUTF16(root, 0x10_0000, 1<<30, 1024); !errors.Is(err, ErrTooLong) {
		t.Fatalf("huge UTF-16 length accepted: %v", err)
	}
}

func TestCacheFlush(t *testing.T) {
	b := newBuilder(1<<20, Level4)
	b.mapPage(0x20_0000, 0x8_0000, Size4K, 0)
	m := NewMemory(b.m, Level4)
	root := introspect.Pa(b.root)
	if pa, _ := m.Translate(root, 0x20_0010); pa != 0x8_0010 {
		t.Fatalf("pa = %v", pa)
	}
	// The guest remaps the page; the cache still answers the old frame
	// until flushed, by design.
	b.mapPage(0x20_0000, 0x9_0000, Size4K, 0)
	if pa, _ := m.Translate(root, 0x20_0010); pa != 0x8_0010 {
		t.Fatalf("cached pa = %v", pa)
	}
	m.Cache.Flush()
	if pa, _ := m.Translate(root, 0x20_0010); pa != 0x9_0010 {
		t.Fatalf("pa after flush = %v", pa)
	}
}

func BenchmarkTranslate(b *testing.B) {
	bl := newBuilder(1<<20, Level4)
	bl.mapPage(0xffff_8880_0000_0000, 0x8_0000, Size4K, 0)
	root := introspect.Pa(bl.root)
	b.Run("uncached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := Translate(bl.m, root, 0xffff_8880_0000_0123, Level4); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		m := NewMemory(bl.m, Level4)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := m.Translate(root, 0xffff_8880_0000_0123); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzWalk walks arbitrary bytes as page tables: it must never panic and
// must read at most one entry per level.
func FuzzWalk(f *testing.F) {
	f.Add(make([]byte, 0x2000), uint64(0), uint64(0xffff_8000_0000_0000), false)
	b := newBuilder(0x8000, Level4)
	b.mapPage(0x1000, 0x3000, Size4K, 0)
	f.Add(b.m.b, b.root, uint64(0x1000), false)
	f.Fuzz(func(t *testing.T, mem []byte, root, va uint64, five bool) {
		m := &physMem{b: mem}
		mode := Level4
		if five {
			mode = Level5
		}
		w, err := WalkVA(m, introspect.Pa(root), introspect.Va(va), mode)
		if m.reads > int(mode) {
			t.Fatalf("%d reads for a %d-level walk", m.reads, mode)
		}
		if err == nil && w.PageSize == 0 {
			t.Fatal("successful walk without a page size")
		}
	})
}
