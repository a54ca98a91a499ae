package pdb

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ISF document shapes, as Volatility 3's pdbconv writes them and
// profile.ReadISF reads them.
type (
	isfDoc struct {
		BaseTypes map[string]isfBase     `json:"base_types"`
		Enums     map[string]isfEnum     `json:"enums"`
		Metadata  isfMetadata            `json:"metadata"`
		Symbols   map[string]isfSymbol   `json:"symbols"`
		UserTypes map[string]isfUserType `json:"user_types"`
	}
	isfBase struct {
		Endian string `json:"endian"`
		Kind   string `json:"kind"`
		Signed bool   `json:"signed"`
		Size   uint64 `json:"size"`
	}
	isfEnum struct {
		Base      string           `json:"base"`
		Constants map[string]int64 `json:"constants"`
		Size      uint64           `json:"size"`
	}
	isfSymbol struct {
		Address     uint64 `json:"address"`
		LinkageName string `json:"linkage_name,omitempty"`
	}
	isfUserType struct {
		Fields map[string]isfField `json:"fields"`
		Kind   string              `json:"kind"`
		Size   uint64              `json:"size"`
	}
	isfField struct {
		Offset uint64   `json:"offset"`
		Type   *isfType `json:"type"`
	}
	isfType struct {
		Base        string   `json:"base,omitempty"`
		BitLength   *uint8   `json:"bit_length,omitempty"`
		BitPosition *uint8   `json:"bit_position,omitempty"`
		Count       *uint64  `json:"count,omitempty"`
		Kind        string   `json:"kind"`
		Name        string   `json:"name,omitempty"`
		Subtype     *isfType `json:"subtype,omitempty"`
		Type        *isfType `json:"type,omitempty"`
	}
	isfMetadata struct {
		Format   string `json:"format"`
		Producer struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"producer"`
		Windows struct {
			PDB isfPDB `json:"pdb"`
		} `json:"windows"`
	}
	isfPDB struct {
		GUID        string `json:"GUID"`
		Age         uint32 `json:"age"`
		Database    string `json:"database"`
		MachineType uint16 `json:"machine_type"`
	}
)

// isfFormat is the ISF version written; pdbconv writes the same.
const isfFormat = "6.1.0"

// MaxISFBytes bounds the (estimated) size of the emitted document: a
// forged PDB can make many structs share one large field list, which would
// otherwise multiply into an unbounded output. Kernel profiles are 6-7 MiB.
const MaxISFBytes = 128 << 20

// nodeCost estimates the JSON bytes of one entry besides its name.
const nodeCost = 40

// maxISFLevels bounds the nesting of one emitted type description; the
// ISF reader rejects 16 levels.
const maxISFLevels = 15

// Options tune a conversion.
type Options struct {
	// Database is the PDB file name written into the metadata (a PDB
	// does not reliably name itself); "" writes "unknown.pdb".
	Database string
}

// Convert parses a PDB held in memory and returns its ISF JSON document.
func Convert(data []byte, opt Options) ([]byte, error) {
	f, err := Parse(data)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := f.WriteISF(&b, opt); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteISF converts the PDB's types, enums and public symbols into a
// Volatility 3 ISF document and writes it to w as JSON. Symbol addresses
// are RVAs (offsets from the image base). Nothing is written when the
// PDB is malformed.
func (f *File) WriteISF(w io.Writer, opt Options) error {
	doc, err := f.isf(opt)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := json.NewEncoder(bw).Encode(doc); err != nil {
		return fmt.Errorf("write ISF: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write ISF: %w", err)
	}
	return nil
}

func (f *File) isf(opt Options) (*isfDoc, error) {
	info, err := f.Info()
	if err != nil {
		return nil, err
	}
	dbi, err := f.DBI()
	if err != nil {
		return nil, err
	}
	types, err := f.Types()
	if err != nil {
		return nil, err
	}
	doc := &isfDoc{
		BaseTypes: map[string]isfBase{},
		Enums:     map[string]isfEnum{},
		Symbols:   map[string]isfSymbol{},
		UserTypes: map[string]isfUserType{},
	}
	doc.Metadata.Format = isfFormat
	doc.Metadata.Producer.Name = "vmi-exporter"
	doc.Metadata.Producer.Version = "pdb"
	db := opt.Database
	if db == "" {
		db = "unknown.pdb"
	}
	// The DBI age is the one a PE's CodeView record carries; the info
	// stream's may have been bumped by later incremental writes.
	doc.Metadata.Windows.PDB = isfPDB{GUID: info.GUIDString(), Age: dbi.Age, Database: db, MachineType: dbi.Machine}

	c := &converter{t: types, bases: doc.BaseTypes, ptrSize: pointerSize(dbi.Machine), left: MaxISFBytes}
	if err := c.index(); err != nil {
		return nil, err
	}
	if err := c.convertTypes(doc); err != nil {
		return nil, err
	}
	if err := f.symbols(dbi, doc.Symbols, c); err != nil {
		return nil, err
	}
	return doc, nil
}

func pointerSize(machine uint16) uint64 {
	switch machine {
	case 0x014c, 0x01c0, 0x01c4: // i386, ARM, ARMv7
		return 4
	}
	return 8
}

// symbols fills in public and global data symbols as RVAs.
func (f *File) symbols(dbi DBI, out map[string]isfSymbol, c *converter) error {
	if dbi.SymRecordStream == 0xffff {
		return nil
	}
	pubs, err := f.Publics(dbi)
	if err != nil {
		return err
	}
	secStream := dbi.SectionHeaderStream
	var om *omap
	if dbi.OrigSectionHeaderStream >= 0 && dbi.OmapFromSrcStream >= 0 {
		// Symbols refer to the sections before the image was
		// rearranged; OMAP maps their RVAs to the final image.
		secStream = dbi.OrigSectionHeaderStream
		if om, err = f.omap(dbi.OmapFromSrcStream); err != nil {
			return err
		}
	}
	if secStream < 0 {
		return errf("no section headers to turn symbols into RVAs")
	}
	secs, err := f.sections(secStream)
	if err != nil {
		return err
	}
	for _, p := range pubs {
		if p.Segment == 0 || int(p.Segment) > len(secs) || p.Name == "" || len(p.Name) > MaxNameLen {
			continue // absolute or unmapped symbols have no RVA
		}
		rva := secs[p.Segment-1].VirtualAddress + p.Offset
		if om != nil {
			if rva = om.lookup(rva); rva == 0 {
				continue
			}
		}
		addr := uint64(rva)
		if err := c.charge(2 * (nodeCost + len(p.Name))); err != nil {
			return err
		}
		if _, ok := out[p.Name]; !ok {
			out[p.Name] = isfSymbol{Address: addr}
		}
		if s := stripName(p.Name); s != p.Name && s != "" {
			if _, ok := out[s]; !ok {
				out[s] = isfSymbol{Address: addr, LinkageName: p.Name}
			}
		}
	}
	return nil
}

// stripName removes decoration as pdbconv does, so that x86 names
// ("_PsActiveProcessHead", "@KfRaiseIrql@4") and simple C++ names
// ("?Name@@3PEAXEA") are found under their plain name.
func stripName(name string) string {
	if strings.HasPrefix(name, "?") {
		if parts := strings.Split(name, "@@"); len(parts) == 3 {
			return parts[0][1:]
		}
	}
	s := name
	if s != "" && (s[0] == '_' || s[0] == '@' || s[0] == 0x7f) {
		s = s[1:]
	}
	if parts := strings.Split(s, "@"); len(parts) == 2 {
		if _, err := strconv.ParseUint(parts[1], 10, 64); err == nil && parts[0] != "" && parts[0][0] != '?' {
			return parts[0]
		}
		return name
	}
	return s
}

// converter turns type records into ISF entries.
type converter struct {
	t       *Types
	bases   map[string]isfBase
	ptrSize uint64
	// defs maps a forward reference's key (kind class plus unique or
	// plain name) to the first complete definition.
	defs map[string]TypeIndex
	// memo holds the description of each type index once computed:
	// fields share few types, and a forged file cannot make us compute
	// one chain over and over.
	memo map[TypeIndex]described
	// left is what remains of MaxISFBytes.
	left int64
}

// described is a memoized type description with what it adds below the
// point of use: records followed, output levels and estimated JSON bytes.
type described struct {
	t             *isfType
	steps, levels int
	cost          int
}

// visitCost is charged for every field list entry read, used or not, so
// that records sharing a list of skipped members still exhaust the budget.
const visitCost = 8

func (c *converter) visit() error { return c.charge(visitCost) }

func (c *converter) charge(n int) error {
	if c.left -= int64(n); c.left < 0 {
		return errf("ISF document would exceed %d bytes", MaxISFBytes)
	}
	return nil
}

func udtKeys(u *udt) []string {
	cl := string(udtClass(u.kind))
	keys := make([]string, 0, 2)
	if u.unique != "" {
		keys = append(keys, cl+"u:"+u.unique)
	}
	if u.name != "" && !anonymous(u.name) {
		keys = append(keys, cl+"n:"+u.name)
	}
	return keys
}

// index records every complete user-defined type under its names.
func (c *converter) index() error {
	c.defs = map[string]TypeIndex{}
	return c.eachDefinition(func(ti TypeIndex, _ uint16, u *udt) error {
		for _, k := range udtKeys(u) {
			if _, dup := c.defs[k]; !dup {
				c.defs[k] = ti
			}
		}
		return nil
	})
}

// eachDefinition calls f for every complete (not forward) user-defined
// type record, in type-index order.
func (c *converter) eachDefinition(f func(ti TypeIndex, kind uint16, u *udt) error) error {
	for i := range c.t.Len() {
		ti := c.t.Begin + TypeIndex(i)
		kind, body, _ := c.t.Record(ti)
		if !isUDT(kind) {
			continue
		}
		u, err := parseUDT(kind, body)
		if err != nil {
			return fmt.Errorf("type %#x: %w", uint32(ti), err)
		}
		if u.fwd() {
			continue
		}
		if err := f(ti, kind, &u); err != nil {
			return err
		}
	}
	return nil
}

// resolve returns the definition of a forward reference (or the record
// itself when it is complete or no definition exists).
func (c *converter) resolve(ti TypeIndex, u *udt) (TypeIndex, udt, error) {
	if !u.fwd() {
		return ti, *u, nil
	}
	for _, k := range udtKeys(u) {
		if d, ok := c.defs[k]; ok {
			kind, body, err := c.t.Record(d)
			if err != nil {
				return 0, udt{}, err
			}
			du, err := parseUDT(kind, body)
			return d, du, err
		}
	}
	return ti, *u, nil
}

// anonymous reports a compiler-generated name of an unnamed type. Its
// last scope component is the tag ("_KPCR::<unnamed-tag>" from clang),
// and sibling unnamed types share one name, so they are told apart by
// type index instead.
func anonymous(name string) bool {
	if i := strings.LastIndex(name, "::"); i >= 0 {
		name = name[i+2:]
	}
	switch name {
	case "", "<unnamed-tag>", "<anonymous-tag>", "__unnamed", "__anonymous":
		return true
	}
	return strings.HasPrefix(name, "<unnamed-") || strings.HasPrefix(name, "<anonymous-")
}

// displayName is the ISF name of a user-defined type: its own name, or
// one derived from the definition's index when it has none (pdbconv's
// "__unnamed_<index>") or one too long for the ISF reader.
func displayName(ti TypeIndex, u *udt) string {
	switch {
	case anonymous(u.name):
		if strings.HasSuffix(u.name, "<anonymous-tag>") || strings.HasSuffix(u.name, "__anonymous") {
			return fmt.Sprintf("__anonymous_%x", uint32(ti))
		}
		return fmt.Sprintf("__unnamed_%x", uint32(ti))
	case len(u.name) > MaxNameLen:
		return fmt.Sprintf("__longname_%x", uint32(ti))
	}
	return u.name
}

func (c *converter) convertTypes(doc *isfDoc) error {
	c.bases["pointer"] = isfBase{Endian: "little", Kind: "int", Size: c.ptrSize}
	return c.eachDefinition(func(ti TypeIndex, kind uint16, u *udt) error {
		name := displayName(ti, u)
		if err := c.charge(nodeCost + len(name)); err != nil {
			return err
		}
		if kind == lfEnum {
			if _, dup := doc.Enums[name]; dup {
				return nil
			}
			e, err := c.enum(u)
			if err != nil {
				return fmt.Errorf("enum %s: %w", name, err)
			}
			doc.Enums[name] = e
			return nil
		}
		if _, dup := doc.UserTypes[name]; dup {
			return nil // the first definition wins, as for forward references
		}
		st, err := c.userType(u)
		if err != nil {
			return fmt.Errorf("type %s: %w", name, err)
		}
		doc.UserTypes[name] = st
		return nil
	})
}

func (c *converter) enum(u *udt) (isfEnum, error) {
	bd, err := c.describe(u.under, 0, 0)
	if err != nil {
		return isfEnum{}, err
	}
	base := bd.t
	if base.Kind != "base" {
		return isfEnum{}, errf("underlying type is a %s", base.Kind)
	}
	size, err := c.size(u.under, 0)
	if err != nil {
		return isfEnum{}, err
	}
	e := isfEnum{Base: base.Name, Size: size, Constants: map[string]int64{}}
	signed := c.bases[base.Name].Signed
	if u.fields == 0 {
		return e, nil
	}
	err = c.t.members(u.fields, c.visit, func(m member) error {
		if m.kind == lfEnumerate && m.name != "" && len(m.name) <= MaxNameLen {
			v := m.value
			// Compilers may store a negative constant of a signed
			// enum as its unsigned bit pattern (clang: -5 as LF_ULONG
			// 0xfffffffb); read it back in the enum's width.
			if signed && size > 0 && size < 8 && v >= 0 && v < 1<<(8*size) && v&(1<<(8*size-1)) != 0 {
				v -= 1 << (8 * size)
			}
			e.Constants[m.name] = v
			return c.charge(nodeCost + len(m.name))
		}
		return nil
	})
	return e, err
}

func (c *converter) userType(u *udt) (isfUserType, error) {
	st := isfUserType{Kind: "struct", Size: u.size, Fields: map[string]isfField{}}
	if udtClass(u.kind) == 'u' {
		st.Kind = "union"
	}
	if u.fields == 0 {
		return st, nil
	}
	err := c.t.members(u.fields, c.visit, func(m member) error {
		name := m.name
		if m.kind == lfBClass || m.kind == lfBInterface {
			name = "BClass"
		}
		if name == "" || len(name) > MaxNameLen {
			return nil
		}
		if _, dup := st.Fields[name]; dup {
			return nil
		}
		d, err := c.describe(m.typ, 0, 0)
		if err != nil {
			return fmt.Errorf("field %s: %w", name, err)
		}
		st.Fields[name] = isfField{Offset: m.offset, Type: d.t}
		return c.charge(nodeCost + len(name) + d.cost)
	})
	return st, err
}

// primitive is a builtin CodeView type: ISF name, kind, signedness, size.
type primitive struct {
	name   string
	kind   string
	signed bool
	size   uint64
}

// primitives maps the low byte of a simple type index; names follow
// pdbconv so that ISF consumers see the same base types.
var primitives = map[uint32]primitive{
	0x03: {"void", "void", true, 0},
	0x08: {"HRESULT", "int", false, 4},
	0x10: {"char", "char", true, 1},
	0x20: {"unsigned char", "char", false, 1},
	0x30: {"bool8", "bool", false, 1},
	0x31: {"bool16", "bool", false, 2},
	0x32: {"bool32", "bool", false, 4},
	0x33: {"bool64", "bool", false, 8},
	0x68: {"int8", "int", true, 1},
	0x69: {"uint8", "int", false, 1},
	0x70: {"char", "char", true, 1},
	0x71: {"wchar", "int", true, 2},
	0x7a: {"rchar16", "int", true, 2},
	0x7b: {"rchar32", "int", true, 4},
	0x7c: {"char8", "char", false, 1},
	0x11: {"short", "int", true, 2},
	0x21: {"unsigned short", "int", false, 2},
	0x72: {"short", "int", true, 2},
	0x73: {"unsigned short", "int", false, 2},
	0x12: {"long", "int", true, 4},
	0x22: {"unsigned long", "int", false, 4},
	0x74: {"int", "int", true, 4},
	0x75: {"unsigned int", "int", false, 4},
	0x13: {"long long", "int", true, 8},
	0x23: {"unsigned long long", "int", false, 8},
	0x76: {"long long", "int", true, 8},
	0x77: {"unsigned long long", "int", false, 8},
	0x14: {"int128", "int", true, 16},
	0x24: {"uint128", "int", false, 16},
	0x78: {"int128", "int", true, 16},
	0x79: {"uint128", "int", false, 16},
	0x46: {"f16", "float", true, 2},
	0x40: {"f32", "float", true, 4},
	0x45: {"f32pp", "float", true, 4},
	0x44: {"f48", "float", true, 6},
	0x41: {"double", "float", true, 8},
	0x42: {"f80", "float", true, 10},
	0x43: {"f128", "float", true, 16},
}

// simplePointerSize returns the size of a simple type index's pointer
// mode (bits 8-11), 0 for a direct value.
func simplePointerSize(ti TypeIndex) (uint64, error) {
	switch (ti >> 8) & 0xf {
	case 0:
		return 0, nil
	case 1, 2, 3:
		return 2, nil
	case 4, 5:
		return 4, nil
	case 6:
		return 8, nil
	case 7:
		return 16, nil
	}
	return 0, errf("simple type %#x: pointer mode", uint32(ti))
}

func (c *converter) pointer(size uint64, sub *isfType) *isfType {
	p := &isfType{Kind: "pointer", Subtype: sub}
	if size != 0 && size != c.ptrSize {
		// A pointer of another width (POINTER_32 in a 64-bit PDB).
		name := "pointer" + strconv.FormatUint(size*8, 10)
		c.bases[name] = isfBase{Endian: "little", Kind: "int", Size: size}
		p.Base = name
	}
	return p
}

// describe describes type ti as an ISF type reference. steps counts
// records followed (modifiers included) and levels the nesting of the
// output above this point; both are bounded, which also stops reference
// cycles. Descriptions of TPI records are memoized with their own depth,
// so a reuse deeper down is checked against the same bounds.
func (c *converter) describe(ti TypeIndex, steps, levels int) (described, error) {
	if steps >= MaxTypeDepth || levels >= maxISFLevels {
		return described{}, errf("type %#x nested deeper than %d records or %d levels", uint32(ti), MaxTypeDepth, maxISFLevels)
	}
	if ti < 0x1000 {
		t, err := c.simple(ti)
		if err != nil {
			return described{}, err
		}
		d := described{t: t, cost: nodeCost + len(t.Name)}
		if t.Subtype != nil {
			d.levels, d.cost = 1, d.cost+nodeCost+len(t.Subtype.Name)
		}
		return d, nil
	}
	if d, ok := c.memo[ti]; ok {
		if steps+d.steps >= MaxTypeDepth || levels+d.levels >= maxISFLevels {
			return described{}, errf("type %#x nested deeper than %d records or %d levels", uint32(ti), MaxTypeDepth, maxISFLevels)
		}
		return d, nil
	}
	d, err := c.record(ti, steps, levels)
	if err != nil {
		return described{}, err
	}
	if c.memo == nil {
		c.memo = map[TypeIndex]described{}
	}
	c.memo[ti] = d
	return d, nil
}

// simple describes a builtin type index: a base type, or a pointer to one
// (pointer mode in bits 8-11).
func (c *converter) simple(ti TypeIndex) (*isfType, error) {
	if ti>>12 != 0 {
		return nil, errf("simple type %#x", uint32(ti))
	}
	p, ok := primitives[uint32(ti)&0xff]
	if !ok {
		if uint32(ti)&0xff != 0 && uint32(ti)&0xff != 0x07 { // none and "not translated" read as void
			return nil, errf("simple type %#x", uint32(ti))
		}
		p = primitives[0x03]
	}
	c.bases[p.name] = isfBase{Endian: "little", Kind: p.kind, Signed: p.signed, Size: p.size}
	base := &isfType{Kind: "base", Name: p.name}
	ps, err := simplePointerSize(ti)
	if err != nil || ps == 0 {
		return base, err
	}
	return c.pointer(ps, base), nil
}

// wrap builds a description around a child's.
func wrap(t *isfType, child described, steps, levels int) described {
	return described{t: t, steps: child.steps + steps, levels: child.levels + levels, cost: child.cost + nodeCost + len(t.Name)}
}

func (c *converter) record(ti TypeIndex, steps, levels int) (described, error) {
	kind, body, err := c.t.Record(ti)
	if err != nil {
		return described{}, err
	}
	cur := &cursor{b: body}
	switch kind {
	case lfModifier:
		sub := TypeIndex(cur.u32())
		if cur.err != nil {
			return described{}, cur.err
		}
		d, err := c.describe(sub, steps+1, levels)
		d.steps++
		return d, err
	case lfPointer:
		sub, attr := TypeIndex(cur.u32()), cur.u32()
		if cur.err != nil {
			return described{}, cur.err
		}
		d, err := c.describe(sub, steps+1, levels+1)
		if err != nil {
			return described{}, err
		}
		return wrap(c.pointer(pointerRecordSize(attr), d.t), d, 1, 1), nil
	case lfArray:
		elem := TypeIndex(cur.u32())
		cur.u32() // index type
		size := cur.unsigned()
		if cur.err != nil {
			return described{}, cur.err
		}
		d, err := c.describe(elem, steps+1, levels+1)
		if err != nil {
			return described{}, err
		}
		es, err := c.size(elem, steps+1)
		if err != nil {
			return described{}, err
		}
		var n uint64
		if es != 0 {
			n = size / es
		}
		return wrap(&isfType{Kind: "array", Count: &n, Subtype: d.t}, d, 1, 1), nil
	case lfBitfield:
		under := TypeIndex(cur.u32())
		length, pos := cur.u8(), cur.u8()
		if cur.err != nil {
			return described{}, cur.err
		}
		d, err := c.describe(under, steps+1, levels+1)
		if err != nil {
			return described{}, err
		}
		return wrap(&isfType{Kind: "bitfield", BitLength: &length, BitPosition: &pos, Type: d.t}, d, 1, 1), nil
	case lfProcedure, lfMFunction:
		return described{t: &isfType{Kind: "function"}, cost: nodeCost}, nil
	}
	if isUDT(kind) {
		u, err := parseUDT(kind, body)
		if err != nil {
			return described{}, err
		}
		d, du, err := c.resolve(ti, &u)
		if err != nil {
			return described{}, err
		}
		k := "struct"
		switch udtClass(kind) {
		case 'u':
			k = "union"
		case 'e':
			k = "enum"
		}
		name := displayName(d, &du)
		return described{t: &isfType{Kind: k, Name: name}, cost: nodeCost + len(name)}, nil
	}
	// Leaves a data member cannot have (vtable shapes, argument lists)
	// read as void rather than failing the whole conversion.
	c.bases["void"] = isfBase{Endian: "little", Kind: "void", Signed: true}
	return described{t: &isfType{Kind: "base", Name: "void"}, cost: nodeCost + 4}, nil
}

// pointerRecordSize decodes an LF_POINTER's size (bits 13-18), falling
// back to its kind for records that leave it zero.
func pointerRecordSize(attr uint32) uint64 {
	if s := uint64(attr>>13) & 0x3f; s != 0 {
		return s
	}
	switch attr & 0x1f {
	case 0x0a: // CV_PTR_NEAR32
		return 4
	case 0x0c: // CV_PTR_64
		return 8
	}
	return 0
}

// size returns the size in bytes of type ti, resolving forward
// references; 0 when unknown (void, functions, incomplete types).
func (c *converter) size(ti TypeIndex, steps int) (uint64, error) {
	if steps >= MaxTypeDepth {
		return 0, errf("type %#x nested deeper than %d", uint32(ti), MaxTypeDepth)
	}
	if ti < 0x1000 {
		ps, err := simplePointerSize(ti)
		if err != nil || ps != 0 {
			return ps, err
		}
		return primitives[uint32(ti)&0xff].size, nil
	}
	kind, body, err := c.t.Record(ti)
	if err != nil {
		return 0, err
	}
	cur := &cursor{b: body}
	switch kind {
	case lfModifier:
		sub := TypeIndex(cur.u32())
		if cur.err != nil {
			return 0, cur.err
		}
		return c.size(sub, steps+1)
	case lfPointer:
		cur.u32()
		attr := cur.u32()
		if cur.err != nil {
			return 0, cur.err
		}
		if s := pointerRecordSize(attr); s != 0 {
			return s, nil
		}
		return c.ptrSize, nil
	case lfArray:
		cur.u32()
		cur.u32()
		size := cur.unsigned()
		return size, cur.err
	case lfBitfield:
		under := TypeIndex(cur.u32())
		if cur.err != nil {
			return 0, cur.err
		}
		return c.size(under, steps+1)
	case lfEnum:
		u, err := parseUDT(kind, body)
		if err != nil {
			return 0, err
		}
		_, du, err := c.resolve(ti, &u)
		if err != nil {
			return 0, err
		}
		return c.size(du.under, steps+1)
	}
	if isUDT(kind) {
		u, err := parseUDT(kind, body)
		if err != nil {
			return 0, err
		}
		_, du, err := c.resolve(ti, &u)
		if err != nil || du.fwd() {
			return 0, err
		}
		return du.size, nil
	}
	return 0, nil
}
