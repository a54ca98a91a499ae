package paging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unicode/utf16"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// ErrTooLong is returned when a guest string exceeds the caller's bound.
var ErrTooLong = errors.New("guest string exceeds bound")

// MaxRead bounds a single virtual read, so that a forged length read from
// the guest cannot make the introspector allocate without limit.
const MaxRead = 1 << 20

// Memory reads guest virtual memory through the guest's page tables, with a
// translation cache. The zero value is not usable; use NewMemory.
type Memory struct {
	Phys  driver.PhysReader
	Mode  Mode
	Cache *Cache
}

// NewMemory returns a Memory over phys with a fresh cache.
func NewMemory(phys driver.PhysReader, mode Mode) *Memory {
	return &Memory{Phys: phys, Mode: mode, Cache: NewCache(0)}
}

// Translate returns the physical address of va under root, using the cache.
func (m *Memory) Translate(root introspect.Pa, va introspect.Va) (introspect.Pa, error) {
	if m.Cache != nil {
		if pa, ok := m.Cache.Lookup(root, va); ok {
			return pa + introspect.Pa(va.Offset()), nil
		}
	}
	pa, err := Translate(m.Phys, root, va, m.Mode)
	if err != nil {
		return 0, err
	}
	if m.Cache != nil {
		m.Cache.Insert(root, va, pa)
	}
	return pa, nil
}

// Read fills p from guest virtual memory at va under root. It translates
// each page separately, so a read may span pages that are not physically
// contiguous.
func (m *Memory) Read(root introspect.Pa, va introspect.Va, p []byte) error {
	if len(p) > MaxRead {
		return fmt.Errorf("read %d bytes at %v: %w", len(p), va, ErrTooLong)
	}
	for len(p) > 0 {
		pa, err := m.Translate(root, va)
		if err != nil {
			return err
		}
		n := introspect.PageSize - int(va.Offset())
		if n > len(p) {
			n = len(p)
		}
		if err := m.Phys.ReadPhysical(pa, p[:n]); err != nil {
			return fmt.Errorf("read %v (pa %v): %w", va, pa, err)
		}
		p = p[n:]
		va += introspect.Va(n)
	}
	return nil
}

// ReadU8 reads a byte.
func (m *Memory) ReadU8(root introspect.Pa, va introspect.Va) (uint8, error) {
	b := getScratch()
	defer putScratch(b)
	err := m.Read(root, va, b[:1])
	return b[0], err
}

// ReadU16 reads a little-endian 16-bit value.
func (m *Memory) ReadU16(root introspect.Pa, va introspect.Va) (uint16, error) {
	b := getScratch()
	defer putScratch(b)
	err := m.Read(root, va, b[:2])
	return binary.LittleEndian.Uint16(b[:2]), err
}

// ReadU32 reads a little-endian 32-bit value.
func (m *Memory) ReadU32(root introspect.Pa, va introspect.Va) (uint32, error) {
	b := getScratch()
	defer putScratch(b)
	err := m.Read(root, va, b[:4])
	return binary.LittleEndian.Uint32(b[:4]), err
}

// ReadU64 reads a little-endian 64-bit value.
func (m *Memory) ReadU64(root introspect.Pa, va introspect.Va) (uint64, error) {
	b := getScratch()
	defer putScratch(b)
	err := m.Read(root, va, b[:8])
	return binary.LittleEndian.Uint64(b[:]), err
}

// ReadVa reads a 64-bit pointer.
func (m *Memory) ReadVa(root introspect.Pa, va introspect.Va) (introspect.Va, error) {
	v, err := m.ReadU64(root, va)
	return introspect.Va(v), err
}

// ReadCString reads a NUL-terminated string of at most max bytes (without
// the NUL). A string that reaches max without a NUL is returned cut, with
// ErrTooLong. It reads page by page so that it never touches a page past
// the terminator.
func (m *Memory) ReadCString(root introspect.Pa, va introspect.Va, max int) (string, error) {
	if max > MaxRead {
		max = MaxRead
	}
	var out []byte
	var chunk [256]byte
	for len(out) < max {
		n := introspect.PageSize - int(va.Offset())
		if n > len(chunk) {
			n = len(chunk)
		}
		if n > max-len(out) {
			n = max - len(out)
		}
		if err := m.Read(root, va, chunk[:n]); err != nil {
			return string(out), err
		}
		for i := 0; i < n; i++ {
			if chunk[i] == 0 {
				return string(append(out, chunk[:i]...)), nil
			}
		}
		out = append(out, chunk[:n]...)
		va += introspect.Va(n)
	}
	return string(out), fmt.Errorf("C string at %v: %w", va, ErrTooLong)
}

// ReadUTF16 reads nbytes of UTF-16LE text (as a UNICODE_STRING's Length
// gives) and converts it to UTF-8. nbytes above max is refused with
// ErrTooLong before anything is read.
func (m *Memory) ReadUTF16(root introspect.Pa, va introspect.Va, nbytes, max int) (string, error) {
	if nbytes < 0 || nbytes > max || nbytes > MaxRead {
		return "", fmt.Errorf("UTF-16 string of %d bytes at %v: %w", nbytes, va, ErrTooLong)
	}
	b := make([]byte, nbytes&^1)
	if err := m.Read(root, va, b); err != nil {
		return "", err
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u)), nil
}

// scratch holds the small buffers of entry and integer reads. Passed to a
// driver through the PhysReader interface, a stack buffer would escape and
// cost an allocation per read; the pool makes the steady state allocation
// free.
var scratch = sync.Pool{New: func() any { return new([8]byte) }}

func getScratch() *[8]byte  { return scratch.Get().(*[8]byte) }
func putScratch(b *[8]byte) { scratch.Put(b) }
