package vmlinux

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// maxBanner bounds the kernel banner string.
const maxBanner = 1024

// Segment is a loadable segment of the vmlinux ELF.
type Segment struct {
	// VAddr is the link-time virtual address, PAddr the physical load
	// address before physical KASLR.
	VAddr, PAddr uint64
	FileSize     uint64
	MemSize      uint64
	Flags        elf.ProgFlag
}

// Image is a parsed kernel image.
type Image struct {
	// ELF is the vmlinux ELF, decompressed from the bzImage.
	ELF []byte
	// Boot is the bzImage setup header, nil for a plain ELF.
	Boot *BootHeader
	// Compression of the bzImage payload.
	Compression Compression
	// Banner is the string at linux_banner ("Linux version ..."),
	// without its trailing newline; BannerAddr is its link address.
	Banner     string
	BannerAddr uint64
	// Text is the link address of _text, the start of the kernel image;
	// KASLR slides every kernel address by the same amount.
	Text uint64
	// Segments are the ELF's loadable segments; the first one's PAddr is
	// where the kernel expects to be loaded physically.
	Segments []Segment
	// Kallsyms is the kernel's symbol table.
	Kallsyms *Kallsyms

	file *elf.File
}

// Open reads and parses a kernel image file (bzImage or vmlinux ELF).
func Open(path string) (*Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	im, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("kernel image %s: %w", path, err)
	}
	return im, nil
}

// Parse parses a kernel image held in memory.
func Parse(image []byte) (*Image, error) {
	raw, hdr, c, err := Extract(image)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("vmlinux ELF: %w", err)
	}
	im := &Image{ELF: raw, Boot: hdr, Compression: c, file: f}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			im.Segments = append(im.Segments, Segment{VAddr: p.Vaddr, PAddr: p.Paddr, FileSize: p.Filesz, MemSize: p.Memsz, Flags: p.Flags})
		}
	}
	ro := f.Section(".rodata")
	if ro == nil || ro.Type != elf.SHT_PROGBITS {
		return nil, fmt.Errorf("vmlinux has no .rodata: %w", ErrFormat)
	}
	data, err := im.sectionData(ro)
	if err != nil {
		return nil, err
	}
	im.Kallsyms, err = ParseKallsyms(data, ro.Addr)
	if err != nil {
		return nil, fmt.Errorf("kallsyms in .rodata: %w", err)
	}
	if a, ok := im.Kallsyms.Lookup("_text"); ok {
		im.Text = a
	} else if t := f.Section(".text"); t != nil {
		im.Text = t.Addr
	}
	a, ok := im.Kallsyms.Lookup("linux_banner")
	if !ok {
		return nil, fmt.Errorf("kallsyms has no linux_banner: %w", ErrFormat)
	}
	b, err := im.ReadAt(a, maxBanner)
	if err != nil {
		return nil, fmt.Errorf("linux_banner: %w", err)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if !bytes.HasPrefix(b, []byte("Linux version ")) {
		return nil, fmt.Errorf("linux_banner at %#x reads %q: %w", a, b[:min(len(b), 32)], ErrFormat)
	}
	im.Banner, im.BannerAddr = strings.TrimSpace(string(b)), a
	return im, nil
}

func (im *Image) sectionData(s *elf.Section) ([]byte, error) {
	end := s.Offset + s.Size
	if s.Type == elf.SHT_NOBITS || end < s.Offset || end > uint64(len(im.ELF)) {
		return nil, fmt.Errorf("section %s [%#x, %#x) is not in the file: %w", s.Name, s.Offset, end, ErrFormat)
	}
	return im.ELF[s.Offset:end], nil
}

// ReadAt returns up to n bytes of the image at link address va, as far as
// the section holding va has file contents.
func (im *Image) ReadAt(va uint64, n int) ([]byte, error) {
	for _, s := range im.file.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type == elf.SHT_NOBITS || va < s.Addr || va-s.Addr >= s.Size {
			continue
		}
		data, err := im.sectionData(s)
		if err != nil {
			return nil, err
		}
		off := va - s.Addr
		return data[off:min(uint64(len(data)), off+uint64(n))], nil
	}
	return nil, fmt.Errorf("address %#x is in no section with contents: %w", va, ErrFormat)
}

// Section returns the link address and size of a named ELF section.
func (im *Image) Section(name string) (addr, size uint64, ok bool) {
	s := im.file.Section(name)
	if s == nil {
		return 0, 0, false
	}
	return s.Addr, s.Size, true
}

// BTF loads the kernel's type information from the .BTF section.
func (im *Image) BTF() (*btf.Spec, error) {
	s := im.file.Section(".BTF")
	if s == nil {
		return nil, fmt.Errorf("vmlinux has no .BTF section (CONFIG_DEBUG_INFO_BTF=n?): %w", ErrFormat)
	}
	data, err := im.sectionData(s)
	if err != nil {
		return nil, err
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("vmlinux .BTF: %w", err)
	}
	return spec, nil
}
