// Package vmlinux reads a Linux kernel image (a bzImage such as Debian's
// vmlinuz, or a plain vmlinux ELF) and extracts what introspection needs
// without debug packages: the vmlinux ELF, its BTF type information, the
// kernel's own compressed kallsyms symbol table, and the banner.
package vmlinux

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"github.com/vmi-exporter/vmi-exporter/internal/xzcap"
)

// ErrFormat is wrapped by errors about malformed or unsupported images.
var ErrFormat = errors.New("malformed kernel image")

// MaxVmlinuxSize bounds the decompressed kernel, so that a forged image
// cannot make the reader allocate without limit. Distribution kernels
// decompress to 50-100 MiB.
const MaxVmlinuxSize = 1 << 30

// MaxZstdWindow bounds the window a zstd payload may ask for: the largest
// a kernel build uses (level 22, window log 27).
const MaxZstdWindow = 128 << 20

// Offsets of x86 boot protocol setup header fields from the start of the
// image (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeader        = 0x202
	offVersion       = 0x206
	offKernelVersion = 0x20e
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
	offInitSize      = 0x260
	setupHeaderEnd   = 0x268

	hdrSMagic = 0x53726448 // "HdrS"
	// protocolPayload is the first boot protocol version with
	// payload_offset and payload_length.
	protocolPayload  = 0x0208
	protocolInitSize = 0x020a
)

// BootHeader is the part of the x86 boot protocol setup header that locates
// the compressed kernel inside a bzImage.
type BootHeader struct {
	// SetupSects is the number of 512-byte setup sectors after the boot
	// sector; the protected-mode code starts at (SetupSects+1)*512.
	SetupSects uint8
	// Version is the boot protocol version, major in the high byte.
	Version uint16
	// KernelVersion is the human-readable version string the setup code
	// carries, e.g. "6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ...".
	KernelVersion string
	// PayloadOffset is the offset of the compressed kernel from the start
	// of the protected-mode code; PayloadLength is its length.
	PayloadOffset, PayloadLength uint32
	// InitSize is the linear memory the kernel needs to decompress
	// itself (protocol 2.10+), 0 when absent.
	InitSize uint32
}

// ParseBootHeader parses the setup header of a bzImage.
func ParseBootHeader(image []byte) (BootHeader, error) {
	var h BootHeader
	if len(image) < setupHeaderEnd {
		return h, fmt.Errorf("boot header: image of %d bytes is too short: %w", len(image), ErrFormat)
	}
	if m := binary.LittleEndian.Uint32(image[offHeader:]); m != hdrSMagic {
		return h, fmt.Errorf("boot header: magic %#x is not HdrS: %w", m, ErrFormat)
	}
	h.SetupSects = image[offSetupSects]
	if h.SetupSects == 0 {
		h.SetupSects = 4 // the boot protocol's rule for old images
	}
	h.Version = binary.LittleEndian.Uint16(image[offVersion:])
	if h.Version < protocolPayload {
		return h, fmt.Errorf("boot header: protocol %d.%02d has no payload fields (need 2.08+): %w",
			h.Version>>8, h.Version&0xff, ErrFormat)
	}
	h.PayloadOffset = binary.LittleEndian.Uint32(image[offPayloadOffset:])
	h.PayloadLength = binary.LittleEndian.Uint32(image[offPayloadLength:])
	if h.Version >= protocolInitSize {
		h.InitSize = binary.LittleEndian.Uint32(image[offInitSize:])
	}
	// kernel_version points, relative to the end of the boot sector, at a
	// NUL-terminated string inside the setup code.
	if kv := binary.LittleEndian.Uint16(image[offKernelVersion:]); kv != 0 {
		start := int(kv) + 0x200
		end := min(h.setupEnd(), len(image))
		if start < end {
			s := image[start:end]
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			h.KernelVersion = string(s[:min(len(s), 256)])
		}
	}
	return h, nil
}

func (h BootHeader) setupEnd() int { return (int(h.SetupSects) + 1) * 512 }

// Payload returns the compressed kernel inside image.
func (h BootHeader) Payload(image []byte) ([]byte, error) {
	start := uint64(h.setupEnd()) + uint64(h.PayloadOffset)
	end := start + uint64(h.PayloadLength)
	if h.PayloadLength == 0 || end > uint64(len(image)) {
		return nil, fmt.Errorf("payload [%#x, %#x) outside image of %#x bytes: %w", start, end, len(image), ErrFormat)
	}
	return image[start:end], nil
}

// Compression names the compression of a bzImage payload.
type Compression uint8

// Compressions the kernel build supports (CONFIG_KERNEL_*); None is a plain
// ELF.
const (
	CompressionUnknown Compression = iota
	CompressionNone
	CompressionGzip
	CompressionBzip2
	CompressionLZMA
	CompressionXZ
	CompressionLZO
	CompressionLZ4
	CompressionZstd
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionBzip2:
		return "bzip2"
	case CompressionLZMA:
		return "lzma"
	case CompressionXZ:
		return "xz"
	case CompressionLZO:
		return "lzo"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	}
	return "unknown"
}

// DetectCompression tells the compression of a payload by its magic.
func DetectCompression(p []byte) Compression {
	switch {
	case bytes.HasPrefix(p, []byte("\x7fELF")):
		return CompressionNone
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return CompressionGzip
	case bytes.HasPrefix(p, []byte("BZh")):
		return CompressionBzip2
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return CompressionXZ
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}), bytes.HasPrefix(p, []byte{0x04, 0x22, 0x4d, 0x18}):
		return CompressionLZ4 // legacy frame (the kernel's) or modern frame
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressionZstd
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O'}):
		return CompressionLZO
	case len(p) >= 13 && p[0] == 0x5d && p[1] == 0 && p[2] == 0:
		// lzma "alone" header: properties 0x5d, dictionary size.
		return CompressionLZMA
	}
	return CompressionUnknown
}

// Decompress returns the kernel ELF a payload holds. The kernel build
// appends the uncompressed size as 4 little-endian bytes to every format;
// when a decoder reports an error only after producing exactly that many
// bytes (it tried to read the size as another stream), the result stands.
func Decompress(p []byte) ([]byte, Compression, error) {
	c := DetectCompression(p)
	var want uint64
	if len(p) >= 4 {
		want = uint64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	}
	var r io.Reader
	switch c {
	case CompressionNone:
		return p, c, nil
	case CompressionGzip:
		z, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, c, fmt.Errorf("gzip payload: %w", err)
		}
		z.Multistream(false)
		r = z
	case CompressionBzip2:
		r = bzip2.NewReader(bytes.NewReader(p))
	case CompressionXZ:
		// The decoder allocates the dictionary a block header asks for
		// (4 GiB from a 60-byte forgery): check them all first.
		// The kernel build appends the 4-byte size after the stream.
		err := xzcap.Check(p, xzcap.MaxDict)
		if errors.Is(err, xzcap.ErrFormat) && len(p) > 4 {
			err = xzcap.Check(p[:len(p)-4], xzcap.MaxDict)
		}
		if err != nil {
			return nil, c, fmt.Errorf("xz payload: %w: %w", err, ErrFormat)
		}
		z, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, c, fmt.Errorf("xz payload: %w", err)
		}
		r = z
	case CompressionLZMA:
		// DictCap is a limit for .lzma: a 24-byte header asking for
		// 1.5 GiB is refused (lzma -9, the kernel's, uses 64 MiB).
		z, err := lzma.ReaderConfig{DictCap: xzcap.MaxDict}.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, c, fmt.Errorf("lzma payload: %w", err)
		}
		r = z
	case CompressionLZ4:
		if binary.LittleEndian.Uint32(p) == lz4LegacyMagic {
			out, err := unlz4Legacy(p)
			if err != nil {
				return nil, c, err
			}
			if !bytes.HasPrefix(out, []byte("\x7fELF")) {
				return nil, c, fmt.Errorf("lz4 payload does not decompress to an ELF: %w", ErrFormat)
			}
			return out, c, nil
		}
		r = lz4.NewReader(bytes.NewReader(p)) // the modern frame format
	case CompressionZstd:
		z, err := zstd.NewReader(bytes.NewReader(p),
			zstd.WithDecoderMaxMemory(MaxVmlinuxSize), zstd.WithDecoderConcurrency(1),
			// zstd -22 --ultra (the kernel's) has a 128 MiB window.
			zstd.WithDecoderMaxWindow(MaxZstdWindow))
		if err != nil {
			return nil, c, fmt.Errorf("zstd payload: %w", err)
		}
		defer z.Close()
		r = z
	default:
		return nil, c, fmt.Errorf("payload compression %v (magic % x) is not supported: %w", c, p[:min(len(p), 6)], ErrFormat)
	}
	var buf bytes.Buffer
	// Preallocate what the trailer promises, but not more than a
	// plausible ratio of the input: the trailer is unchecked input.
	if want > 0 && want <= MaxVmlinuxSize && want <= 16*uint64(len(p)) {
		buf.Grow(int(want))
	}
	n, err := io.Copy(&buf, io.LimitReader(r, MaxVmlinuxSize+1))
	if n > MaxVmlinuxSize {
		return nil, c, fmt.Errorf("%v payload decompresses to more than %d bytes: %w", c, MaxVmlinuxSize, ErrFormat)
	}
	if err != nil && uint64(n) != want {
		return nil, c, fmt.Errorf("%v payload after %d bytes: %w", c, n, err)
	}
	out := buf.Bytes()
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, c, fmt.Errorf("%v payload does not decompress to an ELF: %w", c, ErrFormat)
	}
	return out, c, nil
}

// Extract returns the vmlinux ELF inside a kernel image: the image itself
// when it is an ELF, else the decompressed payload of a bzImage.
func Extract(image []byte) ([]byte, *BootHeader, Compression, error) {
	if bytes.HasPrefix(image, []byte("\x7fELF")) {
		return image, nil, CompressionNone, nil
	}
	h, err := ParseBootHeader(image)
	if err != nil {
		return nil, nil, CompressionUnknown, err
	}
	p, err := h.Payload(image)
	if err != nil {
		return nil, &h, CompressionUnknown, err
	}
	elf, c, err := Decompress(p)
	if err != nil {
		return nil, &h, c, err
	}
	return elf, &h, c, nil
}
