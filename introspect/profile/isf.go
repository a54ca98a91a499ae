package profile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ulikunitz/xz"

	"github.com/vmi-exporter/vmi-exporter/internal/xzcap"
)

// ISF limits. An ISF file is input we did not produce (a cache on disk, a
// download); these bound what a forged or corrupt one can make us allocate.
const (
	// MaxISFBytes bounds the decompressed size of an ISF document. Real
	// Windows kernel profiles are 6-7 MiB, Linux ones up to ~100 MiB.
	MaxISFBytes = 512 << 20
	// MaxISFEntries bounds the number of symbols, types, base types and
	// enums, each.
	MaxISFEntries = 1 << 21
	// MaxISFFields bounds the fields of one struct.
	MaxISFFields = 1 << 14
	// MaxISFTypeDepth bounds the nesting of a field's type description
	// (pointer to array of pointer to ...).
	MaxISFTypeDepth = 16
	// MaxISFNameLen bounds symbol, type and field names.
	MaxISFNameLen = 4096
)

// ErrISF is wrapped by every error about a malformed ISF document.
var ErrISF = errors.New("malformed ISF")

// ISF is a Volatility 3 Intermediate Symbol Format document: a profile plus
// what the profile contract does not carry (base types, enums, metadata).
type ISF struct {
	Profile   *Profile
	Metadata  Metadata
	BaseTypes map[string]BaseType
	Enums     map[string]Enum
}

// Metadata is the ISF "metadata" object.
type Metadata struct {
	Format  string
	Windows *PDBInfo // set for Windows profiles
	Linux   bool     // set for Linux profiles
}

// PDBInfo identifies the PDB a Windows profile was built from. A symbol
// server and the profile store name it <Database>/<GUID><Age>.
type PDBInfo struct {
	Database    string // e.g. "ntkrnlmp.pdb"
	GUID        string // 32 upper-case hex digits
	Age         uint32
	MachineType uint16
}

// Key returns GUID and age as a symbol server spells them: GUID in upper
// case immediately followed by the age in upper-case hex.
func (p PDBInfo) Key() string { return fmt.Sprintf("%s%X", strings.ToUpper(p.GUID), p.Age) }

// BaseType is an ISF base type (int, char, pointer, ...).
type BaseType struct {
	Kind   string // "int", "char", "bool", "float", "void"
	Size   uint64
	Signed bool
}

// Enum is an ISF enumeration.
type Enum struct {
	Base      string
	Size      uint64
	Constants map[string]int64
}

// OpenISF reads an ISF file, xz-compressed when its name ends in ".xz" or
// when its content starts with the xz magic.
func OpenISF(path string) (*ISF, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open ISF: %w", err)
	}
	defer f.Close()
	isf, err := ReadISF(f)
	if err != nil {
		return nil, fmt.Errorf("ISF %s: %w", path, err)
	}
	return isf, nil
}

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// ReadISF decodes an ISF document, plain JSON or xz-compressed (detected by
// its magic), streaming: symbols and types are converted as they are read,
// so memory stays proportional to the profile rather than to the JSON text.
func ReadISF(r io.Reader) (*ISF, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(len(xzMagic))
	var src io.Reader = br
	if bytes.Equal(head, xzMagic) {
		// The decoder allocates whatever dictionary a block asks for (a
		// 60-byte forgery: 1.5 GiB), and the sizes are only known from
		// the index at the end: read the compressed file, check, decode.
		comp, err := io.ReadAll(io.LimitReader(br, MaxISFBytes+1))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		if len(comp) > MaxISFBytes {
			return nil, fmt.Errorf("compressed document exceeds %d bytes: %w", MaxISFBytes, ErrISF)
		}
		if err := xzcap.Check(comp, xzcap.MaxDict); err != nil {
			return nil, fmt.Errorf("xz: %w: %w", err, ErrISF)
		}
		xr, err := xz.NewReader(bytes.NewReader(comp))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		src = xr
	}
	lr := &io.LimitedReader{R: src, N: MaxISFBytes + 1}
	isf, err := decodeISF(json.NewDecoder(lr))
	if lr.N <= 0 {
		return nil, fmt.Errorf("document exceeds %d bytes: %w", MaxISFBytes, ErrISF)
	}
	return isf, err
}

// ParseISF decodes an ISF document held in memory.
func ParseISF(b []byte) (*ISF, error) { return ReadISF(bytes.NewReader(b)) }

func isfErr(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrISF)
}

// Raw JSON shapes of ISF entries.
type (
	isfSymbol struct {
		Address *uint64 `json:"address"`
	}
	isfType struct {
		Kind        string          `json:"kind"`
		Name        string          `json:"name"`
		Base        string          `json:"base"` // a pointer's width, as a base type name
		Count       uint64          `json:"count"`
		Subtype     json.RawMessage `json:"subtype"`
		Type        json.RawMessage `json:"type"`
		BitPosition uint8           `json:"bit_position"`
		BitLength   uint8           `json:"bit_length"`
	}
	isfField struct {
		Offset *uint64         `json:"offset"`
		Type   json.RawMessage `json:"type"`
	}
	isfUserType struct {
		Kind   string              `json:"kind"`
		Size   uint64              `json:"size"`
		Fields map[string]isfField `json:"fields"`
	}
	isfBaseType struct {
		Kind   string `json:"kind"`
		Size   uint64 `json:"size"`
		Signed bool   `json:"signed"`
	}
	isfEnum struct {
		Base      string           `json:"base"`
		Size      uint64           `json:"size"`
		Constants map[string]int64 `json:"constants"`
	}
	isfMetadata struct {
		Format  string `json:"format"`
		Windows *struct {
			PDB *struct {
				GUID        string `json:"GUID"`
				Age         uint32 `json:"age"`
				Database    string `json:"database"`
				MachineType uint16 `json:"machine_type"`
			} `json:"pdb"`
		} `json:"windows"`
		Linux json.RawMessage `json:"linux"`
	}
)

func decodeISF(dec *json.Decoder) (*ISF, error) {
	isf := &ISF{
		Profile:   New(""),
		BaseTypes: map[string]BaseType{},
		Enums:     map[string]Enum{},
	}
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	for dec.More() {
		key, err := readKey(dec)
		if err != nil {
			return nil, err
		}
		switch key {
		case "metadata":
			var m isfMetadata
			if err := dec.Decode(&m); err != nil {
				return nil, isfErr("metadata: %v", err)
			}
			isf.Metadata.Format = m.Format
			if m.Windows != nil && m.Windows.PDB != nil {
				p := m.Windows.PDB
				isf.Metadata.Windows = &PDBInfo{Database: p.Database, GUID: strings.ToUpper(p.GUID), Age: p.Age, MachineType: p.MachineType}
			}
			isf.Metadata.Linux = len(m.Linux) > 0 && string(m.Linux) != "null"
		case "symbols":
			err = eachEntry(dec, "symbols", func(name string) error {
				var s isfSymbol
				if err := dec.Decode(&s); err != nil {
					return isfErr("symbol %q: %v", name, err)
				}
				if s.Address != nil {
					isf.Profile.Symbols[name] = *s.Address
				}
				return nil
			})
		case "user_types":
			err = eachEntry(dec, "user_types", func(name string) error {
				var u isfUserType
				if err := dec.Decode(&u); err != nil {
					return isfErr("user type %q: %v", name, err)
				}
				if len(u.Fields) > MaxISFFields {
					return isfErr("user type %q has %d fields", name, len(u.Fields))
				}
				// Converted at once so that only the profile stays in
				// memory; sizes of referenced types are filled in at the end.
				st, err := isf.convertUserType(name, &u)
				if err != nil {
					return err
				}
				isf.Profile.Types[name] = st
				return nil
			})
		case "base_types":
			err = eachEntry(dec, "base_types", func(name string) error {
				var b isfBaseType
				if err := dec.Decode(&b); err != nil {
					return isfErr("base type %q: %v", name, err)
				}
				isf.BaseTypes[name] = BaseType(b)
				return nil
			})
		case "enums":
			err = eachEntry(dec, "enums", func(name string) error {
				var e isfEnum
				if err := dec.Decode(&e); err != nil {
					return isfErr("enum %q: %v", name, err)
				}
				if len(e.Constants) > MaxISFFields {
					return isfErr("enum %q has %d constants", name, len(e.Constants))
				}
				isf.Enums[name] = Enum(e)
				return nil
			})
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	for _, st := range isf.Profile.Types {
		for name, f := range st.Fields {
			if err := isf.resolveSize(&f.Type, 0); err != nil {
				return nil, fmt.Errorf("field %s.%s: %w", st.Name, name, err)
			}
			st.Fields[name] = f
		}
	}
	if w := isf.Metadata.Windows; w != nil {
		isf.Profile.Name = w.Database + "/" + w.Key()
	}
	return isf, nil
}

func (isf *ISF) convertUserType(name string, u *isfUserType) (*Struct, error) {
	s := &Struct{Name: name, Size: u.Size, Union: u.Kind == "union", Fields: make(map[string]Field, len(u.Fields))}
	if u.Kind != "struct" && u.Kind != "union" && u.Kind != "class" {
		return nil, isfErr("user type %q has kind %q", name, u.Kind)
	}
	for fname, f := range u.Fields {
		if len(fname) > MaxISFNameLen {
			return nil, isfErr("field name of %d bytes in %q", len(fname), name)
		}
		if f.Offset == nil {
			return nil, isfErr("field %s.%s has no offset", name, fname)
		}
		t, err := isf.convertType(f.Type, 0)
		if err != nil {
			return nil, fmt.Errorf("field %s.%s: %w", name, fname, err)
		}
		s.Fields[fname] = Field{Name: fname, Offset: *f.Offset, Type: t}
	}
	return s, nil
}

// resolveSize fills in the sizes of a converted type from the base types,
// enums and user types of the whole document, and checks bitfields and
// arrays against them.
func (isf *ISF) resolveSize(t *Type, depth int) error {
	if depth >= MaxISFTypeDepth {
		return isfErr("type nested deeper than %d", MaxISFTypeDepth)
	}
	if t.Elem != nil {
		if err := isf.resolveSize(t.Elem, depth+1); err != nil {
			return err
		}
	}
	switch t.Kind {
	case KindBase:
		t.Size = isf.BaseTypes[t.Name].Size
	case KindStruct:
		if st, ok := isf.Profile.Types[t.Name]; ok {
			t.Size = st.Size
		}
	case KindEnum:
		t.Size = isf.Enums[t.Name].Size
	case KindArray:
		if e := t.Elem.Size; e != 0 && t.Count > (1<<40)/e {
			return isfErr("array of %d elements of %d bytes", t.Count, e)
		}
		t.Size = t.Elem.Size * t.Count
	case KindBitfield:
		t.Size = t.Elem.Size
		if t.Size != 0 && int(t.BitPos)+int(t.BitLen) > int(t.Size)*8 {
			return isfErr("bitfield %d:%d exceeds its %d-byte unit", t.BitPos, t.BitLen, t.Size)
		}
	}
	return nil
}

// convertType turns an ISF type description into a Type. Sizes that depend
// on other entries are filled in later by resolveSize.
func (isf *ISF) convertType(raw json.RawMessage, depth int) (Type, error) {
	if depth >= MaxISFTypeDepth {
		return Type{}, isfErr("type nested deeper than %d", MaxISFTypeDepth)
	}
	if len(raw) == 0 {
		return Type{}, isfErr("missing type")
	}
	var t isfType
	if err := json.Unmarshal(raw, &t); err != nil {
		return Type{}, isfErr("type: %v", err)
	}
	if len(t.Name) > MaxISFNameLen {
		return Type{}, isfErr("type name of %d bytes", len(t.Name))
	}
	out := Type{Name: t.Name}
	switch t.Kind {
	case "base":
		out.Kind = KindBase
	case "pointer":
		out.Kind = KindPointer
		// A pointer of another width than the image's (POINTER_32 in a
		// 64-bit kernel) names its own base type, e.g. "pointer32".
		out.Size = 8
		base := t.Base
		if base == "" {
			base = "pointer"
		}
		if b, ok := isf.BaseTypes[base]; ok && b.Size != 0 {
			out.Size = b.Size
		} else if b, ok := isf.BaseTypes["pointer"]; ok && b.Size != 0 {
			out.Size = b.Size
		}
		if len(t.Subtype) > 0 {
			e, err := isf.convertType(t.Subtype, depth+1)
			if err != nil {
				return Type{}, err
			}
			out.Elem = &e
		}
	case "struct", "union", "class":
		out.Kind = KindStruct
	case "enum":
		out.Kind = KindEnum
	case "array":
		out.Kind = KindArray
		out.Count = t.Count
		e, err := isf.convertType(t.Subtype, depth+1)
		if err != nil {
			return Type{}, err
		}
		out.Elem = &e
	case "bitfield":
		out.Kind = KindBitfield
		e, err := isf.convertType(t.Type, depth+1)
		if err != nil {
			return Type{}, err
		}
		out.Elem = &e
		out.BitPos, out.BitLen = t.BitPosition, t.BitLength
	case "function":
		out.Kind = KindFunction
	default:
		return Type{}, isfErr("type kind %q", t.Kind)
	}
	return out, nil
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return isfErr("expected %q: %v", d, err)
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return isfErr("expected %q, got %v", d, tok)
	}
	return nil
}

func readKey(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", isfErr("object key: %v", err)
	}
	k, ok := tok.(string)
	if !ok {
		return "", isfErr("object key is %T", tok)
	}
	if len(k) > MaxISFNameLen {
		return "", isfErr("name of %d bytes", len(k))
	}
	return k, nil
}

// eachEntry walks the members of a JSON object, calling f with each key
// while the decoder is positioned on the value, which f must consume.
func eachEntry(dec *json.Decoder, what string, f func(name string) error) error {
	if err := expectDelim(dec, '{'); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n := 0
	for dec.More() {
		if n++; n > MaxISFEntries {
			return isfErr("%s has more than %d entries", what, MaxISFEntries)
		}
		name, err := readKey(dec)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := f(name); err != nil {
			return err
		}
	}
	return expectDelim(dec, '}')
}
