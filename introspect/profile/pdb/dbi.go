package pdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// DBI is what the converter needs from the DBI stream (stream 3) header.
type DBI struct {
	Age     uint32
	Machine uint16 // IMAGE_FILE_MACHINE_*, 0x8664 for x64
	// SymRecordStream holds the global and public symbol records.
	SymRecordStream int
	// SectionHeaderStream holds the image's section headers, -1 if absent.
	SectionHeaderStream int
	// OrigSectionHeaderStream and OmapFromSrcStream are set for images
	// rearranged after linking (OMAP); -1 if absent.
	OrigSectionHeaderStream int
	OmapFromSrcStream       int
}

const dbiHeaderSize = 64

// DBI reads the DBI stream header and its optional debug header.
func (f *File) DBI() (DBI, error) {
	s, err := f.Stream(streamDBI)
	if err != nil {
		return DBI{}, fmt.Errorf("DBI stream: %w", err)
	}
	if len(s) < dbiHeaderSize {
		return DBI{}, errf("DBI stream of %d bytes", len(s))
	}
	le := binary.LittleEndian
	d := DBI{
		Age:                     le.Uint32(s[8:]),
		SymRecordStream:         int(le.Uint16(s[20:])),
		Machine:                 le.Uint16(s[58:]),
		SectionHeaderStream:     -1,
		OrigSectionHeaderStream: -1,
		OmapFromSrcStream:       -1,
	}
	// Substreams before the optional debug header, in file order:
	// module info, section contributions, section map, file info, type
	// server map, EC; the MFC index at 44 is not a size.
	off := uint64(dbiHeaderSize)
	for _, at := range []int{24, 28, 32, 36, 40, 52} {
		n := int32(le.Uint32(s[at:]))
		if n < 0 {
			return DBI{}, errf("DBI substream size %d", n)
		}
		off += uint64(n)
	}
	dbgSize := int32(le.Uint32(s[48:]))
	if dbgSize < 0 || off+uint64(dbgSize) > uint64(len(s)) {
		return DBI{}, errf("DBI debug header of %d bytes at %d in a stream of %d", dbgSize, off, len(s))
	}
	dbg := s[off : off+uint64(dbgSize)]
	stream := func(i int) int {
		if 2*i+2 > len(dbg) {
			return -1
		}
		v := le.Uint16(dbg[2*i:])
		if v == 0xffff {
			return -1
		}
		return int(v)
	}
	d.OmapFromSrcStream = stream(4)
	d.SectionHeaderStream = stream(5)
	d.OrigSectionHeaderStream = stream(10)
	return d, nil
}

// Section is an image section header as the PDB keeps it.
type Section struct {
	Name           string
	VirtualSize    uint32
	VirtualAddress uint32 // RVA
}

const sectionHeaderSize = 40

func (f *File) sections(stream int) ([]Section, error) {
	s, err := f.Stream(stream)
	if err != nil {
		return nil, fmt.Errorf("section headers: %w", err)
	}
	if len(s)%sectionHeaderSize != 0 {
		return nil, errf("section header stream of %d bytes", len(s))
	}
	le := binary.LittleEndian
	out := make([]Section, 0, len(s)/sectionHeaderSize)
	for h := s; len(h) >= sectionHeaderSize; h = h[sectionHeaderSize:] {
		out = append(out, Section{
			Name:           strings.TrimRight(string(h[:8]), "\x00"),
			VirtualSize:    le.Uint32(h[8:]),
			VirtualAddress: le.Uint32(h[12:]),
		})
	}
	return out, nil
}

// Sections returns the image's section headers, or nil when the PDB has
// none (symbols then cannot be given as RVAs).
func (f *File) Sections(d DBI) ([]Section, error) {
	if d.SectionHeaderStream < 0 {
		return nil, nil
	}
	return f.sections(d.SectionHeaderStream)
}

// omap translates RVAs of the original image into the final one.
type omap struct{ from, to []uint32 }

func (f *File) omap(stream int) (*omap, error) {
	s, err := f.Stream(stream)
	if err != nil {
		return nil, fmt.Errorf("OMAP: %w", err)
	}
	le := binary.LittleEndian
	m := &omap{from: make([]uint32, 0, len(s)/8), to: make([]uint32, 0, len(s)/8)}
	for ; len(s) >= 8; s = s[8:] {
		from := le.Uint32(s)
		if n := len(m.from); n > 0 && from < m.from[n-1] {
			return nil, errf("OMAP not sorted")
		}
		m.from = append(m.from, from)
		m.to = append(m.to, le.Uint32(s[4:]))
	}
	return m, nil
}

func (m *omap) lookup(rva uint32) uint32 {
	// Last entry with from <= rva.
	lo, hi := 0, len(m.from)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if m.from[mid] <= rva {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 || m.to[lo-1] == 0 {
		return 0
	}
	return m.to[lo-1] + (rva - m.from[lo-1])
}

// Symbol record kinds.
const (
	sPub32   = 0x110e
	sLData32 = 0x110c
	sGData32 = 0x110d
)

// Public is a symbol from the symbol record stream.
type Public struct {
	Name    string
	Segment uint16 // 1-based section number
	Offset  uint32
	// Data is set for S_GDATA32/S_LDATA32 records (globals with a type);
	// S_PUB32 records have it clear.
	Data bool
}

// Publics returns the public (S_PUB32) and global data (S_GDATA32,
// S_LDATA32) symbols of the symbol record stream, in stream order.
func (f *File) Publics(d DBI) ([]Public, error) {
	s, err := f.Stream(d.SymRecordStream)
	if err != nil {
		return nil, fmt.Errorf("symbol records: %w", err)
	}
	le := binary.LittleEndian
	var out []Public
	for off := 0; off+4 <= len(s); {
		n := int(le.Uint16(s[off:]))
		if n < 2 || off+2+n > len(s) {
			return nil, errf("symbol record of %d bytes at %d in a stream of %d", n, off, len(s))
		}
		kind, rec := le.Uint16(s[off+2:]), s[off+4:off+2+n]
		off += 2 + n
		var p Public
		var name []byte
		switch kind {
		case sPub32:
			if len(rec) < 10 {
				return nil, errf("S_PUB32 of %d bytes", len(rec))
			}
			p.Offset, p.Segment, name = le.Uint32(rec[4:]), le.Uint16(rec[8:]), rec[10:]
		case sGData32, sLData32:
			if len(rec) < 10 {
				return nil, errf("S_GDATA32 of %d bytes", len(rec))
			}
			p.Offset, p.Segment, name, p.Data = le.Uint32(rec[4:]), le.Uint16(rec[8:]), rec[10:], true
		default:
			continue
		}
		z := bytes.IndexByte(name, 0)
		if z < 0 {
			return nil, errf("unterminated symbol name at %d", off)
		}
		p.Name = string(name[:z])
		out = append(out, p)
	}
	return out, nil
}
