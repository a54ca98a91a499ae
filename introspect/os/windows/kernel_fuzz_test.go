package windows_test

import (
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/windows"
)

// FuzzCodeView: forged PE headers in guest memory (the DOS header,
// e_lfanew, the optional header's debug directory and the RSDS record a
// guest can place anywhere) parse or error; the kernel search over forged
// pages (the KASLR scan back from LSTAR) ends within its limit.
func FuzzCodeView(fz *testing.F) {
	f := getForge(fz)
	hdr := make([]byte, introspect.PageSize)
	if err := f.s.g.Kernel.Read(f.s.g.Base, hdr); err != nil {
		fz.Fatal(err)
	}
	fz.Add(hdr)
	fz.Add([]byte("MZ"))
	mz := make([]byte, 0x200)
	copy(mz, "MZ")
	mz[0x3c] = 0x40
	copy(mz[0x40:], "PE\x00\x00")
	fz.Add(mz)
	fz.Fuzz(func(t *testing.T, data []byte) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		mem := f.s.os.Memory()
		if cv, err := windows.ReadCodeView(mem, f.root(), f.at); err == nil && len(cv.PDB) > 4096 {
			t.Fatalf("PDB name of %d bytes", len(cv.PDB))
		}
		windows.FindKernelFrom(mem, f.root(), f.at+forgeSize-1, forgeSize)
	})
}
