package vmlinux

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// testPayload stands in for a vmlinux: Decompress only checks the ELF
// magic. The same bytes are compressed in testdata/payload.elf.*.
func testPayload(t testing.TB) []byte {
	t.Helper()
	p := []byte("\x7fELF\x02\x01\x01synthetic vmlinux payload for decompression tests ")
	for i := 1; i <= 50; i++ {
		p = append(p, []byte(itoa(i)+" ")...)
	}
	return append(p, '\n')
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// withSize appends the uncompressed size as the kernel build does.
func withSize(c []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(c, uint32(n))
}

// makeBzImage wraps payload in a minimal bzImage: boot sector, setup
// sectors with a protocol 2.15 header, then the protected-mode code with
// the payload at payloadOffset.
func makeBzImage(payload []byte) []byte {
	const setupSects, payloadOffset = 3, 0x40
	img := make([]byte, (setupSects+1)*512+payloadOffset)
	img[offSetupSects] = setupSects
	binary.LittleEndian.PutUint32(img[offHeader:], hdrSMagic)
	binary.LittleEndian.PutUint16(img[offVersion:], 0x020f)
	binary.LittleEndian.PutUint16(img[offKernelVersion:], 0x100)
	copy(img[0x300:], "6.1.0-test (builder@example) #1 SMP\x00")
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], payloadOffset)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(img[offInitSize:], 0x1000000)
	img = append(img, payload...)
	return append(img, bytes.Repeat([]byte{0xcc}, 32)...) // trailing data (e.g. signatures)
}

func compressed(t *testing.T, c Compression, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch c {
	case CompressionNone:
		return p
	case CompressionGzip:
		w := gzip.NewWriter(&b)
		w.Write(p)
		w.Close()
		return withSize(b.Bytes(), len(p))
	case CompressionLZ4:
		w := lz4.NewWriter(&b)
		if err := w.Apply(lz4.LegacyOption(true)); err != nil {
			t.Fatal(err)
		}
		w.Write(p)
		w.Close()
		return withSize(b.Bytes(), len(p))
	case CompressionXZ:
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p)
		w.Close()
		return withSize(b.Bytes(), len(p))
	case CompressionBzip2, CompressionLZMA, CompressionZstd:
		// Fixtures made with bzip2(1), lzma(1) and zstd(1), the tools
		// the kernel build runs.
		ext := map[Compression]string{CompressionBzip2: "bz2", CompressionLZMA: "lzma", CompressionZstd: "zst"}[c]
		f, err := os.ReadFile(filepath.Join("testdata", "payload.elf."+ext))
		if err != nil {
			t.Fatal(err)
		}
		return withSize(f, len(p))
	}
	t.Fatalf("no compressor for %v", c)
	return nil
}

func TestExtractCompressions(t *testing.T) {
	payload := testPayload(t)
	for _, c := range []Compression{CompressionNone, CompressionGzip, CompressionLZ4, CompressionXZ, CompressionBzip2, CompressionLZMA, CompressionZstd} {
		t.Run(c.String(), func(t *testing.T) {
			img := makeBzImage(compressed(t, c, payload))
			h, err := ParseBootHeader(img)
			if err != nil {
				t.Fatal(err)
			}
			if h.SetupSects != 3 || h.Version != 0x020f || h.KernelVersion != "6.1.0-test (builder@example) #1 SMP" || h.InitSize != 0x1000000 {
				t.Errorf("header %+v", h)
			}
			elf, hdr, got, err := Extract(img)
			if err != nil {
				t.Fatal(err)
			}
			if got != c || hdr == nil {
				t.Errorf("compression %v, header %v; want %v", got, hdr, c)
			}
			if !bytes.Equal(elf, payload) {
				t.Errorf("payload differs: %q", elf[:min(len(elf), 40)])
			}
		})
	}
}

func TestExtractPlainELF(t *testing.T) {
	p := testPayload(t)
	elf, hdr, c, err := Extract(p)
	if err != nil || hdr != nil || c != CompressionNone || !bytes.Equal(elf, p) {
		t.Fatalf("Extract(ELF) = %d bytes, %v, %v, %v", len(elf), hdr, c, err)
	}
}

func TestExtractErrors(t *testing.T) {
	payload := testPayload(t)
	good := makeBzImage(compressed(t, CompressionGzip, payload))
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		img  []byte
	}{
		{"empty", nil},
		{"short", good[:0x100]},
		{"no-HdrS", mutate(func(b []byte) []byte { b[offHeader] = 'X'; return b })},
		{"old-protocol", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[offVersion:], 0x0206); return b })},
		{"payload-past-end", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[offPayloadLength:], 1<<30); return b })},
		{"payload-offset-overflow", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[offPayloadOffset:], 0xffffffff)
			binary.LittleEndian.PutUint32(b[offPayloadLength:], 0xffffffff)
			return b
		})},
		{"zero-length", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[offPayloadLength:], 0); return b })},
		{"unknown-magic", makeBzImage([]byte("not compressed at all"))},
		{"lzo-unsupported", makeBzImage([]byte{0x89, 'L', 'Z', 'O', 0, 0x0d, 0x0a, 0x1a, 0x0a})},
		{"corrupt-gzip", mutate(func(b []byte) []byte { b[len(b)-60] ^= 0xff; return b })},
		{"not-elf-inside", makeBzImage(func() []byte {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write([]byte("MZ not an elf"))
			w.Close()
			return b.Bytes()
		}())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, _, err := Extract(tc.img); err == nil {
				t.Fatal("no error")
			} else if tc.name != "corrupt-gzip" && !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
		})
	}
}

func TestDetectCompression(t *testing.T) {
	for magic, want := range map[string]Compression{
		"\x02\x21\x4c\x18": CompressionLZ4,
		"\x04\x22\x4d\x18": CompressionLZ4,
		"\x1f\x8b\x08":     CompressionGzip,
		"\xfd7zXZ\x00":     CompressionXZ,
		"BZh9":             CompressionBzip2,
		"\x28\xb5\x2f\xfd": CompressionZstd,
		"\x89LZO\x00":      CompressionLZO,
		"\x7fELF":          CompressionNone,
		"\x5d\x00\x00\x80\x00\xff\xff\xff\xff\xff\xff\xff\xff": CompressionLZMA,
		"":  CompressionUnknown,
		"Z": CompressionUnknown,
	} {
		if got := DetectCompression([]byte(magic)); got != want {
			t.Errorf("DetectCompression(% x) = %v, want %v", magic, got, want)
		}
	}
}

func TestLZ4Frames(t *testing.T) {
	// Two legacy blocks (the first exactly 8 MiB) and the modern frame.
	big := append(testPayload(t), bytes.Repeat([]byte("kernel text and data "), 500000)...)
	for _, legacy := range []bool{true, false} {
		var b bytes.Buffer
		w := lz4.NewWriter(&b)
		if err := w.Apply(lz4.LegacyOption(legacy)); err != nil {
			t.Fatal(err)
		}
		w.Write(big)
		w.Close()
		out, c, err := Decompress(withSize(b.Bytes(), len(big)))
		if err != nil || c != CompressionLZ4 || !bytes.Equal(out, big) {
			t.Fatalf("legacy=%v: %d bytes, %v, %v", legacy, len(out), c, err)
		}
	}
	// A legacy frame whose first block is short is corrupt.
	var b bytes.Buffer
	b.Write([]byte{0x02, 0x21, 0x4c, 0x18})
	for range 2 {
		blk := make([]byte, 64)
		n, _ := lz4.CompressBlock(testPayload(t), blk, nil)
		binary.Write(&b, binary.LittleEndian, uint32(n))
		b.Write(blk[:n])
	}
	if _, _, err := Decompress(withSize(b.Bytes(), 10)); !errors.Is(err, ErrFormat) {
		t.Errorf("short first block: %v", err)
	}
}
