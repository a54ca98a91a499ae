package windows

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// MaxKernelScan bounds how far back from the syscall entry point the kernel
// image header is searched. KiSystemCall64Shadow lies ~10 MiB into
// ntoskrnl on Windows 10/11.
const MaxKernelScan = 32 << 20

// Kernel is a located Windows kernel image.
type Kernel struct {
	Base     introspect.Va
	CodeView profile.CodeView
}

// FindKernel locates the kernel image from the vCPU's syscall entry point
// (MSR_LSTAR: KiSystemCall64, or KiSystemCall64Shadow on KVA-shadow
// kernels, both inside ntoskrnl): it scans back page by page, at most
// MaxKernelScan bytes, for an MZ/PE header whose debug directory holds an
// RSDS CodeView record naming an nt* PDB. Pages that are not mapped are
// skipped.
func FindKernel(mem *paging.Memory, regs *amd64.Registers) (Kernel, error) {
	if !IsKernelVA(introspect.Va(regs.LSTAR)) {
		return Kernel{}, fmt.Errorf("LSTAR %#x is not a kernel address: %w", regs.LSTAR, ErrNoKernel)
	}
	return FindKernelFrom(mem, Root(regs), introspect.Va(regs.LSTAR), MaxKernelScan)
}

// FindKernelFrom scans back from va, at most limit bytes, for the kernel image.
func FindKernelFrom(mem *paging.Memory, root introspect.Pa, va introspect.Va, limit uint64) (Kernel, error) {
	page := va.PageBase()
	var mz [2]byte
	for n := uint64(0); n < limit && IsKernelVA(page); n += introspect.PageSize {
		if err := mem.Read(root, page, mz[:]); err == nil && mz == [2]byte{'M', 'Z'} {
			cv, err := ReadCodeView(mem, root, page)
			if err == nil && strings.HasPrefix(strings.ToLower(cv.PDB), "nt") {
				return Kernel{Base: page, CodeView: cv}, nil
			}
		}
		page -= introspect.PageSize
	}
	return Kernel{}, fmt.Errorf("no nt* image within %d bytes below %v: %w", limit, va, ErrNoKernel)
}

// errPE is wrapped for images without a usable CodeView record.
var errPE = errors.New("no CodeView record")

// ReadCodeView parses the PE32+ headers of an image mapped at base and
// returns its RSDS CodeView debug record.
func ReadCodeView(mem *paging.Memory, root introspect.Pa, base introspect.Va) (profile.CodeView, error) {
	var cv profile.CodeView
	var dos [64]byte
	if err := mem.Read(root, base, dos[:]); err != nil {
		return cv, err
	}
	lfanew := binary.LittleEndian.Uint32(dos[0x3c:])
	if lfanew < 64 || lfanew > 0x1000-0x108 {
		return cv, fmt.Errorf("e_lfanew %#x: %w", lfanew, errPE)
	}
	// PE signature, COFF header (20 bytes), PE32+ optional header up to
	// the debug data directory (112 + 7*8 bytes).
	var nt [4 + 20 + 112 + 7*8]byte
	if err := mem.Read(root, base+introspect.Va(lfanew), nt[:]); err != nil {
		return cv, err
	}
	if !bytes.Equal(nt[:4], []byte("PE\x00\x00")) {
		return cv, fmt.Errorf("no PE signature: %w", errPE)
	}
	opt := nt[24:]
	if binary.LittleEndian.Uint16(opt) != 0x20b {
		return cv, fmt.Errorf("not PE32+: %w", errPE)
	}
	if binary.LittleEndian.Uint32(opt[108:]) <= 6 {
		return cv, fmt.Errorf("no debug directory: %w", errPE)
	}
	dirRVA := binary.LittleEndian.Uint32(opt[112+6*8:])
	dirSize := binary.LittleEndian.Uint32(opt[112+6*8+4:])
	const entrySize = 28
	if dirRVA == 0 || dirSize < entrySize || dirSize > 16*entrySize {
		return cv, fmt.Errorf("debug directory %#x+%#x: %w", dirRVA, dirSize, errPE)
	}
	dir := make([]byte, dirSize/entrySize*entrySize)
	if err := mem.Read(root, base+introspect.Va(dirRVA), dir); err != nil {
		return cv, err
	}
	for e := dir; len(e) >= entrySize; e = e[entrySize:] {
		if binary.LittleEndian.Uint32(e[12:]) != 2 { // IMAGE_DEBUG_TYPE_CODEVIEW
			continue
		}
		size := binary.LittleEndian.Uint32(e[16:])
		rva := binary.LittleEndian.Uint32(e[20:])
		if size < 24+2 || size > 24+256 {
			return cv, fmt.Errorf("CodeView record of %d bytes: %w", size, errPE)
		}
		rec := make([]byte, size)
		if err := mem.Read(root, base+introspect.Va(rva), rec); err != nil {
			return cv, err
		}
		if !bytes.Equal(rec[:4], []byte("RSDS")) {
			return cv, fmt.Errorf("CodeView signature %q: %w", rec[:4], errPE)
		}
		copy(cv.GUID[:], rec[4:20])
		cv.Age = binary.LittleEndian.Uint32(rec[20:])
		name := rec[24:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		cv.PDB = string(name)
		if cv.PDB == "" {
			return cv, fmt.Errorf("CodeView without PDB name: %w", errPE)
		}
		return cv, nil
	}
	return cv, fmt.Errorf("no CodeView entry: %w", errPE)
}
