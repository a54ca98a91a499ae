package qemu

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// fourGiB is where QEMU's x86 machines map the RAM that does not fit below
// the PCI hole.
const fourGiB = 1 << 32

// q35LowMemLimit and q35LowMemSplit: on q35, guests with at least 2.75 GiB
// of RAM get 2 GiB below 4 GiB and the rest above it (QEMU's
// pc_q35_init with gigabyte alignment); smaller guests have it all below.
const (
	q35LowMemLimit = 0xb000_0000
	q35LowMemSplit = 0x8000_0000
)

// ram is guest RAM mapped from QEMU's memory-backend-file. The file holds
// the RAM block linearly: guest physical [0, lowMem) at file offset 0 and
// [4 GiB, 4 GiB + size - lowMem) at file offset lowMem.
type ram struct {
	mem    []byte
	lowMem uint64
}

func mapRAM(path string, size, lowMem uint64, writable bool) (*ram, error) {
	flag, prot := os.O_RDONLY, syscall.PROT_READ
	if writable {
		flag, prot = os.O_RDWR, syscall.PROT_READ|syscall.PROT_WRITE
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("guest RAM file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("guest RAM file: %w", err)
	}
	if size == 0 {
		size = uint64(fi.Size())
	}
	if size == 0 || size > uint64(fi.Size()) || size > 1<<46 {
		return nil, fmt.Errorf("guest RAM file %s: size %d, file has %d bytes", path, size, fi.Size())
	}
	if lowMem == 0 {
		lowMem = size
		if size >= q35LowMemLimit {
			lowMem = q35LowMemSplit
		}
	}
	if lowMem > size || lowMem > fourGiB {
		return nil, fmt.Errorf("guest RAM file %s: low memory %#x does not fit size %#x", path, lowMem, size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, int(size), prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map guest RAM %s: %w", path, err)
	}
	return &ram{mem: mem, lowMem: lowMem}, nil
}

// slice returns the bytes of guest physical [pa, pa+n), which must lie in
// one RAM range.
func (r *ram) slice(pa introspect.Pa, n int) ([]byte, error) {
	a, size := uint64(pa), uint64(len(r.mem))
	var off uint64
	switch {
	case a < r.lowMem:
		off = a
		if a+uint64(n) > r.lowMem {
			return nil, fmt.Errorf("%v+%d crosses the end of low RAM: %w", pa, n, driver.ErrOutOfRange)
		}
	case a >= fourGiB && a-fourGiB < size-r.lowMem:
		off = a - fourGiB + r.lowMem
		if off+uint64(n) > size {
			return nil, fmt.Errorf("%v+%d crosses the end of RAM: %w", pa, n, driver.ErrOutOfRange)
		}
	default:
		return nil, fmt.Errorf("%v: %w", pa, driver.ErrOutOfRange)
	}
	return r.mem[off : off+uint64(n)], nil
}

// ErrRAMFault is returned when the mapped RAM file could not be read or
// written: the file was truncated (SIGBUS), or its pages are gone. The
// session should end; the guest itself may be fine.
var ErrRAMFault = errors.New("fault accessing the guest RAM file")

// read copies guest physical [pa, pa+len(p)) into p. A fault on the
// mapping (a truncated RAM file gives SIGBUS, which would kill the
// process) is returned as ErrRAMFault.
func (r *ram) read(pa introspect.Pa, p []byte) error {
	b, err := r.slice(pa, len(p))
	if err != nil {
		return err
	}
	return copyFaultSafe(p, b, pa)
}

// write copies p to guest physical pa, as read does.
func (r *ram) write(pa introspect.Pa, p []byte) error {
	b, err := r.slice(pa, len(p))
	if err != nil {
		return err
	}
	return copyFaultSafe(b, p, pa)
}

func copyFaultSafe(dst, src []byte, pa introspect.Pa) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			var addr interface{ Addr() uintptr }
			if e, ok := r.(error); ok && errors.As(e, &addr) {
				err = fmt.Errorf("%v+%d: %w (%v)", pa, len(dst), ErrRAMFault, e)
				return
			}
			panic(r)
		}
	}()
	copy(dst, src)
	return nil
}

func (r *ram) unmap() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := syscall.Munmap(r.mem)
	r.mem = nil
	return err
}
