package pdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// TypeIndex is a CodeView type index. Indices below 0x1000 name builtin
// ("simple") types; the rest index the TPI stream's records.
type TypeIndex uint32

// Leaf kinds of the type records and field list members the converter
// reads (cvinfo.h LEAF_ENUM_e).
const (
	lfModifier    = 0x1001
	lfPointer     = 0x1002
	lfProcedure   = 0x1008
	lfMFunction   = 0x1009
	lfFieldList   = 0x1203
	lfBitfield    = 0x1205
	lfBClass      = 0x1400
	lfVBClass     = 0x1401
	lfIVBClass    = 0x1402
	lfIndex       = 0x1404
	lfVFuncTab    = 0x1409
	lfFriendCls   = 0x140b
	lfVFuncOff    = 0x140c
	lfEnumerate   = 0x1502
	lfArray       = 0x1503
	lfClass       = 0x1504
	lfStructure   = 0x1505
	lfUnion       = 0x1506
	lfEnum        = 0x1507
	lfFriendFcn   = 0x150c
	lfMember      = 0x150d
	lfSTMember    = 0x150e
	lfMethod      = 0x150f
	lfNestType    = 0x1510
	lfOneMethod   = 0x1511
	lfNestTypeEx  = 0x1512
	lfInterface   = 0x1519
	lfBInterface  = 0x151a
	lfClass2      = 0x1608
	lfStructure2  = 0x1609
	lfUnion2      = 0x160a
	lfInterface2  = 0x160b
	lfNumeric     = 0x8000 // values below are the value itself
	lfChar        = 0x8000
	lfShort       = 0x8001
	lfUShort      = 0x8002
	lfLong        = 0x8003
	lfULong       = 0x8004
	lfQuadWord    = 0x8009
	lfUQuadWord   = 0x800a
	propFwdRef    = 0x80
	propUniqueNme = 0x200
)

// Types is the TPI stream (stream 2): the type records of a PDB.
type Types struct {
	// Begin is the index of the first record.
	Begin TypeIndex
	data  []byte
	off   []uint32 // offset of each record's leaf kind in data
}

const tpiHeaderSize = 56

// Types reads the TPI stream and indexes its records.
func (f *File) Types() (*Types, error) {
	s, err := f.Stream(streamTPI)
	if err != nil {
		return nil, fmt.Errorf("TPI stream: %w", err)
	}
	return parseTypes(s)
}

func parseTypes(s []byte) (*Types, error) {
	if len(s) < tpiHeaderSize {
		return nil, errf("TPI stream of %d bytes", len(s))
	}
	le := binary.LittleEndian
	hdrSize, begin, end, recBytes := le.Uint32(s[4:]), le.Uint32(s[8:]), le.Uint32(s[12:]), le.Uint32(s[16:])
	if hdrSize < tpiHeaderSize || uint64(hdrSize)+uint64(recBytes) > uint64(len(s)) {
		return nil, errf("TPI header of %d bytes with %d record bytes in a stream of %d", hdrSize, recBytes, len(s))
	}
	if begin < 0x1000 || end < begin || end-begin > MaxTypes {
		return nil, errf("TPI type indices %#x..%#x", begin, end)
	}
	data := s[hdrSize : hdrSize+recBytes]
	t := &Types{Begin: TypeIndex(begin), data: data, off: make([]uint32, 0, min(end-begin, recBytes/4))}
	for off := 0; off < len(data); {
		if off+4 > len(data) {
			return nil, errf("truncated type record at %d", off)
		}
		n := int(le.Uint16(data[off:]))
		if n < 2 || off+2+n > len(data) {
			return nil, errf("type record of %d bytes at %d in %d", n, off, len(data))
		}
		if uint32(len(t.off)) >= end-begin {
			return nil, errf("more type records than the %d the header declares", end-begin)
		}
		t.off = append(t.off, uint32(off+2))
		off += 2 + n
	}
	return t, nil
}

// Len returns the number of type records.
func (t *Types) Len() int { return len(t.off) }

// Record returns the leaf kind and the bytes after it of record ti.
func (t *Types) Record(ti TypeIndex) (kind uint16, body []byte, err error) {
	if ti < t.Begin || uint64(ti-t.Begin) >= uint64(len(t.off)) {
		return 0, nil, errf("type index %#x outside %#x..%#x", uint32(ti), uint32(t.Begin), uint64(t.Begin)+uint64(len(t.off)))
	}
	i := ti - t.Begin
	off := t.off[i]
	n := uint32(binary.LittleEndian.Uint16(t.data[off-2:]))
	rec := t.data[off : off+n]
	return binary.LittleEndian.Uint16(rec), rec[2:], nil
}

// cursor decodes little-endian fields; the first short read sets err and
// every later read returns zero, so decoders check err once at the end.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) need(n int, what string) bool {
	if c.err != nil {
		return false
	}
	if len(c.b) < n {
		c.err = errf("truncated %s", what)
		c.b = nil
		return false
	}
	return true
}

func (c *cursor) u8() uint8 {
	if !c.need(1, "byte") {
		return 0
	}
	v := c.b[0]
	c.b = c.b[1:]
	return v
}

func (c *cursor) u16() uint16 {
	if !c.need(2, "16-bit field") {
		return 0
	}
	v := binary.LittleEndian.Uint16(c.b)
	c.b = c.b[2:]
	return v
}

func (c *cursor) u32() uint32 {
	if !c.need(4, "32-bit field") {
		return 0
	}
	v := binary.LittleEndian.Uint32(c.b)
	c.b = c.b[4:]
	return v
}

func (c *cursor) u64() uint64 {
	if !c.need(8, "64-bit field") {
		return 0
	}
	v := binary.LittleEndian.Uint64(c.b)
	c.b = c.b[8:]
	return v
}

// numeric reads a numeric leaf, returning it as a signed value; neg
// reports a negative signed leaf.
func (c *cursor) numeric() (v int64, neg bool) {
	k := c.u16()
	if k < lfNumeric {
		return int64(k), false
	}
	switch k {
	case lfChar:
		v = int64(int8(c.u8()))
	case lfShort:
		v = int64(int16(c.u16()))
	case lfUShort:
		return int64(c.u16()), false
	case lfLong:
		v = int64(int32(c.u32()))
	case lfULong:
		return int64(c.u32()), false
	case lfQuadWord:
		v = int64(c.u64())
	case lfUQuadWord:
		// Reinterpreted: ISF enum constants are signed 64-bit.
		return int64(c.u64()), false
	default:
		if c.err == nil {
			c.err = errf("numeric leaf %#x", k)
		}
		return 0, false
	}
	return v, v < 0
}

// unsigned reads a numeric leaf that must not be negative (a size or an
// offset).
func (c *cursor) unsigned() uint64 {
	v, neg := c.numeric()
	if neg && c.err == nil {
		c.err = errf("negative size or offset %d", v)
	}
	return uint64(v)
}

func (c *cursor) cstr() string {
	if c.err != nil {
		return ""
	}
	z := bytes.IndexByte(c.b, 0)
	if z < 0 {
		c.err = errf("unterminated name")
		c.b = nil
		return ""
	}
	s := string(c.b[:z])
	c.b = c.b[z+1:]
	return s
}

// udt is a decoded struct, class, interface, union or enum record.
type udt struct {
	kind   uint16
	props  uint32
	fields TypeIndex
	under  TypeIndex // underlying type of an enum
	size   uint64
	name   string
	unique string
}

func (u *udt) fwd() bool { return u.props&propFwdRef != 0 }

// isUDT reports whether kind is a struct-like, union or enum record.
func isUDT(kind uint16) bool {
	switch kind {
	case lfClass, lfStructure, lfInterface, lfUnion, lfEnum, lfClass2, lfStructure2, lfUnion2, lfInterface2:
		return true
	}
	return false
}

// udtClass groups record kinds whose names share a namespace for forward
// reference resolution.
func udtClass(kind uint16) byte {
	switch kind {
	case lfUnion, lfUnion2:
		return 'u'
	case lfEnum:
		return 'e'
	}
	return 's'
}

func parseUDT(kind uint16, body []byte) (udt, error) {
	c := &cursor{b: body}
	u := udt{kind: kind}
	switch kind {
	case lfClass, lfStructure, lfInterface:
		c.u16() // member count
		u.props = uint32(c.u16())
		u.fields = TypeIndex(c.u32())
		c.u32() // derived
		c.u32() // vshape
		u.size = c.unsigned()
	case lfUnion:
		c.u16()
		u.props = uint32(c.u16())
		u.fields = TypeIndex(c.u32())
		u.size = c.unsigned()
	case lfEnum:
		c.u16()
		u.props = uint32(c.u16())
		u.under = TypeIndex(c.u32())
		u.fields = TypeIndex(c.u32())
	case lfClass2, lfStructure2, lfInterface2:
		// Newer MSVC: 32-bit properties, then count and size as numerics.
		u.props = c.u32()
		u.fields = TypeIndex(c.u32())
		c.u32()
		c.u32()
		c.unsigned()
		u.size = c.unsigned()
	case lfUnion2:
		u.props = c.u32()
		u.fields = TypeIndex(c.u32())
		c.unsigned()
		u.size = c.unsigned()
	default:
		return udt{}, errf("leaf %#x is not a user-defined type", kind)
	}
	u.name = c.cstr()
	if u.props&propUniqueNme != 0 && c.err == nil && len(c.b) > 0 {
		u.unique = c.cstr()
	}
	if c.err != nil {
		return udt{}, fmt.Errorf("type record %#x: %w", kind, c.err)
	}
	return u, nil
}

// member is a decoded field list entry the converter uses.
type member struct {
	kind   uint16
	typ    TypeIndex
	offset uint64
	value  int64
	name   string
}

// maxIndexHops bounds LF_INDEX continuations of one field list.
const maxIndexHops = 1 << 12

// members calls fn for every LF_MEMBER, LF_BCLASS/LF_BINTERFACE and
// LF_ENUMERATE of a field list, following LF_INDEX continuations. Other
// members are decoded only to skip them. visit, if not nil, is called for
// every entry and continuation, so a caller can bound the total work of
// many records sharing one field list.
func (t *Types) members(list TypeIndex, visit func() error, fn func(m member) error) error {
	n := 0
	for hops := 0; ; hops++ {
		if hops > maxIndexHops {
			return errf("field list %#x: more than %d continuations", uint32(list), maxIndexHops)
		}
		if visit != nil {
			if err := visit(); err != nil {
				return err
			}
		}
		kind, body, err := t.Record(list)
		if err != nil {
			return fmt.Errorf("field list: %w", err)
		}
		if kind != lfFieldList {
			return errf("type %#x is leaf %#x, not a field list", uint32(list), kind)
		}
		next := TypeIndex(0)
		c := &cursor{b: body}
		for len(c.b) > 0 && c.err == nil {
			// Members are padded to 4 bytes with LF_PAD0..15 (0xf0+n),
			// n giving the bytes to skip.
			if c.b[0] >= 0xf0 {
				skip := max(int(c.b[0]&0x0f), 1)
				if skip > len(c.b) {
					break
				}
				c.b = c.b[skip:]
				continue
			}
			if n++; n > MaxFields {
				return errf("field list %#x: more than %d members", uint32(list), MaxFields)
			}
			if visit != nil {
				if err := visit(); err != nil {
					return err
				}
			}
			m := member{kind: c.u16()}
			report := false
			switch m.kind {
			case lfMember:
				c.u16()
				m.typ = TypeIndex(c.u32())
				m.offset = c.unsigned()
				m.name = c.cstr()
				report = true
			case lfBClass, lfBInterface:
				c.u16()
				m.typ = TypeIndex(c.u32())
				m.offset = c.unsigned()
				report = true
			case lfEnumerate:
				c.u16()
				m.value, _ = c.numeric()
				m.name = c.cstr()
				report = true
			case lfVBClass, lfIVBClass:
				c.u16()
				c.u32()
				c.u32()
				c.numeric()
				c.numeric()
			case lfIndex:
				c.u16()
				next = TypeIndex(c.u32())
			case lfVFuncTab, lfFriendCls:
				c.u16()
				c.u32()
			case lfVFuncOff:
				c.u16()
				c.u32()
				c.u32()
			case lfSTMember, lfNestType, lfNestTypeEx, lfFriendFcn:
				c.u16()
				c.u32()
				c.cstr()
			case lfMethod:
				c.u16()
				c.u32()
				c.cstr()
			case lfOneMethod:
				attr := c.u16()
				c.u32()
				if mp := (attr >> 2) & 7; mp == 4 || mp == 6 { // introducing virtual
					c.u32()
				}
				c.cstr()
			default:
				return errf("field list %#x: member leaf %#x", uint32(list), m.kind)
			}
			if c.err != nil {
				return fmt.Errorf("field list %#x: %w", uint32(list), c.err)
			}
			if report {
				if err := fn(m); err != nil {
					return err
				}
			}
		}
		if next == 0 {
			return nil
		}
		list = next
	}
}
