package profile

import (
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// Bounds on BTF conversion, against corrupt or hostile type graphs.
const (
	// maxAnonDepth bounds the nesting of anonymous struct/union members
	// that are flattened into their parent.
	maxAnonDepth = 16
	// maxElemDepth bounds pointer/array element chains in a field type.
	maxElemDepth = 8
)

// BTFTypes converts the named structs and unions of a BTF spec (e.g. the
// kernel's .BTF section) into profile layouts.
//
// Members of anonymous structs and unions are flattened into their parent
// at their absolute offsets, as C code names them (task_struct's fields in
// anonymous unions, say). Members of a named member whose type is an
// anonymous struct or union are added as "member.field". When the BTF has
// several types of one name (it is deduplicated, so these are rare), the
// first with members wins.
func BTFTypes(spec *btf.Spec) (map[string]*Struct, error) {
	c := btfConverter{elems: map[elemKey]*Type{}}
	types := map[string]*Struct{}
	for typ, err := range spec.All() {
		if err != nil {
			return nil, fmt.Errorf("btf: %w", err)
		}
		var (
			name    string
			size    uint32
			members []btf.Member
			union   bool
		)
		switch t := typ.(type) {
		case *btf.Struct:
			name, size, members = t.Name, t.Size, t.Members
		case *btf.Union:
			name, size, members, union = t.Name, t.Size, t.Members, true
		default:
			continue
		}
		if name == "" {
			continue
		}
		if old, ok := types[name]; ok && len(old.Fields) > 0 {
			continue
		}
		s := &Struct{Name: name, Size: uint64(size), Union: union, Fields: make(map[string]Field, len(members))}
		c.members(s, "", 0, members, 0)
		types[name] = s
	}
	return types, nil
}

// btfConverter memoises element types, which many fields share.
type btfConverter struct {
	elems map[elemKey]*Type
}

type elemKey struct {
	t     btf.Type
	depth int
}

// members adds members to s, prefixed by prefix, at base bits.
func (c *btfConverter) members(s *Struct, prefix string, base btf.Bits, members []btf.Member, depth int) {
	if depth > maxAnonDepth {
		return
	}
	for _, m := range members {
		off := base + m.Offset
		if m.Name == "" {
			// Anonymous struct or union member: its fields belong to
			// the parent.
			if inner := anonMembers(m.Type); inner != nil {
				c.members(s, prefix, off, inner, depth+1)
			}
			continue
		}
		name := prefix + m.Name
		if _, dup := s.Fields[name]; !dup {
			s.Fields[name] = c.field(name, off, m)
		}
		if inner := anonMembers(m.Type); inner != nil {
			c.members(s, name+".", off, inner, depth+1)
		}
	}
}

// anonMembers returns the members of an anonymous struct or union type
// (behind qualifiers and typedefs), nil for anything else.
func anonMembers(t btf.Type) []btf.Member {
	switch u := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		if u.Name == "" {
			return u.Members
		}
	case *btf.Union:
		if u.Name == "" {
			return u.Members
		}
	}
	return nil
}

func (c *btfConverter) field(name string, off btf.Bits, m btf.Member) Field {
	if m.BitfieldSize == 0 {
		return Field{Name: name, Offset: uint64(off / 8), Type: c.convert(m.Type, maxElemDepth)}
	}
	// A bitfield: locate it in a storage unit of its declared type's
	// size, aligned to that size, unless it straddles one (packed
	// structs); then in the bytes from its first one.
	storage := c.convert(m.Type, maxElemDepth)
	unit := btf.Bits(storage.Size * 8)
	var start btf.Bits
	if unit > 0 {
		start = off / unit * unit
	}
	if unit == 0 || off-start+m.BitfieldSize > unit || off-start > 255 {
		start = off / 8 * 8
	}
	elem := storage
	return Field{Name: name, Offset: uint64(start / 8), Type: Type{
		Kind:   KindBitfield,
		Size:   storage.Size,
		Elem:   &elem,
		BitPos: uint8(off - start),
		BitLen: uint8(min(m.BitfieldSize, 255)),
	}}
}

// convert describes a BTF type down to depth levels of pointer and array
// elements. Structs are referred to by name; their fields are in Types.
func (c *btfConverter) convert(t btf.Type, depth int) Type {
	t = btf.UnderlyingType(t)
	size := 0
	if sz, err := btf.Sizeof(t); err == nil {
		size = sz
	}
	switch u := t.(type) {
	case *btf.Int:
		return Type{Kind: KindBase, Name: u.Name, Size: uint64(u.Size)}
	case *btf.Float:
		return Type{Kind: KindBase, Name: u.Name, Size: uint64(u.Size)}
	case *btf.Void:
		return Type{Kind: KindBase, Name: "void"}
	case *btf.Pointer:
		return Type{Kind: KindPointer, Size: 8, Elem: c.elem(u.Target, depth-1)}
	case *btf.Array:
		return Type{Kind: KindArray, Size: uint64(size), Count: uint64(u.Nelems), Elem: c.elem(u.Type, depth-1)}
	case *btf.Struct:
		return Type{Kind: KindStruct, Name: u.Name, Size: uint64(u.Size)}
	case *btf.Union:
		return Type{Kind: KindStruct, Name: u.Name, Size: uint64(u.Size)}
	case *btf.Fwd:
		return Type{Kind: KindStruct, Name: u.Name}
	case *btf.Enum:
		return Type{Kind: KindEnum, Name: u.Name, Size: uint64(u.Size)}
	case *btf.FuncProto, *btf.Func:
		return Type{Kind: KindFunction}
	}
	return Type{Kind: KindUnknown, Size: uint64(size)}
}

func (c *btfConverter) elem(t btf.Type, depth int) *Type {
	if depth <= 0 {
		return &Type{Kind: KindUnknown}
	}
	k := elemKey{t, depth}
	if e, ok := c.elems[k]; ok {
		return e
	}
	e := c.convert(t, depth)
	c.elems[k] = &e
	return &e
}
