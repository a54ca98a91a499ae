// Package profile describes a guest kernel build: the addresses of its
// symbols and the layout of its structures. OS layers take offsets from a
// Profile instead of hard-coding them, so one OS layer serves many builds.
//
// Profiles come from Volatility 3 ISF files (Windows and Linux), from a Linux
// kernel image's own BTF and kallsyms tables, or from a System.map; sibling
// files of this package read each source.
package profile

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by lookups of a symbol, type or field the profile
// does not have.
var ErrNotFound = errors.New("not in profile")

// Profile is a kernel build's symbols and types.
type Profile struct {
	// Name identifies the build: a PDB name with GUID and age for Windows,
	// the kernel banner for Linux.
	Name string
	// Symbols maps a symbol name to its address as the source gives it:
	// an offset from the image base for Windows ISF files, a link-time
	// virtual address (before KASLR) for Linux sources.
	Symbols map[string]uint64
	// Types maps a struct or union name to its layout.
	Types map[string]*Struct
}

// Struct is the layout of a struct or union.
type Struct struct {
	Name   string
	Size   uint64
	Union  bool
	Fields map[string]Field
}

// Kind is the kind of a field's type.
type Kind uint8

// Kinds.
const (
	KindUnknown Kind = iota
	KindBase         // integer, char, bool
	KindPointer
	KindStruct // struct or union, named by Type.Name
	KindArray
	KindEnum
	KindBitfield
	KindFunction
)

// Type describes a field's type, as deep as introspection needs.
type Type struct {
	Kind Kind
	Name string // base type, struct or enum name; "" for anonymous
	Size uint64 // in bytes, 0 when unknown
	// Elem is the pointee of a pointer, or the element of an array.
	Elem *Type
	// Count is the number of elements of an array.
	Count uint64
	// BitPos and BitLen locate a bitfield inside its storage unit, whose
	// type is Elem.
	BitPos, BitLen uint8
}

// Field is a member of a struct.
type Field struct {
	Name   string
	Offset uint64
	Type   Type
}

// New returns an empty profile.
func New(name string) *Profile {
	return &Profile{Name: name, Symbols: map[string]uint64{}, Types: map[string]*Struct{}}
}

// Symbol returns the address of a symbol.
func (p *Profile) Symbol(name string) (uint64, error) {
	a, ok := p.Symbols[name]
	if !ok {
		return 0, fmt.Errorf("symbol %s: %w", name, ErrNotFound)
	}
	return a, nil
}

// Struct returns the layout of a named struct or union.
func (p *Profile) Struct(name string) (*Struct, error) {
	s, ok := p.Types[name]
	if !ok {
		return nil, fmt.Errorf("type %s: %w", name, ErrNotFound)
	}
	return s, nil
}

// Field returns a member of a named struct.
func (p *Profile) Field(structName, field string) (Field, error) {
	s, err := p.Struct(structName)
	if err != nil {
		return Field{}, err
	}
	f, ok := s.Fields[field]
	if !ok {
		return Field{}, fmt.Errorf("field %s.%s: %w", structName, field, ErrNotFound)
	}
	return f, nil
}

// Offset returns the offset of a member of a named struct.
func (p *Profile) Offset(structName, field string) (uint64, error) {
	f, err := p.Field(structName, field)
	return f.Offset, err
}

// Size returns the size of a named struct.
func (p *Profile) Size(structName string) (uint64, error) {
	s, err := p.Struct(structName)
	if err != nil {
		return 0, err
	}
	return s.Size, nil
}
