package linux

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// KASLR geometry of x86-64: the kernel image is mapped inside the 1 GiB
// window starting at __START_KERNEL_map and moved by a multiple of
// CONFIG_PHYSICAL_ALIGN.
const (
	startKernelMap = 0xffff_ffff_8000_0000
	kernelImageEnd = startKernelMap + 1<<30
	slideAlign     = 0x20_0000
	// ptiUserBit is PTI_USER_PGTABLE_BIT: under page-table isolation the
	// user copy of a PGD is the kernel one plus one page.
	ptiUserBit = 1 << 12
)

// rootCandidate is a translation root to try, with its origin for logs.
type rootCandidate struct {
	root introspect.Pa
	mode paging.Mode
	regs amd64.Registers
	from string
}

// locate picks the kernel translation root and KASLR slide.
func (o *OS) locate(m Memory, forced introspect.Pa) error {
	var roots []rootCandidate
	n := m.VCPUs()
	for i := 0; i < n; i++ {
		regs, err := m.Registers(introspect.VCPU(i))
		if err != nil {
			o.log.Debug("registers unreadable", "vcpu", i, "err", err)
			continue
		}
		if regs.CR0&amd64.CR0PG == 0 || !regs.LongMode() {
			continue
		}
		root := introspect.Pa(regs.TranslationRoot())
		mode := modeOf(&regs)
		from := fmt.Sprintf("vcpu%d", i)
		if forced != 0 {
			roots = append(roots, rootCandidate{forced, mode, regs, "option"})
			break
		}
		if regs.CPL() == 0 {
			roots = append(roots, rootCandidate{root, mode, regs, from})
		} else {
			// User mode under PTI runs on the user PGD, which does not map
			// the banner; the kernel PGD is the page below it.
			roots = append(roots, rootCandidate{root &^ ptiUserBit, mode, regs, from + "-pti"})
			if root&ptiUserBit != 0 {
				roots = append(roots, rootCandidate{root, mode, regs, from})
			}
		}
	}
	if len(roots) == 0 {
		return fmt.Errorf("no vCPU in 64-bit paging mode among %d: %w", n, ErrKernelNotFound)
	}
	bannerLink, err := o.prof.Symbol("linux_banner")
	if err != nil {
		return err
	}
	want := []byte(expectedBanner(o.prof.Name))
	var errs []error
	for _, rc := range roots {
		o.mem = paging.NewMemory(m, rc.mode)
		slide, err := o.findSlide(rc, bannerLink, want)
		if err != nil {
			errs = append(errs, fmt.Errorf("root %v (%s): %w", rc.root, rc.from, err))
			continue
		}
		o.slide, o.kroot, o.mode = slide, rc.root, rc.mode
		o.useInitMM()
		if o.banner, err = o.readBanner(o.mem, introspect.Va(bannerLink+slide)); err != nil {
			return fmt.Errorf("read banner: %w", err)
		}
		o.log.Debug("kernel found", "slide", fmt.Sprintf("%#x", slide), "root", o.kroot, "from", rc.from)
		return nil
	}
	return fmt.Errorf("banner %q: %w", want, errors.Join(append([]error{ErrKernelNotFound}, errs...)...))
}

// findSlide tries the slides suggested by the vCPU's registers first, then
// every aligned slide of the KASLR window, and returns the first one under
// which linux_banner reads as want.
func (o *OS) findSlide(rc rootCandidate, bannerLink uint64, want []byte) (uint64, error) {
	buf := make([]byte, len(want))
	try := func(slide uint64) bool {
		va := introspect.Va(bannerLink + slide)
		if err := o.mem.Read(rc.root, va, buf); err != nil {
			return false
		}
		return bytes.Equal(buf, want)
	}
	tried := map[uint64]bool{}
	for _, s := range o.slideHints(&rc.regs) {
		if s%slideAlign != 0 || tried[s] || bannerLink+s >= kernelImageEnd || bannerLink+s < startKernelMap {
			continue
		}
		tried[s] = true
		if try(s) {
			return s, nil
		}
	}
	if bannerLink < startKernelMap || bannerLink >= kernelImageEnd {
		return 0, fmt.Errorf("linux_banner link address %#x outside the kernel image window", bannerLink)
	}
	// Slides are non-negative: the kernel is linked at the lowest address
	// KASLR may choose.
	for s := uint64(0); bannerLink+s < kernelImageEnd; s += slideAlign {
		if tried[s] {
			continue
		}
		if try(s) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%d slides tried", len(tried)+int((kernelImageEnd-bannerLink)/slideAlign))
}

// slideHints derives likely slides from the syscall entry point (LSTAR is
// entry_SYSCALL_64) and from a kernel-mode RIP (inside [_text, _etext]).
func (o *OS) slideHints(regs *amd64.Registers) []uint64 {
	var hints []uint64
	if e, err := o.prof.Symbol("entry_SYSCALL_64"); err == nil && regs.LSTAR >= e {
		hints = append(hints, regs.LSTAR-e)
	}
	text, err1 := o.prof.Symbol("_text")
	etext, err2 := o.prof.Symbol("_etext")
	if err1 == nil && err2 == nil && etext > text && etext-text < 1<<30 && regs.CPL() == 0 && regs.RIP >= startKernelMap {
		// RIP - slide lies in [text, etext].
		lo := int64(regs.RIP) - int64(etext)
		hi := int64(regs.RIP) - int64(text)
		if lo < 0 {
			lo = 0
		}
		lo = (lo + slideAlign - 1) &^ (slideAlign - 1)
		for s := lo; s <= hi && len(hints) < 1+1024; s += slideAlign {
			hints = append(hints, uint64(s))
		}
	}
	return hints
}

// useInitMM switches the kernel root to init_mm's page table
// (init_top_pgt) when the profile names it and it maps the kernel: it is
// the same on every vCPU, which keeps cached translations shared.
func (o *OS) useInitMM() {
	va, err := o.Symbol("init_top_pgt")
	if err != nil {
		return
	}
	pa, err := o.mem.Translate(o.kroot, va)
	if err != nil || pa == o.kroot {
		return
	}
	// Check that the kernel is mapped under it before switching.
	b, err := o.Symbol("linux_banner")
	if err != nil {
		return
	}
	if _, err := paging.Translate(o.mem.Phys, pa, b, o.mode); err != nil {
		return
	}
	o.kroot = pa
}

// readBanner reads the banner string at va under the kernel root, cut at
// 512 bytes, without its trailing newline.
func (o *OS) readBanner(m *paging.Memory, va introspect.Va) (string, error) {
	b, err := m.ReadCString(o.kroot, va, 512)
	if err != nil && !errors.Is(err, ErrTooLong) {
		return "", err
	}
	return trimBanner(b), nil
}

func trimBanner(b string) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	return b
}

// Verify re-reads linux_banner at the slid address under the kernel root
// and reports ErrKernelChanged when it no longer holds the banner read at
// New: after a reboot, KASLR has moved the kernel (and its page tables), so
// every address taken from this OS is stale. Memory is read without the
// translation cache, so Verify may run concurrently with the other methods
// when the underlying physical reader is safe for concurrent use.
func (o *OS) Verify() error {
	va, err := o.Symbol("linux_banner")
	if err != nil {
		return err
	}
	got, err := o.readBanner(&paging.Memory{Phys: o.mem.Phys, Mode: o.mode}, va)
	if err != nil {
		return fmt.Errorf("re-read banner at %v: %w: %w", va, ErrKernelChanged, err)
	}
	if got != o.banner {
		return fmt.Errorf("banner at %v now %.60q: %w", va, got, ErrKernelChanged)
	}
	return nil
}
