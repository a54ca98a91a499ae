package vmlinux

import (
	"bytes"
	"testing"
)

// FuzzParseKallsyms feeds arbitrary bytes as .rodata: errors are fine,
// panics and runaway names are not.
func FuzzParseKallsyms(f *testing.F) {
	const base = 0xffffffff82000000
	for _, l := range []layout{layout61, layout61Seqs, layout64, layoutAbs} {
		f.Add(buildKallsyms(f, testSymbols(40), l, base, nil), uint8(0))
	}
	f.Add([]byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, shift uint8) {
		k, err := ParseKallsyms(data, base+uint64(shift%8))
		if err != nil {
			return
		}
		if len(k.Symbols) == 0 || len(k.Symbols) > MaxKallsyms {
			t.Fatalf("%d symbols", len(k.Symbols))
		}
		for _, s := range k.Symbols {
			if len(s.Name)+1 > MaxSymbolLen {
				t.Fatalf("name of %d bytes", len(s.Name))
			}
		}
	})
}

// FuzzExtract feeds arbitrary bytes as a kernel image.
func FuzzExtract(f *testing.F) {
	payload := testPayload(f)
	f.Add(makeBzImage(payload))
	f.Add(makeBzImage([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}))
	f.Add(makeBzImage([]byte{0x02, 0x21, 0x4c, 0x18, 0x10, 0, 0, 0, 0xf0, 1, 2, 3}))
	f.Add(makeBzImage([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4}))
	f.Add([]byte("\x7fELF"))
	f.Add(makeBzImage([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x88, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, image []byte) {
		elf, _, _, err := Extract(image)
		if err == nil && !bytes.HasPrefix(elf, []byte("\x7fELF")) {
			t.Fatal("result is not an ELF")
		}
		if len(elf) > MaxVmlinuxSize {
			t.Fatalf("%d bytes", len(elf))
		}
	})
}

// FuzzParseBootHeader feeds arbitrary bytes as a setup header.
func FuzzParseBootHeader(f *testing.F) {
	f.Add(makeBzImage([]byte("payload")))
	f.Add(make([]byte, setupHeaderEnd))
	f.Fuzz(func(t *testing.T, image []byte) {
		h, err := ParseBootHeader(image)
		if err != nil {
			return
		}
		if len(h.KernelVersion) > 256 {
			t.Fatalf("kernel version of %d bytes", len(h.KernelVersion))
		}
		if p, err := h.Payload(image); err == nil && len(p) > len(image) {
			t.Fatal("payload longer than image")
		}
	})
}

// FuzzParse feeds arbitrary bytes as a whole image, ELF parsing included.
func FuzzParse(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Add(makeBzImage(testPayload(f)))
	f.Fuzz(func(t *testing.T, image []byte) {
		_, _ = Parse(image)
	})
}
