// Package xzcap finds the largest dictionary an .xz file asks its decoder
// for, before any decoder allocates it: github.com/ulikunitz/xz takes a
// block's LZMA2 dictionary size as given (4 GiB for a 60-byte forged
// file), and its DictCap is a lower bound for xz, not a limit.
package xzcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// MaxDict is the dictionary limit for the files this project reads: xz
// -9 (the largest preset) uses 64 MiB; the kernel's xz_wrap.sh 32 MiB,
// ISF files compressed with the default preset 8 MiB.
const MaxDict = 64 << 20

// ErrFormat is returned (wrapped) for data that is not a well-formed xz
// file, whose index cannot be walked.
var ErrFormat = errors.New("malformed xz file")

var streamMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// Check returns an error if p is not a well-formed xz file (one or more
// streams) or one of its blocks needs a dictionary larger than max. It
// walks each stream from its footer and index to its blocks' headers; it
// reads no compressed data.
func Check(p []byte, max uint64) error {
	d, err := Dict(p)
	if err != nil {
		return err
	}
	if d > max {
		return fmt.Errorf("xz dictionary of %d bytes exceeds the limit of %d", d, max)
	}
	return nil
}

// Dict returns the largest LZMA2 dictionary size among p's blocks.
func Dict(p []byte) (uint64, error) {
	if len(p) == 0 {
		return 0, fmt.Errorf("empty: %w", ErrFormat)
	}
	var most uint64
	for len(p) > 0 {
		// Stream padding: zero bytes in multiples of four.
		for len(p) >= 4 && binary.LittleEndian.Uint32(p[len(p)-4:]) == 0 {
			p = p[:len(p)-4]
		}
		if len(p) < 24 {
			return 0, fmt.Errorf("%d bytes: too short: %w", len(p), ErrFormat)
		}
		foot := p[len(p)-12:]
		if foot[10] != 'Y' || foot[11] != 'Z' {
			return 0, fmt.Errorf("no stream footer: %w", ErrFormat)
		}
		bsize := (uint64(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
		if bsize > uint64(len(p)-24) {
			return 0, fmt.Errorf("index of %d bytes does not fit: %w", bsize, ErrFormat)
		}
		idxStart := uint64(len(p)-12) - bsize
		idx := p[idxStart : len(p)-12]
		if idx[0] != 0 {
			return 0, fmt.Errorf("no index indicator: %w", ErrFormat)
		}
		q := idx[1:]
		n, q, err := uvarint(q)
		if err != nil || n > uint64(len(q))/2 {
			return 0, fmt.Errorf("index record count: %w", ErrFormat)
		}
		sizes := make([]uint64, n)
		var total uint64
		for i := range sizes {
			var u uint64
			if u, q, err = uvarint(q); err != nil {
				return 0, err
			}
			if _, q, err = uvarint(q); err != nil { // uncompressed size
				return 0, err
			}
			sizes[i] = (u + 3) &^ 3
			total += sizes[i]
			if u == 0 || total > idxStart {
				return 0, fmt.Errorf("block sizes exceed the stream: %w", ErrFormat)
			}
		}
		if idxStart < total+12 {
			return 0, fmt.Errorf("blocks do not fit before the index: %w", ErrFormat)
		}
		start := idxStart - total - 12
		if !bytes.Equal(p[start:start+6], streamMagic) {
			return 0, fmt.Errorf("no stream header at %d: %w", start, ErrFormat)
		}
		off := start + 12
		for _, sz := range sizes {
			d, err := blockDict(p[off : off+sz])
			if err != nil {
				return 0, err
			}
			most = max(most, d)
			off += sz
		}
		p = p[:start]
	}
	return most, nil
}

// blockDict returns the LZMA2 dictionary size in the block header at the
// start of b.
func blockDict(b []byte) (uint64, error) {
	size := (int(b[0]) + 1) * 4
	if b[0] == 0 || size > len(b) || size < 8 {
		return 0, fmt.Errorf("block header size: %w", ErrFormat)
	}
	h := b[1 : size-4] // without the CRC32
	flags := h[0]
	nf := int(flags&3) + 1
	q := h[1:]
	var err error
	if flags&0x40 != 0 {
		if _, q, err = uvarint(q); err != nil {
			return 0, err
		}
	}
	if flags&0x80 != 0 {
		if _, q, err = uvarint(q); err != nil {
			return 0, err
		}
	}
	var dict uint64
	for range nf {
		var id, ps uint64
		if id, q, err = uvarint(q); err != nil {
			return 0, err
		}
		if ps, q, err = uvarint(q); err != nil || ps > uint64(len(q)) {
			return 0, fmt.Errorf("filter properties: %w", ErrFormat)
		}
		props := q[:ps]
		q = q[ps:]
		if id == 0x21 { // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return 0, fmt.Errorf("LZMA2 properties % x: %w", props, ErrFormat)
			}
			if props[0] == 40 {
				dict = 1<<32 - 1
			} else {
				dict = uint64(2|props[0]&1) << (props[0]/2 + 11)
			}
		}
	}
	return dict, nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n > 9 {
		return 0, nil, fmt.Errorf("multibyte integer: %w", ErrFormat)
	}
	return v, b[n:], nil
}

// ForgeDict returns a copy of the xz file p whose first block asks for
// the LZMA2 dictionary of properties byte props (37: 1.5 GiB), with the
// header CRC fixed, as a hostile file would: for tests of the callers.
func ForgeDict(p []byte, props byte) ([]byte, error) {
	p = bytes.Clone(p)
	if len(p) < 13 {
		return nil, ErrFormat
	}
	off := 12
	size := (int(p[off]) + 1) * 4
	if off+size > len(p) {
		return nil, ErrFormat
	}
	h := p[off : off+size]
	i := bytes.Index(h[2:], []byte{0x21, 0x01})
	if i < 0 {
		return nil, fmt.Errorf("no LZMA2 filter in the first block header: %w", ErrFormat)
	}
	h[2+i+2] = props
	binary.LittleEndian.PutUint32(h[size-4:], crc32.ChecksumIEEE(h[:size-4]))
	return p, nil
}
