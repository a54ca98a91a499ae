package vmlinux

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/vmi-exporter/vmi-exporter/internal/xzcap"
)

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// Kernel payloads whose headers ask for a 1.5 GiB dictionary are refused
// before the decoder allocates it (before: 1.5 GiB for 24 bytes of lzma
// or 60 of xz).
func TestDecompressionBombsRefused(t *testing.T) {
	var b bytes.Buffer
	w, _ := xz.NewWriter(&b)
	w.Write([]byte("\x7fELF tiny"))
	w.Close()
	forged, err := xzcap.ForgeDict(b.Bytes(), 37)
	if err != nil {
		t.Fatal(err)
	}
	forged = binary.LittleEndian.AppendUint32(forged, 10)
	// .lzma: properties 0x5d, dictionary 1.5 GiB, size unknown, then a
	// few bytes of stream.
	lz := []byte{0x5d, 0, 0, 0, 0x60, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for name, p := range map[string][]byte{"xz": forged, "lzma": lz} {
		var err error
		n := allocated(func() { _, _, err = Decompress(p) })
		if err == nil {
			t.Errorf("%s: forged payload accepted", name)
		}
		if n > 256<<20 {
			t.Errorf("%s: %d MiB allocated for %d bytes of input", name, n>>20, len(p))
		}
	}
}
